// Records the ATen operators the process runs (name and input dtypes) between recordOps(true) and
// recordOps(false), through libtorch's RecordFunction callbacks: it sees every dispatcher call, those made
// by the boxed `call` path, by native code (layer.cc's forward) and by libtorch's autograd engine (its
// backward) alike, so tests can check, e.g., that every GEMM of a bf16 step takes bf16 inputs.

// libtorch is built with NDEBUG, and RecordFunction's layout and its inline inputs() depend on it: without it
// here, inputs() reads a debug-only member libtorch never set (and asserts).
#ifndef NDEBUG
#define NDEBUG
#endif

#include "handles.h"

#include <ATen/record_function.h>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace m3 {
namespace {

std::mutex g_mu;
std::vector<std::pair<std::string, std::vector<int>>> g_ops;  // name, input dtype codes (-1: not a tensor)
bool g_on = false;
at::CallbackHandle g_handle = 0;

std::unique_ptr<at::ObserverContext> OnOp(const at::RecordFunction& fn) {
  std::vector<int> dtypes;
  for (const c10::IValue& v : fn.inputs()) dtypes.push_back(v.isTensor() && v.toTensor().defined() ? static_cast<int>(v.toTensor().scalar_type()) : -1);
  std::lock_guard<std::mutex> lock(g_mu);
  g_ops.emplace_back(fn.name(), std::move(dtypes));
  return nullptr;
}

// recordOps(true): starts recording (clearing what was recorded); recordOps(false) -> [[name, ...dtype codes]]
// of the operators run since, and stops.
Napi::Value RecordOps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool start = info[0].ToBoolean().Value();
  if (start) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_ops.clear();
    if (!g_on) g_handle = at::addGlobalCallback(at::RecordFunctionCallback(OnOp).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
    g_on = true;
    return env.Undefined();
  }
  if (g_on) at::removeCallback(g_handle);
  g_on = false;
  std::lock_guard<std::mutex> lock(g_mu);
  Napi::Array out = Napi::Array::New(env, g_ops.size());
  for (size_t i = 0; i < g_ops.size(); ++i) {
    Napi::Array row = Napi::Array::New(env, g_ops[i].second.size() + 1);
    row.Set(0u, Napi::String::New(env, g_ops[i].first));
    for (size_t j = 0; j < g_ops[i].second.size(); ++j) row.Set(static_cast<uint32_t>(j + 1), Napi::Number::New(env, g_ops[i].second[j]));
    out.Set(static_cast<uint32_t>(i), row);
  }
  g_ops.clear();
  return out;
}

}  // namespace

void RegisterRecord(Napi::Env env, Napi::Object exports) {
  exports.Set("recordOps", Napi::Function::New(env, RecordOps));
}

}  // namespace m3
