// Collectives for data-parallel training over libtorch's own distributed engine (c10d): a TCPStore for
// rendezvous, ProcessGroupGloo on CPU tensors, ProcessGroupNCCL on CUDA tensors where libtorch has CUDA.
// One process group per process (the default group of torch.distributed); every call blocks the JS
// thread until the collective finishes or its timeout passes, which is what a training step wants.
//
// Compiled in when the build found the headers (binding.gyp defines M3_DIST_GLOO / M3_DIST_NCCL, each on
// its own: a pip torch may ship NCCL's side without Gloo's headers); without either, `distInfo()` says so
// and every other call throws one line.
//
// Liveness: beside the group, each rank runs a heartbeat thread on its own store connection that bumps
// `hb/<rank>` twice a second. When a collective fails, `lostRanks()` samples the counters twice and names
// the ranks whose counter stood still (or rank 0 when the store it hosts is gone), so the error can say
// which rank was lost instead of which socket closed.

#include "handles.h"

#include <torch/version.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#if defined(M3_DIST_GLOO) || defined(M3_DIST_NCCL)
#define M3_DIST 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef M3_DIST_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef M3_DIST_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace m3 {
namespace {

#ifdef M3_DIST
// libtorch 2.x split ProcessGroup into a front end and per-device Backends; the collectives we call have
// the same signatures on both bases.
#if TORCH_VERSION_MAJOR >= 2
using GroupBase = ::c10d::Backend;
#else
using GroupBase = ::c10d::ProcessGroup;
#endif

using std::chrono::milliseconds;

struct Dist {
  c10::intrusive_ptr<::c10d::Store> store;
  c10::intrusive_ptr<GroupBase> group;
  int rank = 0;
  int world = 1;
  milliseconds timeout{60000};
  // Shared with the heartbeat thread, which may outlive this object at process exit (it is detached then).
  std::shared_ptr<std::atomic<bool>> stop = std::make_shared<std::atomic<bool>>(false);
  std::thread heartbeat;
  ~Dist() {
    *stop = true;
    if (heartbeat.joinable()) heartbeat.detach();
  }
};
std::unique_ptr<Dist> g_dist;

Dist& Active(Napi::Env env) {
  if (!g_dist) throw Napi::Error::New(env, "no process group (distInit was not called)");
  return *g_dist;
}

c10::intrusive_ptr<::c10d::Store> ConnectStore(const std::string& host, int port, bool server, milliseconds timeout, const std::string& prefix) {
  ::c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = server;
  o.waitWorkers = false;  // joining is counted below, so a world that never fills gets its own message
  o.timeout = timeout;
  c10::intrusive_ptr<::c10d::Store> s = c10::make_intrusive<::c10d::TCPStore>(host, o);
  if (!prefix.empty()) s = c10::make_intrusive<::c10d::PrefixStore>(prefix, s);
  return s;
}

std::string JsString(const Napi::Object& o, const char* key, const std::string& fallback = "") {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
}

int JsInt(const Napi::Object& o, const char* key) {
  return o.Get(key).As<Napi::Number>().Int32Value();
}

// distInit({ masterAddr, masterPort, rank, worldSize, timeoutMs, backend: 'gloo'|'nccl', server, prefix }):
// connects (rank 0 hosts the store when `server`), waits until all ranks joined, builds the group.
Napi::Value DistInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_dist) throw Napi::Error::New(env, "a process group exists already");
  Napi::Object o = info[0].As<Napi::Object>();
  auto d = std::make_unique<Dist>();
  const std::string host = JsString(o, "masterAddr");
  const int port = JsInt(o, "masterPort");
  const std::string prefix = JsString(o, "prefix");
  const std::string backend = JsString(o, "backend", "gloo");
  d->rank = JsInt(o, "rank");
  d->world = JsInt(o, "worldSize");
  d->timeout = milliseconds(static_cast<int64_t>(o.Get("timeoutMs").As<Napi::Number>().DoubleValue()));
  const bool server = o.Get("server").ToBoolean().Value();
  try {
    d->store = ConnectStore(host, port, server, d->timeout, prefix);
    // Join: every rank adds one, then waits (bounded) for the count to reach the world size.
    d->store->add("joined", 1);
    const auto deadline = std::chrono::steady_clock::now() + d->timeout;
    int64_t joined = 0;
    while ((joined = d->store->add("joined", 0)) < d->world) {
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("world did not fill: " + std::to_string(joined) + " of " + std::to_string(d->world) +
                                 " ranks joined within " + std::to_string(d->timeout.count() / 1000) + " s");
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    auto groupStore = c10::make_intrusive<::c10d::PrefixStore>("pg", d->store);
    if (backend == "nccl") {
#ifdef M3_DIST_NCCL
      auto opts = ::c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = d->timeout;
      d->group = c10::make_intrusive<::c10d::ProcessGroupNCCL>(groupStore, d->rank, d->world, opts);
#else
      throw std::runtime_error("this build has no NCCL (libtorch without CUDA)");
#endif
    } else {
#ifdef M3_DIST_GLOO
      auto opts = ::c10d::ProcessGroupGloo::Options::create(d->timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");  // as torch.distributed reads it
      opts->devices.push_back(ifname && *ifname ? ::c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                                : ::c10d::ProcessGroupGloo::createDefaultDevice());
      opts->threads = 2;
      d->group = c10::make_intrusive<::c10d::ProcessGroupGloo>(groupStore, d->rank, d->world, opts);
#else
      throw std::runtime_error("this build has no Gloo (CPU collectives; install libgloo-dev, then npm run build:native)");
#endif
    }
    // The heartbeat has its own connection: a store client is not shared between threads.
    auto hbStore = ConnectStore(host, port, false, d->timeout, prefix);
    const std::string key = "hb/" + std::to_string(d->rank);
    hbStore->add(key, 1);
    d->heartbeat = std::thread([stop = d->stop, hbStore, key]() {
      while (!stop->load()) {
        try {
          hbStore->add(key, 1);
        } catch (...) {
          return;  // the store is gone; the next collective reports it
        }
        for (int i = 0; i < 10 && !stop->load(); ++i) std::this_thread::sleep_for(milliseconds(50));
      }
    });
  } catch (...) {
    Rethrow(env);
  }
  g_dist = std::move(d);
  return env.Undefined();
}

void Destroy() {
  if (!g_dist) return;
  *g_dist->stop = true;
  if (g_dist->heartbeat.joinable()) g_dist->heartbeat.join();
  g_dist->group.reset();
  g_dist->store.reset();
  g_dist.reset();
}

Napi::Value DistDestroy(const Napi::CallbackInfo& info) {
  try {
    Destroy();
  } catch (...) {
    Rethrow(info.Env());
  }
  return info.Env().Undefined();
}

milliseconds TimeoutArg(const Napi::CallbackInfo& info, size_t i, const Dist& d) {
  if (info.Length() > i && info[i].IsNumber()) return milliseconds(static_cast<int64_t>(info[i].As<Napi::Number>().DoubleValue()));
  return d.timeout;
}

void Wait(const c10::intrusive_ptr<::c10d::Work>& work, milliseconds timeout) {
  work->wait(timeout);
}

// allReduce(handle, timeoutMs?, inPlace?) -> handle of the elementwise sum over ranks. The input is
// cloned first unless `inPlace` and nothing else shares its memory (a temporary such as a gradient
// bucket): then it is reduced where it lies and the result aliases it.
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dist& d = Active(env);
  const milliseconds timeout = TimeoutArg(info, 1, d);
  const bool inPlace = info.Length() > 2 && info[2].ToBoolean().Value();
  try {
    const at::Tensor& x = Lookup(env, info[0]);
    // the handle table holds one reference; `x` here is a const reference to it
    const bool alone = inPlace && x.is_contiguous() && x.use_count() == 1 && x.storage().use_count() == 1;
    if (!alone) CountAten();
    std::vector<at::Tensor> t{alone ? x : x.clone(at::MemoryFormat::Contiguous)};
    ::c10d::AllreduceOptions opts;
    opts.timeout = timeout;
    Wait(d.group->allreduce(t, opts), timeout);
    return Napi::Number::New(env, Store(std::move(t[0])));
  } catch (...) {
    Rethrow(env);
  }
}

