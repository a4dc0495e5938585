/**
 * AdamW over every parameter in one call. On CUDA, libtorch's multi-tensor `aten::_fused_adamw_` (what
 * torch.optim.AdamW(fused=True) calls; libtorch ≥ 2.0): a launch per parameter and op costs more host time
 * than a GPU step has when a model has hundreds of parameters, so the whole update is two launches (decayed
 * and not-decayed parameters); same update as src/train/adamw.ts up to rounding:
 *   p ← p·(1 − lr·wd);  m ← m + (1−β1)(g − m);  v ← β2·v + (1−β2)·g²;  p ← p − lr/bc1 · m / (√v/√bc2 + ε)
 * On the CPU, one addon call (native/src/adamw.cc `adamwCpuAll`) runs the per-parameter kernel's one-pass
 * update over every parameter: the same bits as TorchAdamW, without a TF.js kernel and an addon call per
 * parameter. Everything is updated where it lies, so every tensor must be exclusive (no view, alias or
 * second reference shares its memory); otherwise, or where the operator is missing, nothing is done and the
 * caller takes the per-parameter kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { AdamWGroup } from '../ops';
import { addon } from './addon';
import { aten, Handle } from './aten';
import { outsideKernels } from './registry';
import type { TorchBackend } from './backend';
import { code, scoped, toDtype } from './kernels/util';

const fusedAdamw = aten('_fused_adamw_');
const full = aten('full');
let works: boolean | null = null; // null until first tried

/** True when the update was done; false when the caller must take the per-parameter path. */
export function adamwMany(groups: AdamWGroup[], step: number, hp: { beta1: number; beta2: number; lr: number; eps: number }): boolean {
  const b = tf.backend() as unknown as TorchBackend;
  if (tf.getBackend() !== 'torch') return false;
  if (b.device === 'cpu') return outsideKernels('TorchAdamWAll', b, () => adamwCpuAll(b, groups, step, hp));
  if (works === false) return false;
  const all = groups.flatMap((g) => g.items);
  if (!all.every((it) => b.exclusive(it.param) && b.exclusive(it.m) && b.exclusive(it.v))) return false;
  b.clearParamCasts(); // the parameters change
  try {
    outsideKernels('TorchFusedAdamW', b, () => scoped((tmp) => {
      const stepT = tmp(full([], step, code('float32'), null, b.device));
      for (const g of groups) {
        if (g.items.length === 0) continue;
        const h = (t: tf.TensorInfo): Handle => b.h(t);
        // gradients in float32 (bf16 autocast keeps parameter gradients float32; this is a safety net)
        const grads = g.items.map((it) => (b.isBf16(it.grad) ? tmp(toDtype(h(it.grad), code('float32'))) : h(it.grad)));
        fusedAdamw(g.items.map((it) => h(it.param)), grads, g.items.map((it) => h(it.m)), g.items.map((it) => h(it.v)), [], g.items.map(() => stepT),
          hp.lr, hp.beta1, hp.beta2, g.weightDecay, hp.eps, false, false, null, null);
      }
    }));
    works = true;
    return true;
  } catch (e) {
    if (works) throw e; // it worked before: a real error
    works = false;
    process.stderr.write(`torch backend: multi-tensor AdamW unavailable (${(e as Error).message.split('\n')[0]}); updating per parameter\n`);
    return false;
  }
}

/**
 * Every float32 parameter's update in one addon call, exactly as TorchAdamW's per-parameter one (the decay
 * and bias corrections computed as src/train/adamw.ts computes them for it); false, nothing changed, when a
 * tensor is shared or a gradient is not float32 (the native side checks the rest).
 */
function adamwCpuAll(b: TorchBackend, groups: AdamWGroup[], step: number, hp: { beta1: number; beta2: number; lr: number; eps: number }): boolean {
  const items = groups.flatMap((g) => g.items.map((it) => ({ ...it, decay: g.weightDecay ? hp.lr * g.weightDecay : 0 })));
  const own = (t: tf.TensorInfo) => b.refCount(t.dataId) === 1;
  if (!items.every((it) => own(it.param) && own(it.m) && own(it.v) && !b.isBf16(it.grad))) return false;
  const bc1 = 1 - hp.beta1 ** step;
  const bc2Sqrt = Math.sqrt(1 - hp.beta2 ** step);
  const h = (t: tf.TensorInfo): Handle => b.h(t);
  b.clearParamCasts(); // the parameters change
  return addon().adamwCpuAll(items.map((it) => h(it.param)), items.map((it) => h(it.m)), items.map((it) => h(it.v)), items.map((it) => h(it.grad)),
    items.map((it) => it.decay), hp.beta1, hp.beta2, hp.lr, hp.eps, bc1, bc2Sqrt);
}

const foreachNorm = aten('_foreach_norm.Scalar');
const stack = aten('stack');
const vectorNorm = aten('linalg_vector_norm');
let foreachWorks: boolean | null = null;

/**
 * The global L2 norm of many tensors as torch.nn.utils.clip_grad_norm_ computes it: the norm of the
 * per-tensor norms. Those are one multi-tensor launch on CUDA (where libtorch has it), else one call per
 * tensor — on the CPU all of it in one addon call (native/src/adamw.cc `globalNormCpu`, the same operators);
 * either way no squared copy of a gradient is made (a fresh GB for bge-m3's embedding gradient).
 */
export function globalNorm(tensors: tf.Tensor[]): tf.Scalar | null {
  if (tf.getBackend() !== 'torch' || tensors.length === 0) return null;
  const b = tf.backend() as unknown as TorchBackend;
  const info = outsideKernels('TorchGlobalNorm', b, () => {
    const native = b.device === 'cpu' ? addon().globalNormCpu(tensors.map((t) => b.h(t))) : null;
    if (native !== null) return b.out(native, 'float32');
    return scoped((tmp) => {
      const float32 = tensors.map((t) => (b.isBf16(t) ? tmp(toDtype(b.h(t), code('float32'))) : b.h(t)));
      const norms = perTensorNorms(b, float32).map(tmp);
      return b.out(vectorNorm(tmp(stack(norms, 0)), 2, null, false, null), 'float32');
    });
  });
  return tf.engine().makeTensorFromTensorInfo(info) as tf.Scalar;
}

function perTensorNorms(b: TorchBackend, hs: Handle[]): Handle[] {
  if (b.device === 'cuda' && foreachWorks !== false) {
    try {
      const norms = foreachNorm(hs, 2, code('float32')) as Handle[];
      foreachWorks = true;
      return norms;
    } catch (e) {
      if (foreachWorks) throw e;
      foreachWorks = false;
      process.stderr.write(`torch backend: multi-tensor norm unavailable (${(e as Error).message.split('\n')[0]}); one norm per tensor\n`);
    }
  }
  return hs.map((h) => vectorNorm(h, 2, null, false, null) as Handle);
}
