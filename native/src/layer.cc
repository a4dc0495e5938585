// One BERT / XLM-RoBERTa encoder layer in one call each way (src/backend/torch/kernels/layer.ts), so that
// TF.js's tape holds one node per layer instead of ~25, and the layer's ATen sequence runs here without a
// trip through JS per operator.
//
// The forward runs the layer under libtorch's own autograd (the same at:: functions PyTorch's BertLayer
// calls: linear, attention, dropout by the given masks, residual + layer_norm, gelu), keeps the graph and its
// saved activations in C++, and returns the output and a small "context" tensor that owns the graph: freeing
// that tensor (TF.js disposes it like any saved tensor) frees the graph, so a forward never followed by a
// backward (evaluation, a tidy without gradients) leaks nothing. The backward is torch::autograd::grad for
// the input and the 16 parameters; it frees the graph's saved tensors as it goes (retain_graph = false).
//
// Two operations are autograd Functions of their own, to keep what the TF.js kernels do on the CPU: float32
// linear layers of many rows take oneDNN's sgemm (gemm.cc), and the attention products run on one OpenBLAS
// thread (see src/backend/torch/kernels/fused.ts). Under bf16 autocast the GEMMs take bf16 inputs and
// LayerNorm and softmax run in float32, as torch.autocast does; on CUDA with libtorch >= 2.0 attention
// without probability dropout is at::scaled_dot_product_attention.

#include "handles.h"

#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

namespace m3 {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int kWeights = 16;  // q, k, v, attention output (weight, bias each), LayerNorm, FFN in/out, LayerNorm

// A normal (non-inference) tensor on t's memory, holding t's storage alive: the handle table's tensors are
// made under InferenceMode, and inference tensors cannot be saved for backward. The alias also makes the
// storage look shared (adamw's exclusive() check) while a graph holds it.
at::Tensor Alias(const at::Tensor& t) {
  c10::Storage storage = t.storage();
  return at::from_blob(t.data_ptr(), t.sizes(), t.strides(), [storage](void*) {}, t.options());
}

// x·Wᵀ + b on float32 CPU tensors: oneDNN's sgemm from `minRows` rows on (as TorchLinear), else addmm.
struct LinearFn : public torch::autograd::Function<LinearFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t minRows) {
    const at::Tensor x2 = x.reshape({-1, x.size(-1)});
    at::Tensor y = x2.size(0) >= minRows ? DnnlGemm(x2, w, false, true, &b) : at::Tensor();
    if (!y.defined()) y = at::addmm(b, x2, w.t());
    ctx->save_for_backward({x2, w});
    ctx->saved_data["minRows"] = minRows;
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w.size(0);
    return y.view(shape);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x2 = saved[0], &w = saved[1];
    const bool big = x2.size(0) >= ctx->saved_data["minRows"].toInt();
    const at::Tensor g = grads[0].reshape({-1, w.size(0)}).contiguous();
    at::Tensor dx = big ? DnnlGemm(g, w, false, false, nullptr) : at::Tensor();
    if (!dx.defined()) dx = g.mm(w);
    at::Tensor dw = big ? DnnlGemm(g, x2, true, false, nullptr) : at::Tensor();
    if (!dw.defined()) dw = g.t().mm(x2);
    std::vector<int64_t> shape = grads[0].sizes().vec();
    shape.back() = w.size(1);
    return {dx.view(shape), dw, g.sum(0), at::Tensor()};
  }
};

// Runs f with one OpenBLAS thread on the CPU: the attention's many [L, L] products are too small for two.
template <typename F>
auto OneBlasThread(bool cpu, F f) {
  const int before = cpu ? SetBlasThreads(1) : 0;
  struct Restore {
    int n;
    ~Restore() { if (n > 1) SetBlasThreads(n); }
  } restore{before};
  return f();
}

