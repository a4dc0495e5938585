// What the addon's translation units share: the tensor handle table (addon.cc) and the C++ → JS error
// conversion. dist.cc (the c10d collectives), adamw.cc, gemm.cc, layer.cc and record.cc register their exports through Register*.
#pragma once

#include <napi.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace m3 {

extern std::vector<at::Tensor> g_tensors;
extern std::vector<int32_t> g_free;
extern int64_t g_live;

// Puts a tensor in the handle table and returns its id.
int32_t Store(at::Tensor t);
// The tensor behind a JS handle; a JS error for anything else.
const at::Tensor& Lookup(Napi::Env env, const Napi::Value& v);
// Call inside a catch block: rethrows the active exception as a JS error without the C++ backtrace.
[[noreturn]] void Rethrow(Napi::Env env);

// Adds the distributed exports (dist.cc): always present, reporting "not built" when c10d is not compiled in.
void RegisterDist(Napi::Env env, Napi::Object exports);
// Adds `adamwCpu` (adamw.cc): the one-pass AdamW update of a float32 CPU parameter.
void RegisterAdamw(Napi::Env env, Napi::Object exports);
// Adds `dnnlMm` (gemm.cc): float32 GEMM through oneDNN where libtorch ships it as a shared library.
void RegisterGemm(Napi::Env env, Napi::Object exports);
// op(a)·op(b) [+ bias per row] through oneDNN (gemm.cc); an undefined tensor when oneDNN is not there or an
// operand is not a contiguous 2-D float32 CPU tensor.
at::Tensor DnnlGemm(const at::Tensor& a, const at::Tensor& b, bool ta, bool tb, const at::Tensor* bias);
// Sets OpenBLAS's thread count when n > 0 and differs (addon.cc); returns the count before, 0 when the BLAS
// is not OpenBLAS (then nothing is set).
int SetBlasThreads(int n);
// Adds `encoderLayerForward` / `encoderLayerBackward` (layer.cc): a whole encoder layer under libtorch's autograd.
void RegisterLayer(Napi::Env env, Napi::Object exports);
// Adds `recordOps` (record.cc): the ATen operators run between two calls, with their input dtypes.
void RegisterRecord(Napi::Env env, Napi::Object exports);

}  // namespace m3
