// N-API addon that exposes libtorch to the TF.js `torch` backend (src/backend/torch/).
//
// Design: rather than one C++ entry point per TF.js kernel (slow to compile, and every kernel change would
// need a rebuild), the addon exposes libtorch's *boxed dispatcher*: TypeScript looks an ATen operator up
// once by schema name (`aten::add.Tensor`) and then calls it with a JS argument array that this file
// converts to IValues, guided by the operator's schema. Kernel registrations therefore live in TypeScript;
// this translation unit only owns the tensor handle table, data transfer in and out of JS, and threading.
//
// Tensors live in a handle table (int ids). JS never holds a libtorch pointer: the backend frees a handle
// when TF.js disposes the tensor's dataId, and `liveHandles()` lets tests check nothing leaks.

#include <napi.h>

#include "handles.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>
#include <dlfcn.h>
#include <sys/mman.h>
#ifdef M3_CUDA  // defined by the build when libtorch is a CUDA build and CUDA's headers were found
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace m3 {

// ---- handle table -------------------------------------------------------------------------------------
// Slots are reused through a free list so ids stay small; slot 0 is never used (0 reads as "no tensor").
std::vector<at::Tensor> g_tensors(1);
std::vector<int32_t> g_free;
int64_t g_live = 0;

int32_t Store(at::Tensor t) {
  int32_t id;
  if (!g_free.empty()) {
    id = g_free.back();
    g_free.pop_back();
    g_tensors[id] = std::move(t);
  } else {
    id = static_cast<int32_t>(g_tensors.size());
    g_tensors.push_back(std::move(t));
  }
  ++g_live;
  return id;
}

const at::Tensor& Lookup(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, "expected a tensor handle (number)");
  const int64_t id = v.As<Napi::Number>().Int64Value();
  if (id <= 0 || id >= static_cast<int64_t>(g_tensors.size()) || !g_tensors[id].defined()) {
    throw Napi::Error::New(env, "invalid or freed tensor handle " + std::to_string(id));
  }
  return g_tensors[id];
}

