/**
 * Fused kernels for the transformer's hot paths, each a forward kernel and its backward kernel over
 * libtorch's own implementations (the ones PyTorch's autograd calls). ../fused.ts wraps each pair in
 * tf.customGrad. Forward kernels also return what the backward needs (LayerNorm's mean and 1/σ, the
 * attention probabilities, the log-probabilities) so TF.js owns their lifetime like any saved tensor.
 */
import * as tf from '@tensorflow/tfjs';
import { addon } from '../addon';
import { aten, Handle } from '../aten';
import { kernel } from '../registry';
import { code, lowp, paramLowp, reshape, scoped, sizeOf, toDtype } from './util';

const nativeLayerNorm = aten('native_layer_norm');
const addTensor = aten('add.Tensor');
const nativeLayerNormBackward = aten('native_layer_norm_backward');
// With a `residual`, of x + residual, and the sum is returned too (the backward's input).
kernel('TorchLayerNorm', ({ x, residual, gamma, beta }, b, { eps }) => {
  const normalized = [x.shape[x.shape.length - 1]];
  const sum = residual ? addTensor(b.h(x), b.h(residual), 1) as Handle : b.h(x);
  const [y, mean, rstd] = nativeLayerNorm(sum, normalized, b.h(gamma), b.h(beta), eps) as Handle[];
  const outs = [b.out(y, 'float32'), b.out(mean, 'float32'), b.out(rstd, 'float32')];
  return residual ? [...outs, b.out(sum, 'float32')] : outs;
});
kernel('TorchLayerNormGrad', ({ dy, x, gamma, beta, mean, rstd }, b) => {
  const normalized = [x.shape[x.shape.length - 1]];
  // ATen sizes the bias gradient from `bias`, so it must be passed although its values are not used.
  const [dx, dgamma, dbeta] = nativeLayerNormBackward(b.h(dy), b.h(x), normalized, b.h(mean), b.h(rstd), b.h(gamma), b.h(beta), [true, true, true]) as Handle[];
  return [b.out(dx, 'float32'), b.out(dgamma, 'float32'), b.out(dbeta, 'float32')];
});

const gelu = aten('gelu');
const geluBackward = aten('gelu_backward');
kernel('TorchGelu', ({ x }, b) => b.out(gelu(b.h(x), 'none'), 'float32'));
// The gradient takes x's type (bf16 under autocast), as autograd does: dy may arrive in float32.
kernel('TorchGeluGrad', ({ dy, x }, b) =>
  scoped((tmp) => {
    const g = b.isBf16(dy) === b.isBf16(x) ? b.h(dy) : tmp(toDtype(b.h(dy), code(b.isBf16(x) ? 'bfloat16' : 'float32')));
    return b.out(geluBackward(g, b.h(x), 'none'), 'float32');
  }),
);

// Linear layer y = x·Wᵀ + b for x [N, in], W [out, in], b [out]: one GEMM with the bias fused (addmm), as
// torch.nn.functional.linear. Under bf16 autocast x, W and b enter in bf16 and y stays bf16; the forward then
// also returns x's bf16 copy, which the backward keeps instead of x (what torch.autocast saves).
const addmm = aten('addmm');
const mm = aten('mm');
const transpose = aten('transpose.int');
const sumDims = aten('sum.dim_IntList');
const view = aten('view');
// On the CPU in float32, layers of DNNL_MIN_ROWS rows and more take oneDNN's sgemm (native/src/gemm.cc) where
// the process has it: twice OpenBLAS's rate at thousands of rows on AVX-512, no better below a few hundred.
export const DNNL_MIN_ROWS = 512;
const dnnlMm = (b: Backend, rows: number, a: Handle, m: Handle, ta: boolean, tb: boolean, bias?: Handle): Handle | null =>
  b.device === 'cpu' && !b.autocast && rows >= DNNL_MIN_ROWS ? addon().dnnlMm(a, m, ta, tb, bias ?? null) : null;
