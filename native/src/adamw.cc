// AdamW of float32 CPU parameters in one pass over each one's memory: one parameter per call (adamwCpu), or
// every parameter of a step in one call (adamwCpuAll), the same update. The ATen composite (TorchAdamW in
// src/backend/torch/kernels/fused.ts) makes eleven passes over parameter-sized tensors; at bge-m3's 568 M
// parameters that is tens of GB of memory traffic a step, where this loop reads p, m, v, g once and writes
// p, m, v once. Every element goes through the composite's float32 operations in the composite's order
// (scalars rounded to float32 as ATen rounds a Scalar for a float tensor; sqrt and division are correctly
// rounded in both, and nothing is contracted into an FMA), so the two give the same bits.

#include "handles.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <thread>
#include <vector>

// the composite rounds every product on its own: no multiply-add contraction here either
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace m3 {
namespace {

struct Hyper {
  float b1, g1, b2, g2, bc2, eps, step;
};

// Scalars rounded to float32 as ATen rounds a Scalar for a float tensor.
Hyper MakeHyper(double beta1, double beta2, double lr, double eps, double bc1, double bc2Sqrt) {
  return {static_cast<float>(beta1), static_cast<float>(1 - beta1), static_cast<float>(beta2), static_cast<float>(1 - beta2),
          static_cast<float>(bc2Sqrt), static_cast<float>(eps), static_cast<float>(lr / bc1)};
}

// All four contiguous float32 CPU tensors of one size.
bool Usable(const at::Tensor* const t[4]) {
  for (int i = 0; i < 4; ++i) {
    const at::Tensor& x = *t[i];
    if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || !x.is_contiguous() || x.numel() != t[0]->numel()) return false;
  }
  return true;
}

// The update of one parameter, in place.
void Update(const at::Tensor* const t[4], const Hyper& h, double decay) {
  const float keep = static_cast<float>(1 - decay);
  float* p = t[0]->data_ptr<float>();
  float* m = t[1]->data_ptr<float>();
  float* v = t[2]->data_ptr<float>();
  const float* g = t[3]->data_ptr<float>();
  auto update = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float mi = m[i] * h.b1 + gi * h.g1;                 // m ← β1·m + (1−β1)·g
      const float vi = v[i] * h.b2 + (gi * gi) * h.g2;          // v ← β2·v + (1−β2)·g²
      const float step = mi / (std::sqrt(vi) / h.bc2 + h.eps) * h.step;
      const float pi = decay != 0 ? p[i] * keep : p[i];         // p ← p·(1 − lr·wd) − (lr/bc1)·m / (√v/√bc2 + ε)
      m[i] = mi;
      v[i] = vi;
      p[i] = pi - step;
    }
  };
  // Memory-bound: one thread per core for large parameters. ATen's own pool has one thread on the CPU
  // (src/backend/torch/index.ts keeps the cores for BLAS), and nothing else runs while the optimizer does.
  const int64_t n = t[0]->numel();
  const int64_t workers = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), n >> 20);
  if (workers <= 1) {
    update(0, n);
  } else {
    std::vector<std::thread> pool;
    const int64_t chunk = (n + workers - 1) / workers;
    for (int64_t w = 1; w < workers; ++w) pool.emplace_back(update, w * chunk, std::min(n, (w + 1) * chunk));
    update(0, chunk);
    for (auto& th : pool) th.join();
  }
}

// adamwCpu(param, m, v, grad, beta1, beta2, lr, eps, decay, bc1, bc2Sqrt) -> true when updated in place;
// false (nothing touched) unless all four are contiguous float32 CPU tensors of one size.
Napi::Value AdamwCpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor* t[4];
  for (int i = 0; i < 4; ++i) t[i] = &Lookup(env, info[i]);
  if (!Usable(t)) return Napi::Boolean::New(env, false);
  auto num = [&](int i) { return info[i].As<Napi::Number>().DoubleValue(); };
  Update(t, MakeHyper(num(4), num(5), num(6), num(7), num(9), num(10)), num(8));
  return Napi::Boolean::New(env, true);
}

