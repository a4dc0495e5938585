/**
 * The transformer's building blocks as TF.js compositions. A backend with fused kernels (torch) registers
 * replacements through `setFusedOps`, used while that backend is active; every replacement is checked
 * against these composites in tests.
 */
import * as tf from '@tensorflow/tfjs';

/** torch.finfo(float32).min: the additive mask value (HF) and the masked-logit fill (FlagEmbedding) of "never". */
export const FLOAT32_MIN = -3.4028234663852886e38;

export interface Ops {
  /** LayerNorm over the last axis, PyTorch semantics (biased variance), of x or of x + residual. */
  layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number, residual?: tf.Tensor): tf.Tensor;
  /** Exact GELU: x·Φ(x) with the erf form, as PyTorch's default `gelu`. */
  gelu(x: tf.Tensor): tf.Tensor;
  /** x·Wᵀ + b (W in PyTorch's [out, in] layout) as one GEMM with the bias fused; absent = composite. */
  linear?(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor;
  /**
   * Multi-head softmax(q·kᵀ·scale + mask)·v in one op for q [B, Lq, D], k/v [B, Lk, D] with `heads` heads side
   * by side in D, → [B, Lq, D] (no dropout; null mask = none); absent = composite.
   */
  attention?(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, mask: tf.Tensor | null, scale: number, heads: number): tf.Tensor;
  /**
   * A whole BERT / XLM-R encoder layer (self-attention, output projection, residual LayerNorm, FFN, residual
   * LayerNorm) as one node each way, for one or more batches xs[i] [Bᵢ, Lᵢ, hidden] with their masks and
   * dropout masks (the parameters' gradients of all batches summed inside); absent = composite (src/model/encoder.ts).
   */
  encoderLayer?(xs: tf.Tensor3D[], weights: EncoderLayerWeights, masks: (tf.Tensor | null)[], dropout: EncoderLayerDropout[], attrs: EncoderLayerAttrs): tf.Tensor3D[];
  /** −log softmax(logits)[target] per row in one kernel; absent = composite. */
  softmaxCrossEntropy?(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Tensor1D;
  /** −log softmax(x·Wᵀ + b)[target] per row (targets in range), the logits never kept; absent = composite. */
  linearCrossEntropy?(x: tf.Tensor2D, weight: tf.Tensor2D, bias: tf.Tensor1D, targets: tf.Tensor1D): tf.Tensor1D;
  /**
   * One AdamW update in one kernel, the composite of src/train/adamw.ts op for op: returns the new
   * [param, m, v], each written into its input's memory where nothing else shares it; absent = composite.
   */
  adamw?(param: tf.Tensor, m: tf.Tensor, v: tf.Tensor, grad: tf.Tensor, attrs: AdamWAttrs): [tf.Tensor, tf.Tensor, tf.Tensor];
  /**
   * One AdamW update of many parameters in place in one multi-tensor kernel (same update up to rounding);
   * false when it cannot (then nothing was updated and `adamw` runs per parameter); absent = per parameter.
   */
  adamwMany?(groups: AdamWGroup[], step: number, hp: { beta1: number; beta2: number; lr: number; eps: number }): boolean;
  /** √(Σ‖tᵢ‖²) over many tensors without a squared copy of any, or null when it cannot; absent = squares summed per tensor. */
  globalNorm?(tensors: tf.Tensor[]): tf.Scalar | null;
}

/** An encoder layer's parameters by their HF names under `encoder.layer.N.`, in the fused kernel's order. */
export const ENCODER_LAYER_WEIGHTS = [
  'attention.self.query.weight', 'attention.self.query.bias', 'attention.self.key.weight', 'attention.self.key.bias',
  'attention.self.value.weight', 'attention.self.value.bias', 'attention.output.dense.weight', 'attention.output.dense.bias',
  'attention.output.LayerNorm.weight', 'attention.output.LayerNorm.bias', 'intermediate.dense.weight', 'intermediate.dense.bias',
  'output.dense.weight', 'output.dense.bias', 'output.LayerNorm.weight', 'output.LayerNorm.bias',
] as const;
export type EncoderLayerWeights = Record<(typeof ENCODER_LAYER_WEIGHTS)[number], tf.Tensor>;

/**
 * An encoder layer's dropout keep masks, already scaled by 1/(1 − rate) (null = no dropout there): on the
 * attention probabilities [B, heads, L, L], on the attention output and on the FFN output [B, L, hidden].
 */
export interface EncoderLayerDropout { probs: tf.Tensor | null; attention: tf.Tensor | null; ffn: tf.Tensor | null }

/** An encoder layer's scalars: LayerNorm ε, attention heads, FFN activation. */
export interface EncoderLayerAttrs { eps: number; heads: number; activation: 'gelu' | 'gelu_tanh' | 'relu' }

/** Parameters that share a weight decay (not lr-scaled), with their moments and gradients. */
export interface AdamWGroup { weightDecay: number; items: { param: tf.Tensor; m: tf.Tensor; v: tf.Tensor; grad: tf.Tensor }[] }

/** One AdamW update's scalars: lr-scaled decay (0 for no-decay parameters) and the bias corrections. */
export interface AdamWAttrs { beta1: number; beta2: number; lr: number; eps: number; decay: number; bc1: number; bc2Sqrt: number }

export const compositeOps: Ops = {
  layerNorm(x, gamma, beta, eps, residual) {
    return tf.tidy(() => {
      const s = residual ? tf.add(x, residual) : x;
      const centered = tf.sub(s, tf.mean(s, -1, true));
      const variance = tf.mean(tf.square(centered), -1, true);
      return tf.add(tf.mul(tf.mul(centered, tf.rsqrt(tf.add(variance, eps))), gamma), beta);
    });
  },
  gelu(x) {
    return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)));
  },
};