// What attention takes besides q, k, v (not differentiated).
struct AttentionArgs {
  at::Tensor mask;  // additive, broadcasting to [B, H, Lq, Lk]; undefined = none
  at::Tensor drop;  // dropout keep mask scaled by 1/(1 - p), [B, H, Lq, Lk]; undefined = none
  int64_t heads;
  double scale;
};

// softmax(q·kᵀ·scale + mask)·v per head for q [B, Lq, H·d], k, v [B, Lk, H·d] → [B, Lq, H·d], dropout on the
// probabilities by args.drop. Products in q's type, scores and softmax in float32; keeps the probabilities.
struct AttentionFn : public torch::autograd::Function<AttentionFn> {
  static at::Tensor Split(const at::Tensor& t, int64_t heads) {
    const int64_t b = t.size(0), l = t.size(1), d = t.size(2) / heads;
    return t.view({b, l, heads, d}).permute({0, 2, 1, 3}).reshape({b * heads, l, d});
  }
  static at::Tensor Merge(const at::Tensor& t3, int64_t b, int64_t heads) {
    const int64_t l = t3.size(1), d = t3.size(2);
    return t3.view({b, heads, l, d}).permute({0, 2, 1, 3}).reshape({b, l, heads * d});
  }
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionArgs& a) {
    const int64_t b = q.size(0), lq = q.size(1), lk = k.size(1);
    const at::Tensor q3 = Split(q, a.heads), k3 = Split(k, a.heads), v3 = Split(v, a.heads);
    return OneBlasThread(q.device().is_cpu(), [&] {
      at::Tensor scores = at::bmm(q3, k3.transpose(1, 2)).mul_(a.scale).view({b, a.heads, lq, lk}).to(at::kFloat);
      if (a.mask.defined()) scores = scores + a.mask;
      const at::Tensor probs = at::_softmax(scores, -1, false);
      const at::Tensor kept = a.drop.defined() ? probs * a.drop : probs;
      const at::Tensor out = at::bmm(kept.to(q.scalar_type()).view({b * a.heads, lq, lk}), v3);
      ctx->save_for_backward({q3, k3, v3, probs});
      ctx->saved_data["drop"] = a.drop;
      ctx->saved_data["heads"] = a.heads;
      ctx->saved_data["scale"] = a.scale;
      return Merge(out, b, a.heads);
    });
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q3 = saved[0], &k3 = saved[1], &v3 = saved[2], &probs = saved[3];
    const at::Tensor drop = ctx->saved_data["drop"].toTensor();
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t b = probs.size(0), lq = probs.size(2), lk = probs.size(3);
    const auto low = q3.scalar_type();
    const at::Tensor g3 = Split(grads[0].to(low), heads);
    return OneBlasThread(q3.device().is_cpu(), [&]() -> variable_list {
      const at::Tensor kept = drop.defined() ? probs * drop : probs;
      const at::Tensor dv = at::bmm(kept.to(low).view({-1, lq, lk}).transpose(1, 2), g3);
      at::Tensor dp = at::bmm(g3, v3.transpose(1, 2)).view(probs.sizes()).to(at::kFloat);
      if (drop.defined()) dp = dp * drop;
      const at::Tensor ds = at::_softmax_backward_data(dp, probs, -1, at::kFloat).to(low).view({-1, lq, lk});
      const at::Tensor dq = at::bmm(ds, k3).mul_(scale), dk = at::bmm(ds.transpose(1, 2), q3).mul_(scale);
      return {Merge(dq, b, heads), Merge(dk, b, heads), Merge(dv, b, heads), at::Tensor()};
    });
  }
};

struct LayerOptions {
  double eps;
  int64_t heads;
  int64_t activation;  // 0 gelu (erf), 1 gelu (tanh), 2 relu
  bool bf16;           // autocast: GEMMs on bf16 inputs
  int64_t dnnlMinRows; // 0: at::linear
};