std::vector<at::Tensor> GatherEqual(Dist& d, const at::Tensor& t, milliseconds timeout) {
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < d.world; ++r) out[0].push_back(at::empty_like(t));
  CountAten(d.world);
  std::vector<at::Tensor> in{t};
  ::c10d::AllgatherOptions opts;
  opts.timeout = timeout;
  Wait(d.group->allgather(out, in, opts), timeout);
  return out[0];
}

// allGather(handle, timeoutMs?) -> [handle, sizes]: every rank's tensor concatenated along dim 0 in rank
// order; first dimensions may differ between ranks (the others must match), `sizes` lists them.
Napi::Value AllGather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dist& d = Active(env);
  const milliseconds timeout = TimeoutArg(info, 1, d);
  try {
    const at::Tensor& x = Lookup(env, info[0]);
    if (!x.is_contiguous()) CountAten();
    at::Tensor t = x.contiguous();
    TORCH_CHECK(t.dim() >= 1, "allGather needs a tensor with at least one dimension");
    CountAten();  // full
    auto rows = GatherEqual(d, at::full({1}, t.size(0), t.options().dtype(at::kLong)), timeout);
    std::vector<int64_t> sizes;
    int64_t most = 0;
    for (auto& r : rows) {
      if (!r.device().is_cpu()) CountAten();
      sizes.push_back(r.cpu().item<int64_t>());
      CountAten();  // item
      most = std::max(most, sizes.back());
    }
    at::Tensor padded = t;
    if (t.size(0) < most) {
      std::vector<int64_t> shape = t.sizes().vec();
      shape[0] = most - t.size(0);
      padded = at::cat({t, at::zeros(shape, t.options())}, 0);
      CountAten(2);
    }
    auto parts = GatherEqual(d, padded, timeout);
    for (size_t r = 0; r < parts.size(); ++r) parts[r] = parts[r].narrow(0, 0, sizes[r]);
    Napi::Array result = Napi::Array::New(env, 2);
    CountAten(1 + static_cast<int64_t>(parts.size()));  // the narrows and the cat
    result.Set(0u, Napi::Number::New(env, Store(at::cat(parts, 0))));
    Napi::Array js = Napi::Array::New(env, sizes.size());
    for (size_t r = 0; r < sizes.size(); ++r) js.Set(static_cast<uint32_t>(r), Napi::Number::New(env, static_cast<double>(sizes[r])));
    result.Set(1u, js);
    return result;
  } catch (...) {
    Rethrow(env);
  }
}