// Turns whatever libtorch threw into a JS exception. c10 errors carry a C++ backtrace, which is cut (JS
// callers want the reason); some ATen paths throw plain std::exceptions, which must not escape either
// (an uncaught C++ exception aborts the process).
[[noreturn]] void Rethrow(Napi::Env env) {
  try {
    throw;
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Napi::Error::New(env, e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

int SetBlasThreads(int n) {
  using SetFn = void (*)(int);
  using GetFn = int (*)();
  static const auto set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  static const auto get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (!set || !get) return 0;
  const int before = get();
  if (n > 0 && n != before) set(n);
  return before;
}

}  // namespace m3

namespace {

using m3::CountAten;
using m3::Lookup;
using m3::Rethrow;
using m3::Store;
using m3::g_tensors;
using m3::g_free;
using m3::g_live;

// ---- CPU memory: a caching allocator for large blocks ------------------------------------------------------
// libtorch's CPU allocator hands every block to malloc, which maps blocks of more than a few MB freshly
// and unmaps them on free, so every large tensor of a training step (gradients, optimizer temporaries,
// the embedding's [vocab, hidden] gradient tables) is paid for again in page faults: about 6 s per GB in
// the VMs this runs in (0.1 s per GB for memory already mapped), i.e. most of a bge-m3 step. Freed blocks
// of at least 1 MiB are therefore kept and handed out again for a request of the same size or up to 1/16
// smaller (sizes rounded up to 1/256). The cache is bounded so that blocks in use plus cached never exceed
// the most ever in use at once by more than 1/16 of it (or 256 MiB in all): the 1/16 keeps the forward
// pass's activation blocks, freed while the backward pass nears the peak, for the next step. A training
// step, which allocates the same sizes every time, then takes all its blocks from the cache after its first
// few steps (bge-m3: 628 of 628).
// M3_TORCH_CACHE_MB sets a fixed bound instead (0 turns caching off). Over the bound, the smallest blocks
// go first: faulting a block in again costs in proportion to its size, and evicting the oldest instead let a
// few MB of overflow evict bge-m3's 1 GB embedding-gradient table, faulted in again (4 s) every step.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kMinBlock = size_t(1) << 20;

  explicit CachingCpuAllocator(c10::Allocator* fallback) : fallback_(fallback) {
    if (const char* mb = std::getenv("M3_TORCH_CACHE_MB")) {
      fixedCap_ = true;
      cap_ = static_cast<size_t>(std::strtoull(mb, nullptr, 10)) << 20;
    }
  }

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  c10::DataPtr allocate(size_t n) override { return Allocate(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#else
  c10::DataPtr allocate(size_t n) const override { return const_cast<CachingCpuAllocator*>(this)->Allocate(n); }
#endif

  // Large sizes are rounded up to 1/256 of their size (at least a page), so that nearly equal requests
  // share blocks: the embedding gradient's [vocab + 1, hidden] table and a [vocab, hidden] tensor, say.
  static size_t Round(size_t n) {
    size_t g = 4096;
    while (g < n / 256) g <<= 1;
    return (n + g - 1) / g * g;
  }

  // Large blocks are mapped and unmapped here rather than through malloc, so an evicted block goes back to
  // the system at once (malloc keeps freed blocks below its mmap threshold, up to 32 MB, in its heap), and
  // they are marked for transparent huge pages: where the kernel allows them (THP "madvise"), a block
  // faults in 2 MB at a time instead of 4 KB, which in these VMs is most of what a fresh block costs.
  static void* Map(size_t n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (n >= (size_t(2) << 20)) madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
  }

  c10::DataPtr Allocate(size_t n) {
    if (n < kMinBlock || (fixedCap_ && cap_ == 0)) return fallback_->allocate(n);
    n = Round(n);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(n);
      if (it != free_.end() && it->first - n <= n / 16) {
        p = it->second;
        size_t size = it->first;
        cached_ -= size;
        free_.erase(it);
        live_ += size;
        peak_ = std::max(peak_, live_);
        sizes_[p] = size;
        ++hits_;
      }
    }
    if (!p) {
      p = Map(n);
      std::lock_guard<std::mutex> lock(mu_);
      live_ += n;
      peak_ = std::max(peak_, live_);
      sizes_[p] = n;
      ++misses_;
    }
    return c10::DataPtr(p, p, &Release, c10::Device(c10::DeviceType::CPU));
  }

  // raw_allocate/raw_deallocate (used by some ATen kernels for scratch space) need a raw deleter.
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }

  static void Release(void* p);

  void Free(void* p) {
    std::vector<std::pair<void*, size_t>> release;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto s = sizes_.find(p);
      if (s == sizes_.end()) {  // a small block from the fallback, released through raw_deallocate
        mu_.unlock();
        fallback_->raw_deleter()(p);
        mu_.lock();
        return;
      }
      const size_t size = s->second;
      sizes_.erase(s);
      live_ -= size;
      free_.emplace(size, p);
      cached_ += size;
      const size_t cap = fixedCap_ ? cap_ : std::max<size_t>(size_t(256) << 20, peak_ - live_ + peak_ / 16);
      while (cached_ > cap && !free_.empty()) {  // smallest first (the map is ordered by size)
        cached_ -= free_.begin()->first;
        release.emplace_back(free_.begin()->second, free_.begin()->first);
        free_.erase(free_.begin());
      }
    }
    for (auto [q, size] : release) munmap(q, size);
  }

  // Releases every cached block (the memory in use stays) and restarts the peak from what is in use.
  void Empty() {
    std::vector<std::pair<void*, size_t>> release;
    {
      std::lock_guard<std::mutex> lock(mu_);
      peak_ = live_;
      for (auto& [size, q] : free_) release.emplace_back(q, size);
      free_.clear();
      cached_ = 0;
    }
    for (auto [q, size] : release) munmap(q, size);
  }

  void Stats(size_t* live, size_t* peak, size_t* cached, size_t* hits, size_t* misses) {
    std::lock_guard<std::mutex> lock(mu_);
    *live = live_;
    *peak = peak_;
    *cached = cached_;
    *hits = hits_;
    *misses = misses_;
  }

 private:
  c10::Allocator* fallback_;
  bool fixedCap_ = false;
  size_t cap_ = 0;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> sizes_;
  size_t live_ = 0, peak_ = 0, cached_ = 0, hits_ = 0, misses_ = 0;
};

// Never destroyed: tensors may still be freed while the process exits.
CachingCpuAllocator* g_cpuAlloc = nullptr;
void CachingCpuAllocator::Release(void* p) { g_cpuAlloc->Free(p); }

// cpuMemory() -> { liveBytes, peakLiveBytes, cachedBytes, hits, misses } of the large blocks (>= 1 MiB);
// cpuMemory(true) first releases the cached blocks and restarts the peak.
Napi::Value CpuMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  if (!g_cpuAlloc) return out;
  if (info.Length() > 0 && info[0].ToBoolean().Value()) g_cpuAlloc->Empty();
  size_t live, peak, cached, hits, misses;
  g_cpuAlloc->Stats(&live, &peak, &cached, &hits, &misses);
  out.Set("liveBytes", static_cast<double>(live));
  out.Set("peakLiveBytes", static_cast<double>(peak));
  out.Set("cachedBytes", static_cast<double>(cached));
  out.Set("hits", static_cast<double>(hits));
  out.Set("misses", static_cast<double>(misses));
  return out;
}

