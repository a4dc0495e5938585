/**
 * Fused transformer ops with a native backward, for use when the active backend is `torch`:
 * each is a tf.customGrad over a forward and a backward kernel (kernels/fused.ts). On any other backend
 * they compute the same thing with TF.js composites, so callers need not branch.
 *
 * `torchFusedOps` is src/backend/ops.ts's `Ops` for torch, registered by src/backend/index.ts when the
 * backend loads and used by the model while torch is the active backend.
 */
import * as tf from '@tensorflow/tfjs';
import { AdamWAttrs, compositeLinearCrossEntropy, compositeOps, Ops } from '../ops';
import { adamwMany, globalNorm } from './optimizer';

const onTorch = (): boolean => tf.getBackend() === 'torch';

/** tf.customGrad's parameter type (not exported by @tensorflow/tfjs). */
type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

/** LayerNorm over the last axis (biased variance, PyTorch semantics). */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  if (!onTorch()) return compositeOps.layerNorm(x, gamma, beta, eps);
  // A customGrad per call closes over eps (customGrad passes tensors only); making one is cheap.
  const fused = tf.customGrad(((xx: tf.Tensor, g: tf.Tensor, bb: tf.Tensor, save: tf.GradSaveFunc) => {
    const [y, mean, rstd] = tf.engine().runKernel('TorchLayerNorm', { x: xx, gamma: g, beta: bb }, { eps }) as tf.Tensor[];
    save([xx, g, bb, mean, rstd]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, [sx, sg, sb, smean, srstd]: tf.Tensor[]) =>
        tf.engine().runKernel('TorchLayerNormGrad', { dy, x: sx, gamma: sg, beta: sb, mean: smean, rstd: srstd }, {}) as tf.Tensor[],
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return fused(x, gamma, beta);
}

const geluGrad = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: tf.engine().runKernel('TorchGelu', { x }, {}) as tf.Tensor,
    gradFunc: (dy: tf.Tensor, [sx]: tf.Tensor[]) => tf.engine().runKernel('TorchGeluGrad', { dy, x: sx }, {}) as tf.Tensor,
  };
}) as unknown as CustomGradientFunc) as (x: tf.Tensor) => tf.Tensor;

/** Exact (erf) GELU. */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (!onTorch()) return compositeOps.gelu(x);
  return geluGrad(x);
}

/**
 * softmax(q·kᵀ·scale + mask)·v for q [..., Lq, D], k and v [..., Lk, D], and an additive mask that
 * broadcasts to [..., Lq, Lk] (e.g. [B, 1, 1, Lk]), or none. No dropout on the probabilities.
 */
export function attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, mask: tf.Tensor | null, scale: number): tf.Tensor {
  if (!onTorch()) {
    return tf.tidy(() => {
      const scores = tf.mul(tf.matMul(q, k, false, true), scale);
      return tf.matMul(tf.softmax(mask ? tf.add(scores, mask) : scores), v);
    });
  }
  // `saved`: the fused kernel's log-sum-exp or the probabilities (kernels/fused.ts).
  if (!mask) {
    const unmasked = tf.customGrad(((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, save: tf.GradSaveFunc) => {
      const [out, saved] = tf.engine().runKernel('TorchAttention', { q: qq, k: kk, v: vv }, { scale }) as tf.Tensor[];
      save([qq, kk, vv, out, saved]);
      return {
        value: out,
        gradFunc: (dy: tf.Tensor, [sq, sk, sv, so, ss]: tf.Tensor[]) =>
          tf.engine().runKernel('TorchAttentionGrad', { dy, q: sq, k: sk, v: sv, out: so, saved: ss }, { scale }) as tf.Tensor[],
      };
    }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
    return unmasked(q, k, v);
  }
  const masked = tf.customGrad(((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, mm: tf.Tensor, save: tf.GradSaveFunc) => {
    const [out, saved] = tf.engine().runKernel('TorchAttention', { q: qq, k: kk, v: vv, mask: mm }, { scale }) as tf.Tensor[];
    save([qq, kk, vv, mm, out, saved]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, [sq, sk, sv, sm, so, ss]: tf.Tensor[]) =>
        tf.engine().runKernel('TorchAttentionGrad', { dy, q: sq, k: sk, v: sv, mask: sm, out: so, saved: ss }, { scale }) as tf.Tensor[],
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return masked(q, k, v, mask);
}

/**
 * x·Wᵀ + b for x [..., in], W [out, in] (PyTorch's Linear layout), b [out]: one GEMM with the bias fused,
 * forward and backward (kernels/fused.ts `TorchLinear`).
 */
export function linear(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  const lead = x.shape.slice(0, -1);
  const fused = tf.customGrad(((xx: tf.Tensor, w: tf.Tensor, bb: tf.Tensor, save: tf.GradSaveFunc) => {
    // Under bf16 autocast the kernel also returns x's bf16 copy: the backward keeps that instead of x.
    const [y, xLowp] = tf.engine().runKernel('TorchLinear', { x: xx, weight: w, bias: bb }, {}) as tf.Tensor[];
    save([xLowp ?? xx, w]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, [sx, sw]: tf.Tensor[]) => tf.engine().runKernel('TorchLinearGrad', { dy, x: sx, weight: sw }, {}) as tf.Tensor[],
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return tf.tidy(() => tf.reshape(fused(tf.reshape(x, [-1, x.shape[x.shape.length - 1]]), weight, bias), [...lead, weight.shape[0]]));
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
      gradFunc: (dy: tf.Tensor, [slogp, st]: tf.Tensor[]) => [
        tf.engine().runKernel('TorchSoftmaxCrossEntropyGrad', { dy, logp: slogp, targets: st }, { ignoreIndex }) as tf.Tensor,
        tf.zerosLike(st),
      ],
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
      gradFunc: (dy: tf.Tensor, [sx, sw, sp, st]: tf.Tensor[]) => [
        ...(tf.engine().runKernel('TorchLinearCrossEntropyGrad', { dy, x: sx, weight: sw, probs: sp, targets: st }) as tf.Tensor[]),
        tf.zerosLike(st),
      ],
    };
  }) as unknown as CustomGradientFunc) as (...args: tf.Tensor[]) => tf.Tensor;
  return fused(x, weight, bias, targets) as tf.Tensor1D;
}

/** AdamW in place (kernels/fused.ts `TorchAdamW`). */
function adamw(param: tf.Tensor, m: tf.Tensor, v: tf.Tensor, grad: tf.Tensor, attrs: AdamWAttrs): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel('TorchAdamW', { param, m, v, grad }, attrs as never) as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/** Drop-in for src/backend/ops.ts's Ops when the torch backend is active. */
export const torchFusedOps: Partial<Ops> = {
  layerNorm, gelu, attention, linear, adamw, adamwMany, globalNorm, linearCrossEntropy, softmaxCrossEntropy: (logits: tf.Tensor2D, targets: tf.Tensor1D) => softmaxCrossEntropy(logits, targets),
};