// One batch's extra inputs: additive mask and dropout keep masks (each may be undefined).
struct BatchInputs {
  at::Tensor x, mask, dropProbs, dropAttn, dropFfn;
};

// The layer for one batch: w holds the 16 parameters in src/backend/ops.ts's ENCODER_LAYER_WEIGHTS order,
// `lw` the linear layers' weights and biases as the GEMMs take them (bf16 copies under autocast).
at::Tensor LayerForward(const BatchInputs& in, const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& lw, const LayerOptions& o) {
  const at::Tensor &x = in.x, &mask = in.mask, &dropProbs = in.dropProbs, &dropAttn = in.dropAttn, &dropFfn = in.dropFfn;
  const auto linear = [&](const at::Tensor& t, int i) {
    if (!o.bf16 && o.dnnlMinRows > 0) return LinearFn::apply(t, lw[i], lw[i + 1], o.dnnlMinRows);
    return at::linear(o.bf16 ? t.to(at::kBFloat16) : t, lw[i], lw[i + 1]);
  };
  const auto dropout = [](const at::Tensor& t, const at::Tensor& keep) { return keep.defined() ? t * keep : t; };
  const at::Tensor q = linear(x, 0), k = linear(x, 2), v = linear(x, 4);
  const int64_t d = x.size(2) / o.heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor ctx;
#if TORCH_VERSION_MAJOR >= 2
  if (x.is_cuda() && !dropProbs.defined()) {
    // PyTorch's own fused kernels (flash / memory-efficient), its default scale 1/√d
    const auto heads4 = [&](const at::Tensor& t) { return t.view({t.size(0), t.size(1), o.heads, d}).transpose(1, 2); };
    c10::optional<at::Tensor> bias;
    if (mask.defined()) bias = mask.to(q.scalar_type());
    ctx = at::scaled_dot_product_attention(heads4(q), heads4(k), heads4(v), bias).transpose(1, 2).reshape(x.sizes());
  }
#endif
  if (!ctx.defined()) ctx = AttentionFn::apply(q, k, v, AttentionArgs{mask, dropProbs, o.heads, scale});
  const std::vector<int64_t> hidden{x.size(2)};
  const at::Tensor h = at::layer_norm(dropout(linear(ctx, 6), dropAttn) + x, hidden, w[8], w[9], o.eps);
  const at::Tensor pre = linear(h, 10);
  const at::Tensor act = o.activation == 2 ? at::relu(pre) : at::gelu(pre, o.activation == 1 ? "tanh" : "none");
  return at::layer_norm(dropout(linear(act, 12), dropFfn) + h, hidden, w[14], w[15], o.eps);
}

// The linear layers' parameters as the GEMMs take them: under autocast bf16 copies, made once per call (the
// cast is part of the graph, so their gradients reach the float32 parameters); LayerNorm's stay float32.
std::vector<at::Tensor> GemmWeights(const std::vector<at::Tensor>& w, const LayerOptions& o) {
  std::vector<at::Tensor> lw(w);
  if (o.bf16) {
    for (int i : {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13}) lw[i] = w[i].to(at::kBFloat16);
  }
  return lw;
}

// The graph of one forward: its outputs (with grad_fn) and the leaves it differentiates against. The
// context tensor's memory is `token`; its deleter deletes the Graph.
struct Graph {
  int32_t token = 0;
  std::vector<at::Tensor> ys;
  std::vector<at::Tensor> leaves;  // the batches' inputs, then the 16 parameters
};
std::mutex g_graphsMu;  // the deleter may run on whichever thread frees the last reference
std::unordered_set<Graph*> g_graphs;

at::Tensor OptionalAt(Napi::Env env, const Napi::Array& a, uint32_t i) {
  if (i >= a.Length()) return at::Tensor();
  const Napi::Value v = a.Get(i);
  return v.IsNull() || v.IsUndefined() ? at::Tensor() : Lookup(env, v);
}