// ---- schema-guided argument conversion -----------------------------------------------------------------
// The JS side passes plain values; the operator's schema says what each one means.
c10::IValue ToIValue(Napi::Env env, const Napi::Value& v, const c10::TypePtr& type);

std::vector<int64_t> ToIntVector(Napi::Env env, const Napi::Value& v) {
  std::vector<int64_t> out;
  if (v.IsNumber()) {  // int[1] parameters accept a bare int, as in Python
    out.push_back(v.As<Napi::Number>().Int64Value());
    return out;
  }
  if (!v.IsArray()) throw Napi::TypeError::New(env, "expected an int array");
  Napi::Array a = v.As<Napi::Array>();
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).As<Napi::Number>().Int64Value());
  return out;
}

c10::Scalar ToScalar(Napi::Env env, const Napi::Value& v) {
  if (v.IsBoolean()) return c10::Scalar(v.As<Napi::Boolean>().Value());
  if (!v.IsNumber()) throw Napi::TypeError::New(env, "expected a number for a Scalar argument");
  const double d = v.As<Napi::Number>().DoubleValue();
  // Integral JS numbers become integer Scalars so that int32 tensors stay int32 under type promotion
  // (a double Scalar would promote them to float). Use tensors when float semantics are required.
  if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 9007199254740992.0) {
    return c10::Scalar(static_cast<int64_t>(d));
  }
  return c10::Scalar(d);
}

c10::IValue ToIValue(Napi::Env env, const Napi::Value& v, const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::OptionalType:
      if (v.IsNull() || v.IsUndefined()) return c10::IValue();
      return ToIValue(env, v, type->castRaw<c10::OptionalType>()->getElementType());
    case c10::TypeKind::TensorType:  // null: an undefined tensor (what a kernel returned as "none")
      if (v.IsNull()) return c10::IValue(at::Tensor());
      return Lookup(env, v);
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType:
    case c10::TypeKind::ScalarTypeType:  // dtype codes are c10::ScalarType values (see dtypeCodes)
    case c10::TypeKind::LayoutType:
    case c10::TypeKind::MemoryFormatType:
      return c10::IValue(v.As<Napi::Number>().Int64Value());
    case c10::TypeKind::FloatType:
      return c10::IValue(v.As<Napi::Number>().DoubleValue());
    case c10::TypeKind::BoolType:
      return c10::IValue(v.ToBoolean().Value());
    case c10::TypeKind::NumberType:
      return c10::IValue(ToScalar(env, v));
    case c10::TypeKind::StringType:
      return c10::IValue(v.As<Napi::String>().Utf8Value());
    case c10::TypeKind::DeviceObjType:
      return c10::IValue(c10::Device(v.As<Napi::String>().Utf8Value()));
    case c10::TypeKind::ListType: {
      const c10::TypePtr elem = type->castRaw<c10::ListType>()->getElementType();
      switch (elem->kind()) {
        case c10::TypeKind::IntType:
        case c10::TypeKind::SymIntType:
          return c10::IValue(ToIntVector(env, v));
        case c10::TypeKind::BoolType: {
          Napi::Array a = v.As<Napi::Array>();
          c10::List<bool> out;
          for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).ToBoolean().Value());
          return c10::IValue(out);
        }
        case c10::TypeKind::FloatType: {
          Napi::Array a = v.As<Napi::Array>();
          std::vector<double> out;
          for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).As<Napi::Number>().DoubleValue());
          return c10::IValue(out);
        }
        case c10::TypeKind::TensorType: {
          Napi::Array a = v.As<Napi::Array>();
          std::vector<at::Tensor> out;
          out.reserve(a.Length());
          for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(Lookup(env, a.Get(i)));
          return c10::IValue(out);
        }
        case c10::TypeKind::OptionalType: {  // Tensor?[] (aten::index)
          Napi::Array a = v.As<Napi::Array>();
          c10::List<c10::optional<at::Tensor>> out;
          for (uint32_t i = 0; i < a.Length(); ++i) {
            Napi::Value e = a.Get(i);
            if (e.IsNull() || e.IsUndefined()) out.push_back(c10::nullopt);
            else out.push_back(Lookup(env, e));
          }
          return c10::IValue(out);
        }
        default:
          break;
      }
      break;
    }
    default:
      break;
  }
  throw Napi::TypeError::New(env, "unsupported argument type " + type->str());
}

