/**
 * GradCache-style sub-batching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under
 * Memory Limited Setup"), our substitute for gradient checkpointing, which TF.js lacks:
 *   1. encode every sub-batch without a tape and concatenate the representations;
 *   2. take the loss and its gradient w.r.t. those representations (a small graph);
 *   3. re-encode each sub-batch under a tape and back-propagate the cached gradient slice
 *      (as the gradient of Σ rep·∂L/∂rep), accumulating parameter gradients.
 * Peak activation memory is that of one sub-batch; the result equals the one-pass gradient as long as
 * encoding is deterministic (dropout seeds are per sub-batch, so pass 1 and pass 3 draw the same masks).
 */
import * as tf from '@tensorflow/tfjs';

export type Reps = Record<string, tf.Tensor>;

/** One input stream (e.g. queries or passages) split into sub-batches. */
export interface Stream {
  chunks: number;
  /** Representations of sub-batch i; must be deterministic for a given i. */
  encode(i: number): Reps;
}

export interface GradCacheResult {
  loss: tf.Scalar;
  grads: Map<string, tf.Tensor>;
  /** Extra scalars the loss function reported (loss terms), detached. */
  parts: Record<string, tf.Scalar>;
}

/**
 * `lossFn` gets the full representations of every stream, `constants(reps)` computed outside the
 * gradient (e.g. a detached self-distillation teacher) and the parameters named in `lossParams` (used by
 * the loss itself, e.g. output heads over hidden states: their gradients come from step 2); it returns
 * the loss and optional named parts. `encode` must not use the `lossParams`.
 */
export function gradCacheStep(
  vars: Map<string, tf.Variable>,
  streams: Record<string, Stream>,
  lossFn: (reps: Record<string, Reps>, constants: Record<string, tf.Tensor>, lossParams: Map<string, tf.Tensor>) => { loss: tf.Scalar; parts?: Record<string, tf.Scalar> },
  constants: (reps: Record<string, Reps>) => Record<string, tf.Tensor> = () => ({}),
  lossParams: string[] = [],
): GradCacheResult {
  const names = Object.keys(streams);
  // 1. representations without a tape, one sub-batch at a time
  const full: Record<string, Reps> = {};
  const sizes: Record<string, number[]> = {};
  for (const s of names) {
    const parts: Reps[] = [];
    for (let i = 0; i < streams[s].chunks; i++) parts.push(streams[s].encode(i));
    const keys = Object.keys(parts[0]);
    sizes[s] = parts.map((p) => p[keys[0]].shape[0]);
    full[s] = Object.fromEntries(keys.map((k) => [k, parts.length === 1 ? parts[0][k] : tf.concat(parts.map((p) => p[k]), 0)]));
    if (parts.length > 1) for (const p of parts) tf.dispose(Object.values(p));
  }
  const consts = constants(full);

  // 2. loss and its gradient w.r.t. the representations
  const flatKeys = names.flatMap((s) => Object.keys(full[s]).map((k) => [s, k] as const));
  const flat = flatKeys.map(([s, k]) => full[s][k]);
  const trainableLossParams = lossParams.filter((n) => vars.get(n)?.trainable);
  let partsOut: Record<string, tf.Scalar> = {};
  const { value, grads: allGrads } = tf.valueAndGrads((...xs: tf.Tensor[]) => {
    const reps: Record<string, Reps> = {};
    flatKeys.forEach(([s, k], j) => ((reps[s] ??= {})[k] = xs[j]));
    const lp = new Map<string, tf.Tensor>(lossParams.map((n) => [n, vars.get(n) as tf.Tensor]));
    trainableLossParams.forEach((n, j) => lp.set(n, xs[flatKeys.length + j]));
    const out = lossFn(reps, consts, lp);
    partsOut = Object.fromEntries(Object.entries(out.parts ?? {}).map(([k, v]) => [k, tf.keep(v.clone())]));
    return out.loss;
  })([...flat, ...trainableLossParams.map((n) => vars.get(n) as tf.Tensor)]);
  tf.dispose([...flat, ...Object.values(consts)]);
  const repGrads = allGrads.slice(0, flatKeys.length);

  // 3. re-encode each sub-batch with a tape and push the cached gradient slice through it
  const grads = new Map<string, tf.Tensor>(trainableLossParams.map((n, j) => [n, allGrads[flatKeys.length + j]]));
  const trainable = [...vars].filter(([n, v]) => v.trainable && !lossParams.includes(n)).map(([, v]) => v);
  const nameOf = new Map([...vars].map(([n, v]) => [v.name, n]));
  for (const s of names) {
    const keys = flatKeys.filter(([t]) => t === s).map(([, k]) => k);
    const dFull = keys.map((k) => repGrads[flatKeys.findIndex(([t, kk]) => t === s && kk === k)]);
    let offset = 0;
    for (let i = 0; i < streams[s].chunks; i++) {
      const n = sizes[s][i];
      const dSlice = dFull.map((d) => tf.slice(d, offset, n));
      offset += n;
      const { value: surrogate, grads: g } = tf.variableGrads(() => {
        const reps = streams[s].encode(i);
        return tf.addN(keys.map((k, j) => tf.sum(tf.mul(reps[k], dSlice[j])))) as tf.Scalar;
      }, trainable);
      surrogate.dispose(); // only its gradients matter
      for (const [vname, t] of Object.entries(g)) {
        const name = nameOf.get(vname) ?? vname;
        const prev = grads.get(name);
        if (prev) {
          grads.set(name, tf.add(prev, t));
          tf.dispose([prev, t]);
        } else grads.set(name, t);
      }
      tf.dispose(dSlice);
    }
  }
  tf.dispose(repGrads);
  return { loss: value as tf.Scalar, grads, parts: partsOut };
}