// While alive, counts each outermost ATen operator this thread dispatches into the addon's ATen-call counter
// (handles.h): the layer's own at:: calls and, in the backward, those of autograd's nodes — the same unit as
// the boxed `call` path counts (one per operator the addon asks for, not the operators ATen runs inside it).
// Off unless setLayerAtenCounting(true): the hook makes every ATen call build a RecordFunction, which slows
// a step (the bench counts in an untimed step).
std::atomic<bool> g_countLayerAten{false};
class CountOuterAten {
 public:
  CountOuterAten() : handle_(g_countLayerAten ? at::addThreadLocalCallback(at::RecordFunctionCallback(&Start, &End).scopes({at::RecordScope::FUNCTION})) : 0) {}
  ~CountOuterAten() {
    if (handle_) at::removeCallback(handle_);
  }

 private:
  static thread_local int depth_;
  static std::unique_ptr<at::ObserverContext> Start(const at::RecordFunction&) {
    if (depth_++ == 0) CountAten();
    return nullptr;
  }
  static void End(const at::RecordFunction&, at::ObserverContext*) { --depth_; }
  at::CallbackHandle handle_;
};
thread_local int CountOuterAten::depth_ = 0;

// encoderLayerForward(xs[], weights[16], masks[], dropProbs[], dropAttention[], dropFfn[], {eps, heads,
// activation, bf16, dnnlMinRows, train}): several batches through the same layer (entries of the optional
// arrays are null or absent where a batch has none) -> [context, ...ys] when train, else ys (computed without
// autograd). The parameters' gradients of all batches are summed inside the backward.
Napi::Value EncoderLayerForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    CountOuterAten counting;
    Napi::Array xa = info[0].As<Napi::Array>(), wa = info[1].As<Napi::Array>();
    if (wa.Length() != kWeights) throw Napi::Error::New(env, "encoderLayerForward: expected 16 weights");
    Napi::Object oo = info[6].As<Napi::Object>();
    const LayerOptions o{oo.Get("eps").As<Napi::Number>().DoubleValue(), oo.Get("heads").As<Napi::Number>().Int64Value(),
                         oo.Get("activation").As<Napi::Number>().Int64Value(), oo.Get("bf16").ToBoolean().Value(),
                         oo.Get("dnnlMinRows").As<Napi::Number>().Int64Value()};
    const bool train = oo.Get("train").ToBoolean().Value();
    std::vector<BatchInputs> batches;
    for (uint32_t i = 0; i < xa.Length(); ++i) {
      BatchInputs in{Lookup(env, xa.Get(i)), OptionalAt(env, info[2].As<Napi::Array>(), i), OptionalAt(env, info[3].As<Napi::Array>(), i),
                     OptionalAt(env, info[4].As<Napi::Array>(), i), OptionalAt(env, info[5].As<Napi::Array>(), i)};
      if (in.x.dim() != 3 || in.x.size(2) % o.heads != 0) throw Napi::Error::New(env, "encoderLayerForward: x must be [B, L, hidden] with hidden divisible by heads");
      batches.push_back(std::move(in));
    }
    std::vector<at::Tensor> w;
    for (uint32_t i = 0; i < kWeights; ++i) w.push_back(Lookup(env, wa.Get(i)));
    std::vector<at::Tensor> ys;
    std::unique_ptr<Graph> graph;
    if (!train) {
      c10::InferenceMode guard;
      const std::vector<at::Tensor> lw = GemmWeights(w, o);
      for (const BatchInputs& in : batches) ys.push_back(LayerForward(in, w, lw, o));
    } else {
      graph = std::make_unique<Graph>();
      for (BatchInputs& in : batches) {
        in.x = Alias(in.x).requires_grad_(true);
        graph->leaves.push_back(in.x);
        for (at::Tensor* t : {&in.mask, &in.dropProbs, &in.dropAttn, &in.dropFfn}) {
          if (t->defined()) *t = Alias(*t);
        }
      }
      for (at::Tensor& t : w) {
        t = Alias(t).requires_grad_(true);
        graph->leaves.push_back(t);
      }
      at::AutoGradMode grad(true);
      const std::vector<at::Tensor> lw = GemmWeights(w, o);
      for (const BatchInputs& in : batches) graph->ys.push_back(LayerForward(in, w, lw, o));
      for (const at::Tensor& y : graph->ys) ys.push_back(y.detach());  // TF.js's tensors must not hold the graph
    }
    Napi::Array out = Napi::Array::New(env, ys.size() + (train ? 1 : 0));
    uint32_t k = 0;
    if (train) {
      Graph* g = graph.release();
      {
        std::lock_guard<std::mutex> lock(g_graphsMu);
        g_graphs.insert(g);
      }
      at::Tensor context = at::from_blob(&g->token, {1}, [g](void*) {
        {
          std::lock_guard<std::mutex> lock(g_graphsMu);
          g_graphs.erase(g);
        }
        delete g;
      }, at::TensorOptions().dtype(at::kInt));
      out.Set(k++, Napi::Number::New(env, Store(std::move(context))));
    }
    for (at::Tensor& y : ys) out.Set(k++, Napi::Number::New(env, Store(std::move(y))));
    return out;
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    Rethrow(env);
  }
}