kernel('TorchLinear', ({ x, weight, bias }, b) =>
  scoped((tmp) => {
    const xl = lowp(x, b, tmp);
    const x2 = x.shape.length === 2 ? xl : tmp(reshape(xl, [-1, x.shape[x.shape.length - 1]]));
    const rows = sizeOf(x.shape.slice(0, -1));
    const y2 = dnnlMm(b, rows, x2, b.h(weight), false, true, b.h(bias))
      ?? addmm(paramLowp(bias, b), x2, tmp(transpose(paramLowp(weight, b), 0, 1)));
    const y = b.out(x.shape.length === 2 ? y2 : view(tmp(y2), [...x.shape.slice(0, -1), weight.shape[0]]), 'float32');
    if (!b.autocast || b.isBf16(x)) return [y];
    // xl is a temporary of this scope: hand TF.js its own handle on the same tensor.
    return [y, b.out(aten('alias')(xl), 'float32')];
  }),
);
// dx = dy·W, dW = dyᵀ·x, db = Σ dy over rows; under autocast the products run in bf16, dx stays bf16 and the
// parameters' gradients dW, db come back in float32.
// `shape`: x's shape (leading dimensions folded into rows here, unfolded for dx).
kernel('TorchLinearGrad', ({ dy, x, weight }, b, { shape }) =>
  scoped((tmp) => {
    const rows = (h: Handle, width: number) => (shape.length === 2 ? h : tmp(reshape(h, [-1, width])));
    const out = weight.shape[0];
    const g = rows(lowp(dy, b, tmp), out);
    const n = sizeOf(shape.slice(0, -1));
    const dx2 = dnnlMm(b, n, g, b.h(weight), false, false) ?? mm(g, paramLowp(weight, b));
    const dx = b.out(shape.length === 2 ? dx2 : view(tmp(dx2), shape), 'float32');
    const x2 = rows(lowp(x, b, tmp), weight.shape[1]);
    const dwLowp = dnnlMm(b, n, g, x2, true, false) ?? mm(tmp(transpose(g, 0, 1)), x2);
    const dw = b.out(b.autocast ? toDtype(tmp(dwLowp), code('float32')) : dwLowp, 'float32');
    const db = b.out(sumDims(rows(b.h(dy), out), [0], false, code('float32')), 'float32');
    return [dx, dw, db];
  }),
);

// Attention: out = softmax(q·kᵀ·scale + mask)·v per head, for q [B, Lq, H·D], k/v [B, Lk, H·D] (split into
// heads here, as views) and an optional additive mask broadcasting to [B, H, Lq, Lk]; out is [B, Lq, H·D]. On CUDA with libtorch ≥ 2.0 it is a fused kernel with its own
// backward, as F.scaled_dot_product_attention picks: flash attention for an unmasked bf16 input, else the
// memory-efficient kernel (with the mask as its bias); both keep the log-sum-exp instead of the [Lq, Lk]
// probabilities. Elsewhere (CPU, Debian's libtorch 1.13) the probabilities are computed and kept. The
// forward returns [out, saved]: the log-sum-exp (fused) or the probabilities.
const bmm = aten('bmm');
const mulScalar = aten('mul.Scalar');
const softmax = aten('_softmax');
const softmaxBackward = aten('_softmax_backward_data');
const sumToSize = aten('sum_to_size');
const efficientForward = aten('_scaled_dot_product_efficient_attention');
const efficientBackward = aten('_scaled_dot_product_efficient_attention_backward');
const flashForward = aten('_scaled_dot_product_flash_attention');
const flashBackward = aten('_scaled_dot_product_flash_attention_backward');
const padNd = aten('constant_pad_nd');
const sliceT = aten('slice.Tensor');
const expand = aten('expand');
const emptyT = aten('empty.memory_format');
const contiguous = aten('contiguous');
const randn = aten('randn');
const permute = aten('permute');