// adamwCpuAll(params[], ms[], vs[], grads[], decays[], beta1, beta2, lr, eps, bc1, bc2Sqrt) -> true when every
// parameter was updated in place, each exactly as adamwCpu would; false (nothing touched) unless every entry
// is four contiguous float32 CPU tensors of one size and each parameter and moment is exclusive (no other
// handle, view or alias shares its tensor or memory). One call from JS per optimizer step.
Napi::Value AdamwCpuAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array lists[4] = {info[0].As<Napi::Array>(), info[1].As<Napi::Array>(), info[2].As<Napi::Array>(), info[3].As<Napi::Array>()};
  Napi::Array decays = info[4].As<Napi::Array>();
  const uint32_t n = lists[0].Length();
  for (const auto& l : lists) {
    if (l.Length() != n) throw Napi::Error::New(env, "adamwCpuAll: lists of different lengths");
  }
  if (decays.Length() != n) throw Napi::Error::New(env, "adamwCpuAll: lists of different lengths");
  std::vector<std::array<const at::Tensor*, 4>> items(n);
  for (uint32_t k = 0; k < n; ++k) {
    for (int i = 0; i < 4; ++i) items[k][i] = &Lookup(env, lists[i].Get(k));
    if (!Usable(items[k].data())) return Napi::Boolean::New(env, false);
    for (int i = 0; i < 3; ++i) {
      const at::Tensor& x = *items[k][i];
      if (x.use_count() != 1 || x.storage().use_count() != 1) return Napi::Boolean::New(env, false);
    }
  }
  auto num = [&](int i) { return info[i].As<Napi::Number>().DoubleValue(); };
  const Hyper h = MakeHyper(num(5), num(6), num(7), num(8), num(9), num(10));
  for (uint32_t k = 0; k < n; ++k) Update(items[k].data(), h, decays.Get(k).As<Napi::Number>().DoubleValue());
  return Napi::Boolean::New(env, true);
}

// globalNormCpu(handles[]) -> handle of the float32 scalar ‖(‖g₁‖, ‖g₂‖, …)‖ (torch.nn.utils.clip_grad_norm_'s
// total norm), by the same ATen operators src/backend/torch/optimizer.ts's per-tensor path calls (bf16
// tensors widened to float32 first, linalg_vector_norm per tensor, stack, the norm of the norms), so the
// same bits, in one call from JS instead of two or three per gradient; null unless every tensor is on the CPU.
Napi::Value GlobalNormCpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<at::Tensor> norms;
  norms.reserve(list.Length());
  for (uint32_t i = 0; i < list.Length(); ++i) {
    if (!Lookup(env, list.Get(i)).device().is_cpu()) return env.Null();
  }
  try {
    c10::InferenceMode guard;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const at::Tensor& g = Lookup(env, list.Get(i));
      const bool widen = g.scalar_type() == at::kBFloat16;
      norms.push_back(at::linalg_vector_norm(widen ? g.to(at::kFloat) : g, 2, c10::nullopt, false, c10::nullopt));
      CountAten(widen ? 2 : 1);
    }
    at::Tensor total = at::linalg_vector_norm(at::stack(norms, 0), 2, c10::nullopt, false, c10::nullopt);
    CountAten(2);
    return Napi::Number::New(env, Store(std::move(total)));
  } catch (...) {
    Rethrow(env);
  }
}

}  // namespace

void RegisterAdamw(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwCpu", Napi::Function::New(env, AdamwCpu));
  exports.Set("adamwCpuAll", Napi::Function::New(env, AdamwCpuAll));
  exports.Set("globalNormCpu", Napi::Function::New(env, GlobalNormCpu));
}

}  // namespace m3
