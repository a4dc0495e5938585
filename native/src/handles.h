// What the addon's translation units share: the tensor handle table (addon.cc) and the C++ → JS error
// conversion. dist.cc (the c10d collectives), adamw.cc, gemm.cc, and layer.cc register their exports through Register*.
#pragma once

#include <napi.h>

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace m3 {

extern std::vector<at::Tensor> g_tensors;
extern std::vector<int32_t> g_free;
extern int64_t g_live;

// ATen operator calls made by the addon, process-wide (the bench's aten_calls_per_step). Every native file
// counts its own: one per ATen operator its code invokes directly through the dispatcher (a boxed `call`,
// an at::/Tensor method call that dispatches, such as at::empty, copy_, clone, to() when it copies), counted
// when it runs. Not counted: the operators those call inside ATen, c10d collectives, oneDNN's sgemm, and
// metadata reads that dispatch nothing (sizes, dtype, data_ptr, use_count).
// layer.cc's fused encoder layer runs many operators natively (its backward through autograd's engine): it
// counts the outermost ones of its forward and backward, through a RecordFunction hook that is on only while
// setLayerAtenCounting(true), since the hook costs time (the bench counts in an untimed step).
inline std::atomic<int64_t> g_atenCalls{0};
inline void CountAten(int64_t n = 1) { g_atenCalls.fetch_add(n, std::memory_order_relaxed); }

// Puts a tensor in the handle table and returns its id.
int32_t Store(at::Tensor t);
// The tensor behind a JS handle; a JS error for anything else.
const at::Tensor& Lookup(Napi::Env env, const Napi::Value& v);
// Call inside a catch block: rethrows the active exception as a JS error without the C++ backtrace.
[[noreturn]] void Rethrow(Napi::Env env);

// Adds the distributed exports (dist.cc): always present, reporting "not built" when c10d is not compiled in.
void RegisterDist(Napi::Env env, Napi::Object exports);
// Adds `adamwCpu` and `adamwCpuAll` (adamw.cc): the one-pass AdamW update of a float32 CPU parameter, or of
// every parameter in one call; `globalNormCpu`: clip_grad_norm_'s total norm in one call.
void RegisterAdamw(Napi::Env env, Napi::Object exports);
// Adds `dnnlMm` (gemm.cc): float32 GEMM through oneDNN where libtorch ships it as a shared library;
// `recordGemms`, the test hook that records every GEMM's input dtypes; `gemmInfo`, BLAS/oneDNN/threads.
void RegisterGemm(Napi::Env env, Napi::Object exports);
// op(a)·op(b) [+ bias per row] through oneDNN (gemm.cc); an undefined tensor when oneDNN is not there or an
// operand is not a contiguous 2-D float32 CPU tensor.
at::Tensor DnnlGemm(const at::Tensor& a, const at::Tensor& b, bool ta, bool tb, const at::Tensor* bias);
// Sets OpenBLAS's thread count when n > 0 and differs (addon.cc); returns the count before, 0 when the BLAS
// is not OpenBLAS (then nothing is set).
int SetBlasThreads(int n);
// Adds `encoderLayerForward` / `encoderLayerBackward` (layer.cc): a whole encoder layer under libtorch's autograd.
void RegisterLayer(Napi::Env env, Napi::Object exports);

}  // namespace m3