/** The composite of `linearCrossEntropy`: logits, log-softmax, the target entries (a flat gather, no one-hot). */
export function compositeLinearCrossEntropy(x: tf.Tensor2D, weight: tf.Tensor2D, bias: tf.Tensor1D, targets: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => {
    const logp = tf.logSoftmax(tf.add(tf.matMul(x, weight, false, true), bias));
    const [n, v] = logp.shape;
    const flat = tf.add(tf.mul(tf.range(0, n, 1, 'int32'), tf.scalar(v, 'int32')), targets);
    return tf.neg(tf.gather(tf.reshape(logp, [n * v]), flat)) as tf.Tensor1D;
  });
}

let fused: Ops = compositeOps;
let fusedBackend: string | null = null;
/** The ops for the active backend: its fused kernels where it registered some, else the composites. */
export const ops = (): Ops => (fusedBackend !== null && tf.getBackend() === fusedBackend ? fused : compositeOps);
export function setFusedOps(backend: string, partial: Partial<Ops>): void {
  fused = { ...compositeOps, ...partial };
  fusedBackend = backend;
}

/** GELU with tanh approximation (configs that say gelu_new / gelu_pytorch_tanh). */
export function geluTanh(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
    return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
  });
}

/** y = x·Wᵀ + b with PyTorch's Linear layout (W is [out, in]); x may have any leading shape. */
export function linear(x: tf.Tensor, weight: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
  const fused = ops().linear;
  if (fused && bias) return fused(x, weight, bias);
  return tf.tidy(() => {
    const inDim = x.shape[x.shape.length - 1];
    const lead = x.shape.slice(0, -1);
    let y = tf.matMul(tf.reshape(x, [-1, inDim]) as tf.Tensor2D, weight as tf.Tensor2D, false, true) as tf.Tensor;
    if (bias) y = tf.add(y, bias);
    return tf.reshape(y, [...lead, weight.shape[0]]);
  });
}

/** x / sqrt(max(Σx², eps²)) over the last axis: zero rows stay zero with finite gradients. */
export function l2Normalize(x: tf.Tensor, eps = 1e-12): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.rsqrt(tf.maximum(tf.sum(tf.square(x), -1, true), eps * eps))));
}