Napi::Value FromIValue(Napi::Env env, const c10::IValue& v) {
  if (v.isTensor()) {  // an undefined tensor (a gradient not asked for) comes back as null
    if (!v.toTensor().defined()) return env.Null();
    return Napi::Number::New(env, Store(v.toTensor()));
  }
  if (v.isTensorList()) {
    auto list = v.toTensorList();
    Napi::Array out = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, Store(list.get(i))));
    return out;
  }
  if (v.isInt()) return Napi::Number::New(env, static_cast<double>(v.toInt()));
  if (v.isDouble()) return Napi::Number::New(env, v.toDouble());
  if (v.isBool()) return Napi::Boolean::New(env, v.toBool());
  if (v.isNone()) return env.Null();
  throw Napi::TypeError::New(env, "unsupported return type " + v.tagKind());
}

// ---- operators ------------------------------------------------------------------------------------------
std::vector<c10::OperatorHandle> g_ops;

// op(name, overload) -> operator id. Resolving once keeps the per-call cost to a vector index.
Napi::Value Op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const std::string overload = info.Length() > 1 ? info[1].As<Napi::String>().Utf8Value() : "";
  auto handle = c10::Dispatcher::singleton().findSchema({name, overload});
  if (!handle) throw Napi::Error::New(env, "libtorch has no operator " + name + (overload.empty() ? "" : "." + overload));
  g_ops.push_back(*handle);
  return Napi::Number::New(env, static_cast<double>(g_ops.size() - 1));
}

// call(opId, args[]) -> handle | number | bool | null, or an array of those when the op has several returns.
// Missing trailing arguments take the schema's defaults.
Napi::Value Call(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t opId = info[0].As<Napi::Number>().Uint32Value();
  if (opId >= g_ops.size()) throw Napi::Error::New(env, "unknown operator id");
  const c10::OperatorHandle& op = g_ops[opId];
  const c10::FunctionSchema& schema = op.schema();
  Napi::Array args = info[1].As<Napi::Array>();
  const auto& params = schema.arguments();
  if (args.Length() > params.size()) throw Napi::Error::New(env, "too many arguments for " + schema.name());
  // TF.js owns differentiation; libtorch's autograd bookkeeping would only cost time.
  c10::InferenceMode guard;
  torch::jit::Stack stack;
  stack.reserve(params.size());
  try {
    for (size_t i = 0; i < params.size(); ++i) {
      if (i < args.Length() && !args.Get(static_cast<uint32_t>(i)).IsUndefined()) {
        stack.push_back(ToIValue(env, args.Get(static_cast<uint32_t>(i)), params[i].type()));
      } else if (params[i].default_value()) {
        stack.push_back(*params[i].default_value());
      } else {
        throw Napi::Error::New(env, "missing argument '" + params[i].name() + "' for " + schema.name());
      }
    }
    CountAten();
    op.callBoxed(&stack);
  } catch (...) {
    Rethrow(env);
  }
  if (stack.size() == 1) return FromIValue(env, stack[0]);
  Napi::Array out = Napi::Array::New(env, stack.size());
  for (size_t i = 0; i < stack.size(); ++i) out.Set(static_cast<uint32_t>(i), FromIValue(env, stack[i]));
  return out;
}