/** [B, L, H·D] → [B, H, L, D], a view. */
const splitHeads = (h: Handle, info: tf.TensorInfo, heads: number, tmp: Tmp): Handle =>
  tmp(permute(tmp(view(h, [info.shape[0], info.shape[1], heads, info.shape[2] / heads])), [0, 2, 1, 3]));
/**
 * [B, H, L, D] (splitHeads' view) → [B·H, L, D], copied once: bmm takes a single batch stride, and at::matmul
 * given the 4-D view copies it inside every product instead (the CPU attention's products ran 2–3× slower).
 */
const batched = (h: Handle, tmp: Tmp): Handle => {
  const [, bsz, heads, len, d] = addon().meta(h);
  return tmp(reshape(h, [bsz * heads, len, d]));
};
/**
 * `f` with one OpenBLAS thread on the CPU (then the count before): the CPU attention's many [L, L] products
 * are too small for two, which synchronise per matrix and then spin, slowing the oneDNN GEMMs that follow.
 */
const oneBlasThread = <T>(b: Backend, f: () => T): T => {
  const before = b.device === 'cpu' ? addon().blasThreads(1) : 0;
  try {
    return f();
  } finally {
    if (before > 1) addon().blasThreads(before);
  }
};
/** The [B, H, L, D] shape of a [B, L, H·D] input's heads. */
const qh4 = (t: tf.TensorInfo, heads: number): number[] => [t.shape[0], heads, t.shape[1], t.shape[2] / heads];
/** [B, H, L, D] → [B, L, H·D] (a view when the memory is [B, L, H, D] already, as the fused kernels write it). */
const mergeHeads = (h: Handle, tmp: Tmp): Handle => {
  const [, bsz, heads, len, d] = addon().meta(h);
  return reshape(tmp(permute(h, [0, 2, 1, 3])), [bsz, len, heads * d]);
};

type Backend = Parameters<typeof lowp>[1];
type Tmp = (h: Handle) => Handle;
/** Which fused kernels work here, decided on first use (null: not tried yet). */
const works: { efficient: boolean | null; flash: boolean | null } = { efficient: null, flash: null };
/** The attention kernels in use, for reports and benchmarks. */
export const attentionKernelInfo = (): string =>
  [works.flash && 'flash', works.efficient && 'memory-efficient'].filter(Boolean).join(' + ') || 'softmax(q·kᵀ)·v';

function unavailable(which: string, e: unknown): void {
  process.stderr.write(`torch backend: ${which} attention unavailable (${(e as Error).message.split('\n')[0]}); using another kernel\n`);
}

/**
 * The additive mask as the fused kernel takes it: q's type, expanded to [B, H, Lq, Lk], and rows whose
 * length is not a multiple of 16 padded in memory (then sliced back), as PyTorch's preprocess_mask does.
 */
function sdpaBias(mask: Handle, shape: number[], dtypeCode: number, tmp: Tmp): Handle {
  const lk = shape[3];
  let m = tmp(toDtype(mask, dtypeCode));
  if (lk % 16 !== 0) m = tmp(sliceT(tmp(padNd(m, [0, 16 - (lk % 16)], 0)), -1, 0, lk, 1));
  return tmp(expand(m, shape, false));
}

// Flash attention's forward and backward ([out, logsumexp] and [dq, dk, dv]); philox tensors are unused
// without dropout, the cumulative sequence lengths are undefined for dense batches.
function flash(qh: Handle, kh: Handle, vh: Handle, scale: number, tmp: Tmp): [Handle, Handle] {
  const r = flashForward(qh, kh, vh, 0, false, false, scale) as (Handle | number | null)[];
  for (const h of [r[2], r[3], r[6], r[7], r[8]]) if (typeof h === 'number' && h > 0) tmp(h);
  return [r[0] as Handle, r[1] as Handle];
}
function flashGrad(g: Handle, qh: Handle, kh: Handle, vh: Handle, out: Handle, lse: Handle, lq: number, lk: number, scale: number, b: Backend, tmp: Tmp): Handle[] {
  const none = tmp(emptyT([0], code('int64'), null, b.device, null, null));
  return flashBackward(tmp(contiguous(g, 0)), qh, kh, vh, out, lse, null, null, lq, lk, 0, false, none, none, scale) as Handle[];
}

