/**
 * Shared pieces of the loss tests: deterministic random data, the backends to run on, host-side
 * reference implementations written straight from FlagEmbedding's score definitions and tolerance checks.
 */
import * as tf from '@tensorflow/tfjs';
import { availableBackends } from '../../src/backend';
import { TokenBatch } from '../../src/util/token-batch';
import { createRng } from '../../src/util/rng';

/** Every backend that the golden tests use, plus TF.js's plain-JS cpu backend as a second opinion. */
export async function testBackends(): Promise<string[]> {
  return ['cpu', ...(await availableBackends())];
}

/** A seeded uniform [0, 1) generator (src/util/rng's mulberry32). */
export function rng(seed: number): () => number {
  const r = createRng(seed);
  return () => r.next();
}

export function randomNormal(shape: number[], seed: number): tf.Tensor {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return tf.tensor(out, shape);
}

export interface TokenOptions {
  batch: number;
  length: number;
  /** ids drawn from [firstId, vocab) with a Zipf-like law so common ids repeat within and across rows */
  vocab: number;
  firstId?: number;
  cls?: number;
  eos?: number;
  pad?: number;
  /** rows get a random real length in [minLength, length] and are padded after it */
  minLength?: number;
  seed: number;
}

export function randomTokens(o: TokenOptions): Required<TokenBatch> {
  const r = rng(o.seed);
  const { batch, length, vocab } = o;
  const first = o.firstId ?? 4;
  const cls = o.cls ?? 0;
  const eos = o.eos ?? 2;
  const pad = o.pad ?? 1;
  const inputIds = new Int32Array(batch * length).fill(pad);
  const attentionMask = new Int32Array(batch * length);
  const span = vocab - first;
  for (let b = 0; b < batch; b++) {
    const minLen = Math.min(length, Math.max(3, o.minLength ?? length));
    const n = minLen + Math.floor(r() * (length - minLen + 1));
    for (let j = 0; j < n; j++) {
      const k = b * length + j;
      attentionMask[k] = 1;
      if (j === 0) inputIds[k] = cls;
      else if (j === n - 1) inputIds[k] = eos;
      else inputIds[k] = first + Math.min(span - 1, Math.floor(Math.pow(span, r()) - 1)); // log-uniform ranks
    }
  }
  return { inputIds, attentionMask, batch, length };
}

/**
 * The reference sparse vectors without a vocabulary axis: per row, token id → max weight over its
 * positions, special ids and padding left out. Equal to scatter into [B, L, V], max over L, zero specials.
 */
export function hostSparseVectors(weights: Float32Array, t: TokenBatch, special: Set<number>): Map<number, { w: number; pos: number }>[] {
  const out: Map<number, { w: number; pos: number }>[] = [];
  for (let b = 0; b < t.batch; b++) {
    const m = new Map<number, { w: number; pos: number }>();
    for (let j = 0; j < t.length; j++) {
      const k = b * t.length + j;
      const id = t.inputIds[k];
      if (special.has(id) || (t.attentionMask && !t.attentionMask[k])) continue;
      const cur = m.get(id);
      if (!cur || weights[k] > cur.w) m.set(id, { w: weights[k], pos: k });
    }
    out.push(m);
  }
  return out;
}

export function hostSparseScores(q: Map<number, { w: number }>[], p: Map<number, { w: number }>[]): Float64Array {
  const s = new Float64Array(q.length * p.length);
  q.forEach((qm, i) => p.forEach((pm, j) => {
    let acc = 0;
    for (const [id, { w }] of qm) {
      const o = pm.get(id);
      if (o) acc += w * o.w;
    }
    s[i * p.length + j] = acc;
  }));
  return s;
}

/** Max |got − want| / (atol + rtol·|want|); ≤ 1 means within tolerance. */
export function worstRatio(got: ArrayLike<number>, want: ArrayLike<number>, rtol = 1e-5, atol = 1e-6): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} ≠ ${want.length}`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const r = Math.abs(got[i] - want[i]) / (atol + rtol * Math.abs(want[i]));
    if (!(r <= worst)) worst = Number.isNaN(r) ? Infinity : r;
  }
  return worst;
}

export function expectAllClose(got: tf.Tensor | ArrayLike<number>, want: tf.Tensor | ArrayLike<number>, rtol = 1e-5, atol = 1e-6): void {
  const g = got instanceof tf.Tensor ? got.dataSync() : got;
  const w = want instanceof tf.Tensor ? want.dataSync() : want;
  if (got instanceof tf.Tensor && want instanceof tf.Tensor) expect(got.shape).toEqual(want.shape);
  expect(worstRatio(g, w, rtol, atol)).toBeLessThanOrEqual(1);
}

/** A random unified-loss batch: B queries, B·G passages, hidden size d, heads with colbertDim outputs. */
export function randomM3Batch(o: { b: number; g: number; lq: number; lp: number; d: number; vocab: number; colbertDim?: number; seed: number }) {
  const queries = randomTokens({ batch: o.b, length: o.lq, vocab: o.vocab, minLength: 3, seed: o.seed });
  const passages = randomTokens({ batch: o.b * o.g, length: o.lp, vocab: o.vocab, minLength: 3, seed: o.seed + 1 });
  const cd = o.colbertDim ?? o.d;
  return {
    queries,
    passages,
    queryHidden: randomNormal([o.b, o.lq, o.d], o.seed + 2) as tf.Tensor3D,
    passageHidden: randomNormal([o.b * o.g, o.lp, o.d], o.seed + 3) as tf.Tensor3D,
    heads: {
      sparseWeight: tf.mul(randomNormal([1, o.d], o.seed + 4), 0.5),
      sparseBias: tf.tensor1d([0.1]),
      colbertWeight: tf.mul(randomNormal([cd, o.d], o.seed + 5), 1 / Math.sqrt(o.d)),
      colbertBias: tf.mul(randomNormal([cd], o.seed + 6), 0.1),
    },
  };
}