// ---- data in and out ----------------------------------------------------------------------------------
// fromArray(typedArray, shape, scalarTypeCode, device) -> handle. Copies: TF.js may reuse its arrays.
Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray arr = info[0].As<Napi::TypedArray>();
  const std::vector<int64_t> shape = ToIntVector(env, info[1]);
  const auto dtype = static_cast<c10::ScalarType>(info[2].As<Napi::Number>().Int32Value());
  const std::string device = info.Length() > 3 ? info[3].As<Napi::String>().Utf8Value() : "cpu";
  c10::InferenceMode guard;
  try {
    // For a GPU the values go through pinned memory and an asynchronous copy: a copy from pageable memory
    // would wait for all queued GPU work (every scalar TF.js makes mid-step would stall the pipeline).
    // libtorch's caching host allocator keeps the pinned block until the copy has run.
    const bool cpu = device == "cpu";
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype).pinned_memory(!cpu));
    CountAten(cpu ? 1 : 2);  // empty, and the copy to the device
    const size_t bytes = t.numel() * t.element_size();
    if (arr.ByteLength() != bytes) {
      throw Napi::Error::New(env, "fromArray: " + std::to_string(arr.ByteLength()) + " bytes for a tensor of " + std::to_string(bytes));
    }
    const uint8_t* src = static_cast<const uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
    if (bytes) std::memcpy(t.data_ptr(), src, bytes);
    if (!cpu) t = t.to(at::TensorOptions().device(c10::Device(device)), /*non_blocking=*/true);
    return Napi::Number::New(env, Store(std::move(t)));
  } catch (...) {
    Rethrow(env);
  }
}

// toArray(handle) -> Float32Array | Int32Array | Uint8Array (bool). Wider types (int64/float64, which
// some ATen ops return) are narrowed to TF.js's 32-bit types here so JS never sees them.
Napi::Value ToArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  c10::InferenceMode guard;
  try {
    at::Tensor t = Lookup(env, info[0]);
    if (!t.device().is_cpu()) {
      t = t.cpu();
      CountAten();
    }
    switch (t.scalar_type()) {
      case at::kFloat: case at::kInt: case at::kBool: break;
      case at::kDouble: case at::kHalf: case at::kBFloat16: t = t.to(at::kFloat); CountAten(); break;
      default: t = t.to(at::kInt); CountAten(); break;
    }
    if (!t.is_contiguous()) {
      t = t.contiguous();
      CountAten();
    }
    const size_t n = t.numel();
    if (t.scalar_type() == at::kFloat) {
      Napi::Float32Array out = Napi::Float32Array::New(env, n);
      if (n) std::memcpy(out.Data(), t.data_ptr(), n * 4);
      return out;
    }
    if (t.scalar_type() == at::kInt) {
      Napi::Int32Array out = Napi::Int32Array::New(env, n);
      if (n) std::memcpy(out.Data(), t.data_ptr(), n * 4);
      return out;
    }
    Napi::Uint8Array out = Napi::Uint8Array::New(env, n);
    if (n) std::memcpy(out.Data(), t.data_ptr(), n);
    return out;
  } catch (...) {
    Rethrow(env);
  }
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t id = info[0].As<Napi::Number>().Int64Value();
  if (id <= 0 || id >= static_cast<int64_t>(g_tensors.size()) || !g_tensors[id].defined()) {
    throw Napi::Error::New(env, "free: invalid or already freed handle " + std::to_string(id));
  }
  g_tensors[id].reset();
  g_free.push_back(static_cast<int32_t>(id));
  --g_live;
  return env.Undefined();
}

// info(handle) -> [scalarTypeCode, ...shape]: lets TS check what an op produced without reading data.
Napi::Value Meta(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = Lookup(env, info[0]);
  Napi::Array out = Napi::Array::New(env, t.dim() + 1);
  out.Set(0u, Napi::Number::New(env, static_cast<int>(t.scalar_type())));
  for (int64_t i = 0; i < t.dim(); ++i) out.Set(static_cast<uint32_t>(i + 1), Napi::Number::New(env, static_cast<double>(t.size(i))));
  return out;
}

// exclusive(handle) -> true when this handle is the only reference to its tensor and the tensor the only
// user of its storage (no view, alias or second handle shares the memory): in-place updates through it
// (the fused optimizer step) are then invisible to every other tensor.
Napi::Value Exclusive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = Lookup(env, info[0]);
  return Napi::Boolean::New(env, t.use_count() == 1 && t.storage().use_count() == 1);
}

Napi::Value LiveHandles(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_live));
}

// atenCalls() -> the process-wide count of ATen operator calls the addon made (handles.h's CountAten).
Napi::Value AtenCalls(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(m3::g_atenCalls.load(std::memory_order_relaxed)));
}

// ---- threads and environment ----------------------------------------------------------------------------
// OpenBLAS (which Debian's libtorch uses for GEMM through libblas.so.3) has its own thread pool beside
// libtorch's OpenMP pool; the backend sets both so that the two never run more threads than cores.
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  const int intra = info[0].As<Napi::Number>().Int32Value();
  const int blas = info.Length() > 1 ? info[1].As<Napi::Number>().Int32Value() : -1;
  if (intra > 0) at::set_num_threads(intra);
  bool blasSet = false;
  if (blas > 0) {
    using SetFn = void (*)(int);
    if (auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
      fn(blas);
      blasSet = true;
    }
  }
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("intraOp", at::get_num_threads());
  out.Set("blasSet", blasSet);
  return out;
}