/** Flash needs bf16/fp16 and a supported head size: one tiny forward and backward says whether it runs here. */
function flashWorks(b: Backend, d: number): boolean {
  if (works.flash !== null) return works.flash;
  try {
    scoped((tmp) => {
      const t = () => tmp(randn([1, 1, 16, d], code('bfloat16'), null, b.device, null));
      const [q, k, v] = [t(), t(), t()];
      const [out, lse] = flash(q, k, v, 0.125, tmp).map(tmp);
      flashGrad(q, q, k, v, out, lse, 16, 16, 0.125, b, tmp).forEach(tmp);
    });
    works.flash = true;
  } catch (e) {
    unavailable('flash', e);
    works.flash = false;
  }
  return works.flash;
}

/** Flash runs for an unmasked bf16 input (autocast); the memory-efficient kernel for the rest. */
const useFlash = (b: Backend, mask: tf.TensorInfo | undefined, headDim: number): boolean =>
  !mask && b.autocast && flashWorks(b, headDim);

kernel('TorchAttention', ({ q, k, v, mask }, b, { scale, heads }) =>
  scoped((tmp) => {
    const [qh, kh, vh] = [q, k, v].map((t) => splitHeads(lowp(t, b, tmp), t, heads, tmp));
    const lq = q.shape[1];
    const lk = k.shape[1];
    if (b.device === 'cuda' && useFlash(b, mask, q.shape[2] / heads)) {
      const [out, lse] = flash(qh, kh, vh, scale, tmp);
      return [b.out(mergeHeads(tmp(out), tmp), 'float32'), b.out(lse, 'float32')];
    }
    if (b.device === 'cuda' && works.efficient !== false) {
      try {
        const bias = mask ? sdpaBias(b.h(mask), [q.shape[0], heads, lq, lk], code(b.autocast ? 'bfloat16' : 'float32'), tmp) : null;
        const [out, lse, seed, offset] = efficientForward(qh, kh, vh, bias, true, 0, false, scale) as Handle[];
        tmp(seed);
        tmp(offset);
        works.efficient = true;
        return [b.out(mergeHeads(tmp(out), tmp), 'float32'), b.out(lse, 'float32')];
      } catch (e) {
        // libtorch < 2.0 has no such operator; a shape the kernel refuses takes the composite path below.
        if (works.efficient === null) {
          unavailable('memory-efficient', e);
          works.efficient = false;
        }
      }
    }
    // Scores and softmax in float32 (a bf16 product is widened by the float32 mask), the products in q's type.
    return oneBlasThread(b, () => {
      const [q3, k3, v3] = [qh, kh, vh].map((h) => batched(h, tmp));
      const scores3 = tmp(mulScalar(tmp(bmm(q3, tmp(transpose(k3, 1, 2)))), scale));
      let scores = tmp(view(scores3, [q.shape[0], heads, lq, lk]));
      if (mask) scores = tmp(addTensor(scores, b.h(mask)));
      else if (b.autocast) scores = tmp(toDtype(scores, code('float32')));
      const probs = softmax(scores, -1, false);
      const pv = b.autocast ? tmp(toDtype(probs, code('bfloat16'))) : probs;
      const out = tmp(bmm(tmp(view(pv, [-1, lq, lk])), v3));
      return [b.out(mergeHeads(tmp(view(out, qh4(q, heads))), tmp), 'float32'), b.out(probs, 'float32')];
    });
  }),
);
// `saved` is what the forward returned beside `out`: the log-sum-exp [B, H, Lq'] (fused) or the float32
// probabilities [B, H, Lq, Lk]. Returns [dq, dk, dv], and the mask's gradient when there is a mask.
kernel('TorchAttentionGrad', ({ dy, q, k, v, mask, out, saved }, b, { scale, heads }) =>
  scoped((tmp) => {
    const [g, qh, kh, vh, oh] = [dy, q, k, v, out].map((t) => splitHeads(lowp(t, b, tmp), t, heads, tmp));
    const merged = (h: Handle) => b.out(mergeHeads(tmp(h), tmp), 'float32');
    const maskGrad = (h: Handle | null) => (mask ? [b.out(h ?? aten('zeros')(mask.shape, code('float32'), null, b.device), 'float32')] : []);
    if (saved.shape.length === 3) { // the fused kernels' log-sum-exp [B, H, Lq']
      if (useFlash(b, mask, q.shape[2] / heads)) {
        const [dq, dk, dv] = flashGrad(g, qh, kh, vh, oh, b.h(saved), q.shape[1], k.shape[1], scale, b, tmp);
        return [merged(dq), merged(dk), merged(dv)];
      }
      const bias = mask ? sdpaBias(b.h(mask), [q.shape[0], heads, q.shape[1], k.shape[1]], code(b.autocast ? 'bfloat16' : 'float32'), tmp) : null;
      const none = tmp(emptyT([0], code('int64'), null, null, null, null)); // philox seed/offset: no dropout
      const [dq, dk, dv, dbias] = efficientBackward(tmp(contiguous(g, 0)), qh, kh, vh, bias, oh, b.h(saved), none, none, 0, [true, true, true, false], false, scale) as (Handle | null)[];
      if (dbias) tmp(dbias);
      // the mask is a constant (padding): its gradient is zeros
      return [merged(dq!), merged(dk!), merged(dv!), ...maskGrad(null)];
    }
    const [lq, lk] = [q.shape[1], k.shape[1]];
    return oneBlasThread(b, () => {
      const [g3, q3, k3, v3] = [g, qh, kh, vh].map((h) => batched(h, tmp));
      const p = b.h(saved); // float32 probabilities [B, H, Lq, Lk]
      const p3 = tmp(view(b.autocast ? tmp(toDtype(p, code('bfloat16'))) : p, [-1, lq, lk]));
      const dv = tmp(bmm(tmp(transpose(p3, 1, 2)), g3));
      const dp = tmp(view(tmp(bmm(g3, tmp(transpose(v3, 1, 2)))), saved.shape));
      const dscores = tmp(softmaxBackward(b.autocast ? tmp(toDtype(dp, code('float32'))) : dp, p, -1, code('float32')));
      const ds3 = tmp(view(b.autocast ? tmp(toDtype(dscores, code('bfloat16'))) : dscores, [-1, lq, lk]));
      const dq = tmp(mulScalar(tmp(bmm(ds3, k3)), scale));
      const dk = tmp(mulScalar(tmp(bmm(tmp(transpose(ds3, 1, 2)), q3)), scale));
      const heads4 = (h: Handle, t: tf.TensorInfo) => view(h, qh4(t, heads));
      return [merged(heads4(dq, q)), merged(heads4(dk, k)), merged(heads4(dv, v)), ...maskGrad(mask ? sumToSize(dscores, mask.shape) : null)];
    });
  }),
);

