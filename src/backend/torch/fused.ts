/**
 * Fused transformer ops with a native backward, for use when the active backend is `torch`:
 * each is a tf.customGrad over a forward and a backward kernel (kernels/fused.ts). On any other backend
 * they compute the same thing with TF.js composites, so callers need not branch.
 *
 * `torchFusedOps` is src/backend/ops.ts's `Ops` for torch, registered by src/backend/index.ts when the
 * backend loads and used by the model while torch is the active backend.
 */
import * as tf from '@tensorflow/tfjs';
import { AdamWAttrs, compositeLinearCrossEntropy, compositeOps, ENCODER_LAYER_WEIGHTS, EncoderLayerAttrs, EncoderLayerDropout, EncoderLayerWeights, Ops } from '../ops';
import { adamwMany, globalNorm } from './optimizer';

const onTorch = (): boolean => tf.getBackend() === 'torch';

/** tf.customGrad's parameter type (not exported by @tensorflow/tfjs). */
type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

/**
 * The gradient function of a fused op: runs the backward kernel, then frees the op's saved tensors and its
 * output gradient at once. TF.js itself keeps both until the whole backward pass ends, so every activation and
 * every activation gradient of the network would be alive together (PyTorch frees each as it is used). Both
 * are this node's own references (saved tensors are clones; a gradient is consumed by the one node that made
 * its tensor), so the engine's later dispose of them is a no-op.
 */