// blasThreads(n) -> the OpenBLAS thread count before setting it to n (0 when this libtorch's BLAS is not
// OpenBLAS, and nothing is set). The CPU attention runs its many small products on one BLAS thread: two
// threads synchronise per [L, L] matrix, and their spinning afterwards slows the oneDNN GEMMs that follow.
Napi::Value BlasThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), m3::SetBlasThreads(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value Version(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), TORCH_VERSION);
}

Napi::Value CudaAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), at::hasCUDA());
}

// cudaMemory(resetPeak?) -> { allocatedBytes, peakAllocatedBytes, reservedBytes } of libtorch's CUDA caching
// allocator on the current device (what torch.cuda.memory_allocated / max_memory_allocated report), or {}
// when the addon was built without CUDA. resetPeak restarts the peak from what is allocated now.
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
#ifdef M3_CUDA
  try {
    if (!at::hasCUDA()) return out;
    const auto device = c10::cuda::current_device();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    // Index 0 is StatType::AGGREGATE in every libtorch version (the enum moved namespaces in 2.x).
    out.Set("allocatedBytes", static_cast<double>(stats.allocated_bytes[0].current));
    out.Set("peakAllocatedBytes", static_cast<double>(stats.allocated_bytes[0].peak));
    out.Set("reservedBytes", static_cast<double>(stats.reserved_bytes[0].current));
    if (info.Length() > 0 && info[0].ToBoolean().Value()) c10::cuda::CUDACachingAllocator::resetPeakStats(device);
  } catch (...) {
    Rethrow(env);
  }
#endif
  return out;
}

// cudaSynchronize(): waits for the device's queued work (timing only: reading a tensor synchronises anyway).
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
#ifdef M3_CUDA
  try {
    if (at::hasCUDA()) c10::cuda::device_synchronize();
  } catch (...) {
    Rethrow(info.Env());
  }
#endif
  return info.Env().Undefined();
}

Napi::Value DtypeCodes(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("float32", static_cast<int>(at::kFloat));
  o.Set("int32", static_cast<int>(at::kInt));
  o.Set("bool", static_cast<int>(at::kBool));
  o.Set("int64", static_cast<int>(at::kLong));
  o.Set("float64", static_cast<int>(at::kDouble));
  o.Set("uint8", static_cast<int>(at::kByte));
  o.Set("bfloat16", static_cast<int>(at::kBFloat16));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (!g_cpuAlloc) {
    g_cpuAlloc = new CachingCpuAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(g_cpuAlloc, /*priority=*/100);
    // float32 matmuls in float32 on CUDA (no TF32), as PyTorch's default: bf16 is asked for explicitly.
    // (Only set when not already so: newer libtorch warns once that this setter is deprecated.)
    if (at::globalContext().allowTF32CuBLAS()) at::globalContext().setAllowTF32CuBLAS(false);
  }
  exports.Set("cpuMemory", Napi::Function::New(env, CpuMemory));
  exports.Set("op", Napi::Function::New(env, Op));
  exports.Set("call", Napi::Function::New(env, Call));
  exports.Set("fromArray", Napi::Function::New(env, FromArray));
  exports.Set("toArray", Napi::Function::New(env, ToArray));
  exports.Set("free", Napi::Function::New(env, Free));
  exports.Set("meta", Napi::Function::New(env, Meta));
  exports.Set("exclusive", Napi::Function::New(env, Exclusive));
  exports.Set("liveHandles", Napi::Function::New(env, LiveHandles));
  exports.Set("atenCalls", Napi::Function::New(env, AtenCalls));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("blasThreads", Napi::Function::New(env, BlasThreads));
  exports.Set("version", Napi::Function::New(env, Version));
  exports.Set("cudaAvailable", Napi::Function::New(env, CudaAvailable));
  exports.Set("cudaMemory", Napi::Function::New(env, CudaMemory));
  exports.Set("cudaSynchronize", Napi::Function::New(env, CudaSynchronize));
  exports.Set("dtypeCodes", DtypeCodes(env));
  m3::RegisterDist(env, exports);
  m3::RegisterAdamw(env, exports);
  m3::RegisterGemm(env, exports);
  m3::RegisterLayer(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(m3_torch, Init)