// Softmax cross-entropy with integer targets, per row (reduction 'none'); rows whose target equals
// ignoreIndex give 0 and no gradient, as in PyTorch.
const logSoftmax = aten('_log_softmax');
const logSoftmaxBackward = aten('_log_softmax_backward_data');
const nllForward = aten('nll_loss_forward');
const nllBackward = aten('nll_loss_backward');
const REDUCTION_NONE = 0;
kernel('TorchSoftmaxCrossEntropy', ({ logits, targets }, b, { ignoreIndex }) =>
  scoped((tmp) => {
    const logp = logSoftmax(b.h(logits), -1, false);
    const t = tmp(toDtype(b.h(targets), code('int64')));
    const [loss, totalWeight] = nllForward(logp, t, null, REDUCTION_NONE, ignoreIndex) as Handle[];
    tmp(totalWeight);
    return [b.out(loss, 'float32'), b.out(logp, 'float32')];
  }),
);
const fullLike = aten('full');
kernel('TorchSoftmaxCrossEntropyGrad', ({ dy, logp, targets }, b, { ignoreIndex }) =>
  scoped((tmp) => {
    const t = tmp(toDtype(b.h(targets), code('int64')));
    const totalWeight = tmp(fullLike([], 1, code('float32'), null, b.device)); // unused with reduction 'none'
    const dlogp = tmp(nllBackward(b.h(dy), b.h(logp), t, null, REDUCTION_NONE, ignoreIndex, totalWeight));
    return b.out(logSoftmaxBackward(dlogp, b.h(logp), -1, code('float32')), 'float32');
  }),
);