// broadcast(handle, root, timeoutMs?) -> handle holding root's values (every rank passes a tensor of the
// same shape and dtype).
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dist& d = Active(env);
  const int root = info[1].As<Napi::Number>().Int32Value();
  const milliseconds timeout = TimeoutArg(info, 2, d);
  try {
    std::vector<at::Tensor> t{Lookup(env, info[0]).clone(at::MemoryFormat::Contiguous)};
    CountAten();
    ::c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = timeout;
    Wait(d.group->broadcast(t, opts), timeout);
    return Napi::Number::New(env, Store(std::move(t[0])));
  } catch (...) {
    Rethrow(env);
  }
}

// barrier(timeoutMs?)
Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dist& d = Active(env);
  const milliseconds timeout = TimeoutArg(info, 0, d);
  try {
    ::c10d::BarrierOptions opts;
    opts.timeout = timeout;
    Wait(d.group->barrier(opts), timeout);
  } catch (...) {
    Rethrow(env);
  }
  return env.Undefined();
}

// storeSet(key, value) / storeGet(key) -> string (waits up to the group's timeout for the key).
Napi::Value StoreSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dist& d = Active(env);
  const std::string value = info[1].As<Napi::String>().Utf8Value();
  try {
    d.store->set("kv/" + info[0].As<Napi::String>().Utf8Value(), std::vector<uint8_t>(value.begin(), value.end()));
  } catch (...) {
    Rethrow(env);
  }
  return env.Undefined();
}

Napi::Value StoreGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dist& d = Active(env);
  try {
    const auto v = d.store->get("kv/" + info[0].As<Napi::String>().Utf8Value());
    return Napi::String::New(env, std::string(v.begin(), v.end()));
  } catch (...) {
    Rethrow(env);
  }
}

// lostRanks(probeMs) -> ranks whose heartbeat did not move during probeMs; [0] when the store (hosted by
// rank 0, or by torchrun's agent) cannot be reached.
Napi::Value LostRanks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dist& d = Active(env);
  const int probe = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : 1500;
  Napi::Array out = Napi::Array::New(env);
  try {
    std::vector<int64_t> before(d.world);
    for (int r = 0; r < d.world; ++r) before[r] = d.store->add("hb/" + std::to_string(r), 0);
    std::this_thread::sleep_for(milliseconds(probe));
    uint32_t n = 0;
    for (int r = 0; r < d.world; ++r) {
      if (r != d.rank && d.store->add("hb/" + std::to_string(r), 0) == before[r]) out.Set(n++, Napi::Number::New(env, r));
    }
  } catch (...) {
    out.Set(0u, Napi::Number::New(env, 0));
  }
  return out;
}
#endif  // M3_DIST

Napi::Value DistInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef M3_DIST_GLOO
  o.Set("gloo", true);
#else
  o.Set("gloo", false);
#endif
#ifdef M3_DIST_NCCL
  o.Set("nccl", true);
#else
  o.Set("nccl", false);
#endif
  return o;
}

Napi::Value NotBuilt(const Napi::CallbackInfo& info) {
  throw Napi::Error::New(info.Env(), "distributed training is not built into the torch addon (install libgloo-dev, then npm run build:native)");
}

}  // namespace

void RegisterDist(Napi::Env env, Napi::Object exports) {
  exports.Set("distInfo", Napi::Function::New(env, DistInfo));
#ifdef M3_DIST
  exports.Set("distInit", Napi::Function::New(env, DistInit));
  exports.Set("distDestroy", Napi::Function::New(env, DistDestroy));
  exports.Set("allReduce", Napi::Function::New(env, AllReduce));
  exports.Set("allGather", Napi::Function::New(env, AllGather));
  exports.Set("broadcast", Napi::Function::New(env, Broadcast));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("storeSet", Napi::Function::New(env, StoreSet));
  exports.Set("storeGet", Napi::Function::New(env, StoreGet));
  exports.Set("lostRanks", Napi::Function::New(env, LostRanks));
#else
  for (const char* name : {"distInit", "distDestroy", "allReduce", "allGather", "broadcast", "barrier", "storeSet", "storeGet", "lostRanks"}) {
    exports.Set(name, Napi::Function::New(env, NotBuilt));
  }
#endif
}

}  // namespace m3
