// AdamW of one float32 CPU parameter in one pass over its memory. The ATen composite (TorchAdamW in
// src/backend/torch/kernels/fused.ts) makes eleven passes over parameter-sized tensors; at bge-m3's 568 M
// parameters that is tens of GB of memory traffic a step, where this loop reads p, m, v, g once and writes
// p, m, v once. Every element goes through the composite's float32 operations in the composite's order
// (scalars rounded to float32 as ATen rounds a Scalar for a float tensor; sqrt and division are correctly
// rounded in both, and nothing is contracted into an FMA), so the two give the same bits.

#include "handles.h"

#include <algorithm>
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

// adamwCpu(param, m, v, grad, beta1, beta2, lr, eps, decay, bc1, bc2Sqrt) -> true when updated in place;
// false (nothing touched) unless all four are contiguous float32 CPU tensors of one size.
Napi::Value AdamwCpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor* t[4];
  for (int i = 0; i < 4; ++i) t[i] = &Lookup(env, info[i]);
  for (const at::Tensor* x : t) {
    if (!x->device().is_cpu() || x->scalar_type() != at::kFloat || !x->is_contiguous() || x->numel() != t[0]->numel()) {
      return Napi::Boolean::New(env, false);
    }
  }
  auto num = [&](int i) { return info[i].As<Napi::Number>().DoubleValue(); };
  const double beta1 = num(4), beta2 = num(5), lr = num(6), eps = num(7), decay = num(8), bc1 = num(9), bc2Sqrt = num(10);
  const float b1 = static_cast<float>(beta1), g1 = static_cast<float>(1 - beta1);
  const float b2 = static_cast<float>(beta2), g2 = static_cast<float>(1 - beta2);
  const float bc2 = static_cast<float>(bc2Sqrt), epsF = static_cast<float>(eps), stepF = static_cast<float>(lr / bc1);
  const float keep = static_cast<float>(1 - decay);
  float* p = t[0]->data_ptr<float>();
  float* m = t[1]->data_ptr<float>();
  float* v = t[2]->data_ptr<float>();
  const float* g = t[3]->data_ptr<float>();
  auto update = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float mi = m[i] * b1 + gi * g1;                 // m ← β1·m + (1−β1)·g
      const float vi = v[i] * b2 + (gi * gi) * g2;          // v ← β2·v + (1−β2)·g²
      const float step = mi / (std::sqrt(vi) / bc2 + epsF) * stepF;
      const float pi = decay != 0 ? p[i] * keep : p[i];     // p ← p·(1 − lr·wd) − (lr/bc1)·m / (√v/√bc2 + ε)
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
  return Napi::Boolean::New(env, true);
}

}  // namespace

void RegisterAdamw(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwCpu", Napi::Function::New(env, AdamwCpu));
}

}  // namespace m3