// Linear layer + softmax cross-entropy per row (the MLM head's output projection): logits = x·Wᵀ + b, loss =
// log Σ exp(logits) − logits[target], with the softmax then computed in place over the logits while they are
// hot, so the forward keeps one [N, V] tensor (the probabilities) and the backward needs one pass over it
// (P·dy − onehot·dy) plus the two matmuls. Every [N, V] step but the first product runs in place: in
// Debian's libtorch 1.13 an op that allocates a fresh [N, V] result (addmm, logsumexp) costs ~30× one that
// writes into an existing one. Under bf16 autocast the products take bf16 inputs, as torch.autocast's linear:
// the logits come out of addmm in bf16 and are widened to float32 for the softmax and the loss (a fresh
// [N, V] tensor, the cost of autocast); the backward's dx stays bf16, dW and db come back in float32.
const addInplaceT = aten('add_.Tensor');
const gatherDim = aten('gather');
const amax = aten('amax');
const subInplaceT = aten('sub_.Tensor');
const expInplace = aten('exp_');
const divInplaceT = aten('div_.Tensor');
const logT = aten('log');
const subT = aten('sub.Tensor');
const squeezeDim = aten('squeeze.dim');
const unsqueeze = aten('unsqueeze');
const mulT = aten('mul.Tensor');
const scatterAddInplace = aten('scatter_add_');
const neg = aten('neg');
kernel('TorchLinearCrossEntropy', ({ x, weight, bias, targets }, b) =>
  scoped((tmp) => {
    let logits: Handle;
    if (b.autocast) {
      logits = toDtype(tmp(addmm(paramLowp(bias, b), lowp(x, b, tmp), tmp(transpose(paramLowp(weight, b), 0, 1)))), code('float32'));
    } else {
      logits = mm(b.h(x), tmp(transpose(b.h(weight), 0, 1)));
      tmp(addInplaceT(logits, b.h(bias), 1)); // in-place ops return a new handle on the same tensor: free it
    }
    const t = tmp(unsqueeze(tmp(toDtype(b.h(targets), code('int64'))), 1));
    const picked = tmp(gatherDim(logits, 1, t, false));
    const max = tmp(amax(logits, [1], true));
    tmp(expInplace(tmp(subInplaceT(logits, max, 1))));
    const total = tmp(sumDims(logits, [1], true, null));
    tmp(divInplaceT(logits, total)); // the logits are now the probabilities
    const lse = tmp(addTensor(tmp(logT(total)), max, 1));
    const loss = squeezeDim(tmp(subT(lse, picked, 1)), 1);
    return [b.out(loss, 'float32'), b.out(logits, 'float32')];
  }),
);
kernel('TorchLinearCrossEntropyGrad', ({ dy, x, weight, probs, targets }, b) =>
  scoped((tmp) => {
    const dy32 = b.isBf16(dy) ? tmp(toDtype(b.h(dy), code('float32'))) : b.h(dy);
    const d = tmp(unsqueeze(dy32, 1));
    const g = tmp(mulT(b.h(probs), d)); // P·dy, then −dy at each row's target
    tmp(scatterAddInplace(g, 1, tmp(unsqueeze(tmp(toDtype(b.h(targets), code('int64'))), 1)), tmp(neg(d))));
    const gl = b.autocast ? tmp(toDtype(g, code('bfloat16'))) : g;
    const dx = mm(gl, paramLowp(weight, b));
    const dwLowp = mm(tmp(transpose(gl, 0, 1)), lowp(x, b, tmp));
    const dw = b.autocast ? toDtype(tmp(dwLowp), code('float32')) : dwLowp;
    const db = sumDims(g, [0], false, null);
    return [b.out(dx, 'float32'), b.out(dw, 'float32'), b.out(db, 'float32')];
  }),
);