function freeing(backward: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[]): (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[] {
  return (dy, saved) => {
    const grads = backward(dy, saved);
    tf.dispose([dy, ...saved]);
    return grads;
  };
}

/**
 * LayerNorm over the last axis (biased variance, PyTorch semantics) of x, or of x + residual: the residual
 * sum of a transformer block in the same op, so no Add node keeps both summands until the backward pass.
 */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number, residual?: tf.Tensor): tf.Tensor {
  if (!onTorch()) return compositeOps.layerNorm(x, gamma, beta, eps, residual);
  if (residual) {
    const fusedSum = tf.customGrad(((xx: tf.Tensor, rr: tf.Tensor, g: tf.Tensor, bb: tf.Tensor, save: tf.GradSaveFunc) => {
      const [y, mean, rstd, sum] = tf.engine().runKernel('TorchLayerNorm', { x: xx, residual: rr, gamma: g, beta: bb }, { eps }) as tf.Tensor[];
      save([sum, g, bb, mean, rstd]);
      return {
        value: y,
        gradFunc: freeing((dy, [ss, sg, sb, smean, srstd]) => {
          const [dx, dgamma, dbeta] = tf.engine().runKernel('TorchLayerNormGrad', { dy, x: ss, gamma: sg, beta: sb, mean: smean, rstd: srstd }, {}) as tf.Tensor[];
          return [dx, tf.clone(dx), dgamma, dbeta]; // two tensors: the engine accumulates (and frees) each on its own
        }),
      };
    }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
    return fusedSum(x, residual, gamma, beta);
  }
  // A customGrad per call closes over eps (customGrad passes tensors only); making one is cheap.
  const fused = tf.customGrad(((xx: tf.Tensor, g: tf.Tensor, bb: tf.Tensor, save: tf.GradSaveFunc) => {
    const [y, mean, rstd] = tf.engine().runKernel('TorchLayerNorm', { x: xx, gamma: g, beta: bb }, { eps }) as tf.Tensor[];
    save([xx, g, bb, mean, rstd]);
    return {
      value: y,
      gradFunc: freeing((dy, [sx, sg, sb, smean, srstd]) =>
        tf.engine().runKernel('TorchLayerNormGrad', { dy, x: sx, gamma: sg, beta: sb, mean: smean, rstd: srstd }, {}) as tf.Tensor[]),
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return fused(x, gamma, beta);
}

const geluGrad = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: tf.engine().runKernel('TorchGelu', { x }, {}) as tf.Tensor,
    gradFunc: freeing((dy, [sx]) => [tf.engine().runKernel('TorchGeluGrad', { dy, x: sx }, {}) as tf.Tensor]),
  };
}) as unknown as CustomGradientFunc) as (x: tf.Tensor) => tf.Tensor;

/** Exact (erf) GELU. */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (!onTorch()) return compositeOps.gelu(x);
  return geluGrad(x);
}

/**
 * Multi-head attention softmax(q·kᵀ·scale + mask)·v for q [B, Lq, D], k and v [B, Lk, D] (the projections,
 * heads side by side in D) and an additive mask broadcasting to [B, heads, Lq, Lk], or none; returns
 * [B, Lq, D]. The heads are split and merged inside the kernels (views), so the tape holds one node, not the
 * dozen reshapes and transposes of the composite. No dropout on the probabilities.
 */
export function attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, mask: tf.Tensor | null, scale: number, heads: number): tf.Tensor {
  const attrs = { scale, heads };
  // `saved`: the fused kernel's log-sum-exp or the probabilities (kernels/fused.ts).
  const backward = (dy: tf.Tensor, [sq, sk, sv, so, ss, sm]: tf.Tensor[]) =>
    tf.engine().runKernel('TorchAttentionGrad', { dy, q: sq, k: sk, v: sv, out: so, saved: ss, ...(sm ? { mask: sm } : {}) }, attrs) as tf.Tensor[];
  if (!mask) {
    const unmasked = tf.customGrad(((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, save: tf.GradSaveFunc) => {
      const [out, saved] = tf.engine().runKernel('TorchAttention', { q: qq, k: kk, v: vv }, attrs) as tf.Tensor[];
      save([qq, kk, vv, out, saved]);
      return { value: out, gradFunc: freeing(backward) };
    }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
    return unmasked(q, k, v);
  }
  const masked = tf.customGrad(((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, mm: tf.Tensor, save: tf.GradSaveFunc) => {
    const [out, saved] = tf.engine().runKernel('TorchAttention', { q: qq, k: kk, v: vv, mask: mm }, attrs) as tf.Tensor[];
    save([qq, kk, vv, out, saved, mm]);
    return { value: out, gradFunc: freeing(backward) };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return masked(q, k, v, mask);
}

/**
 * x·Wᵀ + b for x [..., in], W [out, in] (PyTorch's Linear layout), b [out]: one GEMM with the bias fused,
 * forward and backward (kernels/fused.ts `TorchLinear`); leading dimensions are folded inside the kernels.
 */
export function linear(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  const fused = tf.customGrad(((xx: tf.Tensor, w: tf.Tensor, bb: tf.Tensor, save: tf.GradSaveFunc) => {
    // Under bf16 autocast the kernel also returns x's bf16 copy: the backward keeps that instead of x.
    const [y, xLowp] = tf.engine().runKernel('TorchLinear', { x: xx, weight: w, bias: bb }, {}) as tf.Tensor[];
    save([xLowp ?? xx, w]);
    return {
      value: y,
      gradFunc: freeing((dy, [sx, sw]) => tf.engine().runKernel('TorchLinearGrad', { dy, x: sx, weight: sw }, { shape: xx.shape }) as tf.Tensor[]),
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return fused(x, weight, bias);
}

/**
 * −log softmax(logits)[target] per row: logits [N, C], int32 targets [N] → [N]. Rows whose target is
 * `ignoreIndex` give 0 (and no gradient), as PyTorch's cross_entropy with reduction 'none'.
 */
export function softmaxCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D, ignoreIndex = -100): tf.Tensor1D {
  if (targets.dtype !== 'int32') throw new Error('softmaxCrossEntropy: targets must be int32');
  if (!onTorch()) {
    return tf.tidy(() => {
      const [, c] = logits.shape;
      const keep = tf.notEqual(targets, tf.scalar(ignoreIndex, 'int32'));
      const safe = tf.where(keep, targets, tf.zerosLike(targets));
      const picked = tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(safe, c)), -1);
      return tf.mul(tf.neg(picked), tf.cast(keep, 'float32')) as tf.Tensor1D;
    });
  }
  const fused = tf.customGrad(((z: tf.Tensor, t: tf.Tensor, save: tf.GradSaveFunc) => {
    const [loss, logp] = tf.engine().runKernel('TorchSoftmaxCrossEntropy', { logits: z, targets: t }, { ignoreIndex }) as tf.Tensor[];
    save([logp, t]);
    return {
      value: loss,
      gradFunc: freeing((dy, [slogp, st]) => [
        tf.engine().runKernel('TorchSoftmaxCrossEntropyGrad', { dy, logp: slogp, targets: st }, { ignoreIndex }) as tf.Tensor,
        tf.zerosLike(st),
      ]),
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return fused(logits, targets) as tf.Tensor1D;
}

/**
 * −log softmax(x·Wᵀ + b)[target] per row, for x [N, d], W [V, d], b [V] and int32 targets [N] (each in
 * 0..V−1) → [N], without keeping the logits: the MLM head's output projection and its loss in one kernel.
 */
export function linearCrossEntropy(x: tf.Tensor2D, weight: tf.Tensor2D, bias: tf.Tensor1D, targets: tf.Tensor1D): tf.Tensor1D {
  if (!onTorch()) return compositeLinearCrossEntropy(x, weight, bias, targets);
  const fused = tf.customGrad(((xx: tf.Tensor, w: tf.Tensor, bb: tf.Tensor, t: tf.Tensor, save: tf.GradSaveFunc) => {
    const [loss, probs] = tf.engine().runKernel('TorchLinearCrossEntropy', { x: xx, weight: w, bias: bb, targets: t }) as tf.Tensor[];
    save([xx, w, probs, t]);
    return {
      value: loss,
      gradFunc: freeing((dy, [sx, sw, sp, st]) => [
        ...(tf.engine().runKernel('TorchLinearCrossEntropyGrad', { dy, x: sx, weight: sw, probs: sp, targets: st }) as tf.Tensor[]),
        tf.zerosLike(st),
      ]),
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return fused(x, weight, bias, targets) as tf.Tensor1D;
}

/** Whether kernels run now are recorded for gradients (TF.js's own test: a tape, outside another kernel). */
const taping = (): boolean => tf.engine().state.gradientDepth > 0 && tf.engine().state.kernelDepth === 0;

/**
 * A whole encoder layer over one or more batches (kernels/layer.ts): one node on the tape, whose one saved
 * tensor is the context output that owns the layer's libtorch graph. Without a tape (evaluation, encoding) the
 * layer runs without autograd and keeps nothing. Masks and dropout masks are constants (no gradient).
 */
export function encoderLayer(xs: tf.Tensor3D[], weights: EncoderLayerWeights, masks: (tf.Tensor | null)[], dropout: EncoderLayerDropout[], attrs: EncoderLayerAttrs): tf.Tensor3D[] {
  const inputs: Record<string, tf.Tensor> = {};
  xs.forEach((x, i) => {
    inputs[`x${i}`] = x;
    const extra = { mask: masks[i], dropProbs: dropout[i]?.probs, dropAttention: dropout[i]?.attention, dropFfn: dropout[i]?.ffn };
    for (const [name, t] of Object.entries(extra)) if (t) inputs[name + i] = t;
  });
  for (const n of ENCODER_LAYER_WEIGHTS) inputs[n] = weights[n];
  const train = taping();
  const outs = tf.engine().runKernel('TorchEncoderLayer', inputs, { ...attrs, batches: xs.length, train } as never) as tf.Tensor3D[];
  if (!train) return outs;
  outs[0].dispose(); // the context: the tape keeps its own reference (outputsToSave)
  return outs.slice(1);
}

tf.registerGradient({
  kernelName: 'TorchEncoderLayer',
  outputsToSave: [true],
  gradFunc: (dys, saved, attrs) => {
    const [dContext, ...dy] = dys as tf.Tensor[];
    const { batches } = attrs as unknown as { batches: number };
    const grads = tf.engine().runKernel('TorchEncoderLayerGrad', { context: saved[0], ...Object.fromEntries(dy.map((t, i) => [`dy${i}`, t])) }, { batches }) as tf.Tensor[];
    // as `freeing`: the context (and with it the graph) and the output gradients go now, not at the pass's end
    tf.dispose([dContext, ...dy, ...saved]);
    return Object.fromEntries(grads.map((g, i) => [i < batches ? `x${i}` : ENCODER_LAYER_WEIGHTS[i - batches], () => g]));
  },
});

/** AdamW in place (kernels/fused.ts `TorchAdamW`). */
function adamw(param: tf.Tensor, m: tf.Tensor, v: tf.Tensor, grad: tf.Tensor, attrs: AdamWAttrs): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel('TorchAdamW', { param, m, v, grad }, attrs as never) as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/** Drop-in for src/backend/ops.ts's Ops when the torch backend is active. */
export const torchFusedOps: Partial<Ops> = {
  layerNorm, gelu, attention, linear, encoderLayer, adamw, adamwMany, globalNorm, linearCrossEntropy, softmaxCrossEntropy: (logits: tf.Tensor2D, targets: tf.Tensor1D) => softmaxCrossEntropy(logits, targets),
};
