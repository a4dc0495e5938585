// Float32 GEMM through oneDNN's `dnnl_sgemm` where the process has oneDNN as a shared library (Debian's
// libtorch links libdnnl.so.2; a pip torch links it statically and hides it, so there this reports false and
// the caller keeps at::mm). On the AVX-512 machines this runs on, oneDNN's JIT kernels reach 300–400 GFLOP/s
// on 2 cores for the token-major products of a layer (thousands of rows), about twice the OpenBLAS that
// at::mm calls; for a few hundred rows OpenBLAS is as fast, so the caller picks by the row count.
//
// oneDNN threads through OpenMP. The backend keeps ATen's OpenMP pool at one thread (BLAS gets the cores,
// src/backend/torch/index.ts), so the call raises the calling thread's OpenMP thread count to the cores
// for its duration and restores it.

#include "handles.h"

#include <dlfcn.h>

#include <algorithm>
#include <thread>

namespace m3 {
namespace {

using SgemmFn = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*, int64_t);
using OmpSetFn = void (*)(int);
using OmpGetFn = int (*)();

struct Dnnl {
  SgemmFn sgemm = nullptr;
  OmpSetFn ompSet = nullptr;
  OmpGetFn ompGet = nullptr;
};

const Dnnl& Resolve() {
  static const Dnnl d = [] {
    Dnnl r;
    if (std::getenv("M3_TORCH_NO_DNNL")) return r;  // to compare with at::mm
    // only a oneDNN already loaded with libtorch: never a different copy found on the library path
    if (void* h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_NOLOAD)) r.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "dnnl_sgemm"));
    r.ompSet = reinterpret_cast<OmpSetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    r.ompGet = reinterpret_cast<OmpGetFn>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    if (!r.ompSet || !r.ompGet) r.sgemm = nullptr;
    return r;
  }();
  return d;
}

bool Usable(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 && t.is_contiguous();
}

}  // namespace

at::Tensor DnnlGemm(const at::Tensor& a, const at::Tensor& b, bool ta, bool tb, const at::Tensor* bias) {
  const Dnnl& d = Resolve();
  if (!d.sgemm || !Usable(a) || !Usable(b)) return at::Tensor();
  const int64_t m = ta ? a.size(1) : a.size(0), k = ta ? a.size(0) : a.size(1);
  const int64_t n = tb ? b.size(0) : b.size(1);
  TORCH_CHECK((tb ? b.size(1) : b.size(0)) == k, "dnnlMm: inner dimensions differ");
  at::Tensor c = at::empty({m, n}, a.options());
  float beta = 0;
  if (bias) {
    TORCH_CHECK(bias->numel() == n, "dnnlMm: bias size differs from the output's columns");
    c.copy_(bias->reshape({1, n}).expand({m, n}));
    beta = 1;
  }
  if (m > 0 && n > 0) {
    const int before = d.ompGet();
    d.ompSet(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    const int status = d.sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a.data_ptr<float>(), a.size(1), b.data_ptr<float>(), b.size(1), beta, c.data_ptr<float>(), n);
    d.ompSet(before);
    TORCH_CHECK(status == 0, "dnnl_sgemm failed with status ", status);
  }
  return c;
}

namespace {

// dnnlMm(a, b, transA, transB, bias?) -> handle of op(a)·op(b) [+ bias per row], a new [M, N] float32 tensor;
// null when oneDNN is not there or an operand is not a contiguous 2-D float32 CPU tensor.
Napi::Value DnnlMm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& a = Lookup(env, info[0]);
  const at::Tensor& b = Lookup(env, info[1]);
  const bool ta = info[2].ToBoolean().Value(), tb = info[3].ToBoolean().Value();
  const bool hasBias = info.Length() > 4 && !info[4].IsNull() && !info[4].IsUndefined();
  try {
    at::Tensor c = DnnlGemm(a, b, ta, tb, hasBias ? &Lookup(env, info[4]) : nullptr);
    if (!c.defined()) return env.Null();
    return Napi::Number::New(env, Store(std::move(c)));
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    Rethrow(env);
  }
}

}  // namespace

void RegisterGemm(Napi::Env env, Napi::Object exports) {
  exports.Set("dnnlMm", Napi::Function::New(env, DnnlMm));
}

}  // namespace m3