// AdamW update of one parameter (src/train/adamw.ts), in place: the same ATen ops in the same order as the
// TF.js composite there (so the same float32 results), but written into the parameter's and the moments'
// own memory with one temporary the size of the parameter, instead of a dozen. A tensor whose memory is
// shared (another TF.js tensor on its dataId, a view, an alias) is first copied, and the copy returned.
// Outputs [param, m, v]: each either its input's dataId (updated in place) or a new tensor.
const mulInplace = aten('mul_.Scalar');
const addInplace = aten('add_.Tensor');
const addScalarInplace = aten('add_.Scalar');
const subInplace = aten('sub_.Tensor');
const divScalarInplace = aten('div_.Scalar');
const mulOut = aten('mul.out');
const divOut = aten('div.out');
const sqrtOut = aten('sqrt.out');
const clone = aten('clone');
kernel('TorchAdamW', ({ param, m, v, grad }, b, { beta1, beta2, lr, eps, decay, bc1, bc2Sqrt }) => {
  b.clearParamCasts(); // the parameters change
  const own = (x: tf.TensorInfo): tf.TensorInfo => {
    if (b.exclusive(x)) {
      b.incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    }
    return b.out(clone(b.h(x)), 'float32');
  };
  // In-place ATen ops return their `self`/`out` as a fresh handle to the same tensor: drop it at once.
  const run = (fn: (...a: unknown[]) => unknown, ...args: unknown[]) => b.free(fn(...args) as Handle);
  const outs = [own(param), own(m), own(v)];
  try {
    const [p, mm, vv] = outs.map((o) => b.h(o));
    const g = b.h(grad);
    // float32 on the CPU: the same operations in one pass over the memory (native/src/adamw.cc)
    if (addon().adamwCpu(p, mm, vv, g, beta1, beta2, lr, eps, decay, bc1, bc2Sqrt)) return outs;
    scoped((tmp) => {
      // m ← β1·m + (1−β1)·g
      run(mulInplace, mm, beta1);
      const t = tmp(mulScalar(g, 1 - beta1));
      run(addInplace, mm, t);
      // v ← β2·v + (1−β2)·g²   (square is g·g in ATen)
      run(mulInplace, vv, beta2);
      run(mulOut, g, g, t);
      run(mulInplace, t, 1 - beta2);
      run(addInplace, vv, t);
      // p ← p·(1 − lr·wd) − (lr/bc1) · m / (√v / √bc2 + ε)
      run(sqrtOut, vv, t);
      run(divScalarInplace, t, bc2Sqrt);
      run(addScalarInplace, t, eps);
      run(divOut, mm, t, t);
      run(mulInplace, t, lr / bc1);
      if (decay) run(mulInplace, p, 1 - decay);
      run(subInplace, p, t);
    });
    return outs;
  } catch (e) {
    for (const o of outs) b.disposeData(o.dataId);
    throw e;
  }
});
