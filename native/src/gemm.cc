// Float32 GEMM through oneDNN's `dnnl_sgemm` where the process has oneDNN as a shared library (Debian's
// libtorch links libdnnl.so.2; a pip torch links it statically and hides it, so there this reports false and
// the caller keeps at::mm). On the AVX-512 machines this runs on, oneDNN's JIT kernels reach 300–400 GFLOP/s
// on 2 cores for the token-major products of a layer (thousands of rows), about twice the OpenBLAS that
// at::mm calls; for a few hundred rows OpenBLAS is as fast, so the caller picks by the row count.
//
// oneDNN threads through OpenMP. The backend keeps ATen's OpenMP pool at one thread (BLAS gets the cores,
// src/backend/torch/index.ts), so the call raises the calling thread's OpenMP thread count to the cores
// for its duration and restores it.

//
// Also here: the GEMM recorder (recordGemms, for tests: which dtypes every matrix product of a step took) and
// gemmInfo (which BLAS, threads and oneDNN path this process has: the bench rows record it).

// libtorch is a release build (NDEBUG), and at::RecordFunction's layout depends on it (a debug-only member
// before the inputs the recorder reads): this file sees its headers as the library was built.
#ifndef NDEBUG
#define NDEBUG
#endif

#include "handles.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
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

// ---- the GEMM recorder ---------------------------------------------------------------------------------
// While on, a RecordFunction observer (libtorch's profiler hook, so it sees every operator dispatched in the
// process: the boxed calls of `call`, at:: calls of any native file, and the products that composite
// operators such as matmul or linear run inside ATen) records each matrix product's operator name and the
// dtypes of its tensor inputs; dnnl_sgemm, which bypasses ATen, records itself. Off, nothing is registered.
struct GemmRecord {
  std::string op;
  std::vector<std::string> dtypes;
};
std::mutex g_recordMu;
std::vector<GemmRecord> g_records;
std::atomic<bool> g_recording{false};
at::CallbackHandle g_recordHandle = 0;

bool IsGemm(const char* name) {
  static const char* const kGemms[] = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul",
                                       "aten::linear", "aten::mv", "aten::addmv", "aten::dot", "aten::vdot", "aten::einsum",
                                       "aten::_scaled_dot_product_attention", "aten::scaled_dot_product_attention",
                                       "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention"};
  for (const char* g : kGemms) {
    if (std::strcmp(name, g) == 0) return true;
  }
  return false;
}

void Record(std::string op, std::vector<std::string> dtypes) {
  std::lock_guard<std::mutex> lock(g_recordMu);
  g_records.push_back({std::move(op), std::move(dtypes)});
}

std::unique_ptr<at::ObserverContext> OnOperator(const at::RecordFunction& fn) {
  const char* name = fn.name();
  if (!name || !IsGemm(name)) return nullptr;
  std::vector<std::string> dtypes;
  for (const c10::IValue& v : fn.inputs()) {
    if (v.isTensor() && v.toTensor().defined()) dtypes.emplace_back(c10::toString(v.toTensor().scalar_type()));
  }
  Record(name, std::move(dtypes));
  return nullptr;
}

// recordGemms(true) starts recording (clearing earlier records); recordGemms(false) stops and returns
// [{ op, dtypes }] in call order (dtypes as c10 names: Float, BFloat16, ...).
Napi::Value RecordGemms(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool on = info[0].ToBoolean().Value();
  if (on && !g_recording) {
    {
      std::lock_guard<std::mutex> lock(g_recordMu);
      g_records.clear();
    }
    g_recordHandle = at::addGlobalCallback(at::RecordFunctionCallback(&OnOperator).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
    g_recording = true;
    return env.Undefined();
  }
  if (!on && g_recording) {
    at::removeCallback(g_recordHandle);
    g_recording = false;
  }
  std::lock_guard<std::mutex> lock(g_recordMu);
  Napi::Array out = Napi::Array::New(env, g_records.size());
  for (size_t i = 0; i < g_records.size(); ++i) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("op", g_records[i].op);
    Napi::Array d = Napi::Array::New(env, g_records[i].dtypes.size());
    for (size_t j = 0; j < g_records[i].dtypes.size(); ++j) d.Set(static_cast<uint32_t>(j), g_records[i].dtypes[j]);
    r.Set("dtypes", d);
    out.Set(static_cast<uint32_t>(i), r);
  }
  if (!on) g_records.clear();
  return out;
}

// gemmInfo() -> { blasCore, blasConfig, blasThreads, dnnlSgemm, atenThreads }: OpenBLAS's core type (the
// kernels it picked for this CPU), its build configuration and thread count ('' and 0 when the BLAS is not
// OpenBLAS), whether the linear layers can take oneDNN's sgemm here, and ATen's intra-op threads.
Napi::Value GemmInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  using StrFn = char* (*)();
  using GetFn = int (*)();
  const auto core = reinterpret_cast<StrFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const auto config = reinterpret_cast<StrFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  const auto threads = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  Napi::Object out = Napi::Object::New(env);
  out.Set("blasCore", core ? std::string(core()) : std::string());
  out.Set("blasConfig", config ? std::string(config()) : std::string());
  out.Set("blasThreads", threads ? threads() : 0);
  out.Set("dnnlSgemm", Resolve().sgemm != nullptr);
  out.Set("atenThreads", at::get_num_threads());
  return out;
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
  if (g_recording) Record("m3::dnnl_sgemm", {"Float", "Float"});
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
    CountAten(hasBias ? 4 : 1);  // empty (+ reshape, expand, copy_ of the bias); dnnl_sgemm itself is oneDNN's, not ATen's
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
  exports.Set("recordGemms", Napi::Function::New(env, RecordGemms));
  exports.Set("gemmInfo", Napi::Function::New(env, GemmInfo));
}

}  // namespace m3