// encoderLayerBackward(context, dys[]) -> [...dxs, ...dW (16)]; the graph's saved tensors are freed on the way.
Napi::Value EncoderLayerBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    CountOuterAten counting;
    const at::Tensor& context = Lookup(env, info[0]);
    Graph* g = reinterpret_cast<Graph*>(context.data_ptr());
    {
      std::lock_guard<std::mutex> lock(g_graphsMu);
      if (!g_graphs.count(g)) throw Napi::Error::New(env, "encoderLayerBackward: not an encoder layer's context");
    }
    if (g->ys.empty()) throw Napi::Error::New(env, "encoderLayerBackward: this layer's backward already ran");
    Napi::Array da = info[1].As<Napi::Array>();
    if (da.Length() != g->ys.size()) throw Napi::Error::New(env, "encoderLayerBackward: one gradient per output expected");
    std::vector<at::Tensor> dys;
    for (uint32_t i = 0; i < da.Length(); ++i) dys.push_back(Alias(Lookup(env, da.Get(i))).to(g->ys[i].scalar_type()));
    variable_list grads;
    {
      at::AutoGradMode grad(true);
      grads = torch::autograd::grad(g->ys, g->leaves, dys, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/false);
    }
    g->ys.clear();
    g->leaves.clear();
    Napi::Array out = Napi::Array::New(env, grads.size());
    for (size_t i = 0; i < grads.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, Store(grads[i])));
    return out;
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    Rethrow(env);
  }
}

// setLayerAtenCounting(on): whether the layer's forward and backward add their ATen calls to atenCalls().
Napi::Value SetLayerAtenCounting(const Napi::CallbackInfo& info) {
  g_countLayerAten = info[0].ToBoolean().Value();
  return info.Env().Undefined();
}

// encoderLayerGraphs() -> how many layer graphs are alive (tests check that none outlives its use).
Napi::Value EncoderLayerGraphs(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_graphsMu);
  return Napi::Number::New(info.Env(), static_cast<double>(g_graphs.size()));
}

}  // namespace

void RegisterLayer(Napi::Env env, Napi::Object exports) {
  exports.Set("encoderLayerForward", Napi::Function::New(env, EncoderLayerForward));
  exports.Set("encoderLayerBackward", Napi::Function::New(env, EncoderLayerBackward));
  exports.Set("encoderLayerGraphs", Napi::Function::New(env, EncoderLayerGraphs));
  exports.Set("setLayerAtenCounting", Napi::Function::New(env, SetLayerAtenCounting));
}

}  // namespace m3
