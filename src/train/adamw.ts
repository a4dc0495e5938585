/**
 * AdamW exactly as PyTorch's torch.optim.AdamW (Loshchilov & Hutter, "Decoupled Weight Decay
 * Regularization"), per parameter at step t:
 *   p ← p·(1 − lr·wd)                      (decoupled decay; skipped for no-decay parameters)
 *   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
 *   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
 * No decay on biases and LayerNorm weights (HF Trainer's rule). Moments are variables named after their
 * parameter, so checkpoints store and restore them by name.
 */
import * as tf from '@tensorflow/tfjs';
import { ops } from '../backend/ops';
import { fromHost, ownedVariable, toSource } from '../model/variables';
import { TensorMap, TensorSource } from '../model/weights/types';

export interface AdamWConfig {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 1e-5, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.0 };

export const isNoDecay = (name: string): boolean => name.endsWith('.bias') || name.includes('LayerNorm');

export interface AdamW {
  config: AdamWConfig;
  step: number;
  m: Map<string, tf.Variable>;
  v: Map<string, tf.Variable>;
}

export function createAdamW(config: Partial<AdamWConfig> = {}): AdamW {
  return { config: { ...ADAMW_DEFAULTS, ...config }, step: 0, m: new Map(), v: new Map() };
}

/** One update of every parameter that has a gradient, at learning rate `lr`. */
export function adamwStep(opt: AdamW, params: Map<string, tf.Variable>, grads: Map<string, tf.Tensor>, lr: number): void {
  opt.step += 1;
  const [b1, b2] = opt.config.betas;
  const bc1 = 1 - b1 ** opt.step;
  const bc2Sqrt = Math.sqrt(1 - b2 ** opt.step);
  for (const name of grads.keys()) {
    const p = params.get(name);
    if (!p) throw new Error(`gradient for unknown parameter '${name}'`);
    if (!opt.m.has(name)) {
      opt.m.set(name, ownedVariable(() => tf.zerosLike(p), false));
      opt.v.set(name, ownedVariable(() => tf.zerosLike(p), false));
    }
  }
  // a backend's multi-tensor kernel (torch on CUDA) updates everything at once, up to rounding
  const many = ops().adamwMany;
  if (many) {
    const group = (noDecay: boolean) => ({
      weightDecay: noDecay ? 0 : opt.config.weightDecay,
      items: [...grads].filter(([name]) => isNoDecay(name) === noDecay).map(([name, grad]) => ({ param: params.get(name)!, m: opt.m.get(name)!, v: opt.v.get(name)!, grad })),
    });
    if (many([group(false), group(true)], opt.step, { beta1: b1, beta2: b2, lr, eps: opt.config.eps })) return;
  }
  // a backend's fused kernel (torch) computes the composite below op for op: the same float32 results
  const fused = ops().adamw;
  for (const [name, g] of grads) {
    const p = params.get(name)!;
    const m = opt.m.get(name)!;
    const v = opt.v.get(name)!;
    const decay = isNoDecay(name) ? 0 : lr * opt.config.weightDecay;
    if (fused) {
      tf.tidy(() => {
        const attrs = { beta1: b1, beta2: b2, lr, eps: opt.config.eps, decay, bc1, bc2Sqrt };
        const [pNew, mNew, vNew] = fused(p, m, v, g, attrs);
        // an output on its input's dataId was updated in place; a new one (the input was shared) replaces it
        if (pNew.dataId !== p.dataId) p.assign(pNew);
        if (mNew.dataId !== m.dataId) m.assign(mNew);
        if (vNew.dataId !== v.dataId) v.assign(vNew);
      });
      continue;
    }
    // Three tidies rather than one: each new moment replaces the old before the next is computed, so at
    // most a few parameter-sized temporaries are alive at once (a dozen for the embedding otherwise).
    tf.tidy(() => m.assign(tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1))));
    tf.tidy(() => v.assign(tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2))));
    tf.tidy(() => {
      const decayed = decay ? tf.mul(p, 1 - decay) : p;
      const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), opt.config.eps);
      p.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), lr / bc1)));
    });
  }
}

/**
 * Global gradient-norm clipping as torch.nn.utils.clip_grad_norm_: returns the total norm before clipping
 * and the (possibly scaled) gradients; the caller disposes the old ones. One scalar is read back.
 */
export function clipGradNorm(grads: Map<string, tf.Tensor>, maxNorm: number): { norm: number; grads: Map<string, tf.Tensor> } {
  // one tidy per gradient: only one squared copy is alive at a time (all of them, 2.3 GB for bge-m3, otherwise)
  const normT = ops().globalNorm?.([...grads.values()])
    ?? tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.tidy(() => tf.sum(tf.square(g)))))));
  const norm = normT.dataSync()[0];
  normT.dispose();
  const coef = maxNorm / (norm + 1e-6);
  if (!(maxNorm > 0) || coef >= 1 || !Number.isFinite(norm)) return { norm, grads };
  const out = new Map<string, tf.Tensor>();
  for (const [k, g] of grads) out.set(k, tf.mul(g, coef));
  return { norm, grads: out };
}

/** Moments and step as host tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`) for checkpoints. */
/** The moments by checkpoint name, read one at a time as they are written. */
export function exportAdamW(opt: AdamW): { step: number; tensors: Map<string, TensorSource> } {
  const tensors = new Map<string, TensorSource>();
  for (const [k, t] of opt.m) tensors.set(`exp_avg.${k}`, toSource(t));
  for (const [k, t] of opt.v) tensors.set(`exp_avg_sq.${k}`, toSource(t));
  return { step: opt.step, tensors };
}

export function importAdamW(opt: AdamW, step: number, tensors: TensorMap): void {
  disposeAdamW(opt);
  opt.step = step;
  for (const [key, t] of tensors) {
    const [kind, ...rest] = key.split('.');
    const name = rest.join('.');
    const target = kind === 'exp_avg' ? opt.m : kind === 'exp_avg_sq' ? opt.v : null;
    if (!target) throw new Error(`unexpected optimizer tensor '${key}'`);
    target.set(name, ownedVariable(() => fromHost(t), false));
  }
}

export function disposeAdamW(opt: AdamW): void {
  for (const t of [...opt.m.values(), ...opt.v.values()]) t.dispose();
  opt.m.clear();
  opt.v.clear();
}
