/**
 * A lexical start for a fresh sparse head (`model.sparse_init: idf`): sparse_linear's weight and bias are
 * the ridge-regression fit of the tokens' IDF from their last hidden states, over sample passages of the
 * stage's own training data, so that relu(H·w + b) starts as a term weighting and every content token
 * starts with a gradient.
 *
 * Why: torch.nn.Linear's init (FlagEmbedding's, `addHeads`) assumes hidden states without a large shared
 * component, as a pretrained encoder's are. A small encoder trained from scratch has one (the mean hidden
 * vector's norm is ≈ 0.7 of the per-token spread untrained, and grows through RetroMAE and the pairs stage),
 * so w·H + b takes the sign of w·mean(H) + b for nearly every token: 32 % to 97 % of the tokens are active
 * across head seeds on the untrained demo model, and after the pairs stage nearly none on some seeds — a ReLU
 * with no active token has no gradient, and the head never trains (see the README's demo section).
 * IDF is BM25's, ln(1 + (N − df + 0.5) / (df + 0.5)) over the N sample passages, which is > 0 for every token.
 */
import * as tf from '@tensorflow/tfjs';
import { TokenBatch } from '../util/token-batch';
import { encoderForward } from './encoder';
import type { M3Model } from './m3';

export const SPARSE_INITS = ['torch', 'idf'] as const;
export type SparseInit = (typeof SPARSE_INITS)[number];

/** Target weight = IDF_SCALE · idf: weights of 0.1–0.8, the range of BAAI/bge-m3's lexical weights. */
export const IDF_SCALE = 0.1;
/** Ridge penalty on the weight (not the bias); hidden states are LayerNorm outputs, O(1) per feature. */
const RIDGE = 1;

/** BM25's IDF of every token id in `rows` (each row a set of ids), over the rows. */
export function bm25Idf(rows: Iterable<Iterable<number>>): Map<number, number> {
  const df = new Map<number, number>();
  let n = 0;
  for (const row of rows) {
    n++;
    for (const id of new Set(row)) df.set(id, (df.get(id) ?? 0) + 1);
  }
  return new Map([...df].map(([id, f]) => [id, Math.log(1 + (n - f + 0.5) / (f + 0.5))]));
}

/**
 * Fits the model's sparse_linear (which must exist) to IDF_SCALE · idf over the non-special, non-pad tokens
 * of `batches` (IDF counted over the same rows). Returns the number of tokens fitted and R² of the fit.
 */
export function fitSparseHeadToIdf(model: M3Model, batches: TokenBatch[], specialIds: Iterable<number>): { tokens: number; r2: number } {
  const special = new Set(specialIds);
  const d = model.config.hidden;
  const rowsOf = (b: TokenBatch) => Array.from({ length: b.batch }, (_, r) => {
    const ids: number[] = [];
    for (let j = 0; j < b.length; j++) {
      const k = r * b.length + j;
      if (b.attentionMask[k] && !special.has(b.inputIds[k])) ids.push(b.inputIds[k]);
    }
    return ids;
  });
  const idf = bm25Idf(batches.flatMap(rowsOf));
  const n = d + 1;
  const gram = new Float64Array(n * n);
  const xy = new Float64Array(n);
  let tokens = 0, sumY = 0, sumY2 = 0;
  for (const b of batches) {
    const keep: number[] = [];
    const y: number[] = [];
    for (let k = 0; k < b.inputIds.length; k++) {
      if (!b.attentionMask[k] || special.has(b.inputIds[k])) continue;
      keep.push(k);
      y.push(IDF_SCALE * idf.get(b.inputIds[k])!);
    }
    if (!keep.length) continue;
    const [g, c] = tf.tidy(() => {
      const h = tf.reshape(encoderForward(model.config, model.params, b), [b.batch * b.length, d]);
      const x = tf.concat([tf.gather(h, tf.tensor1d(keep, 'int32')), tf.ones([keep.length, 1])], 1);
      return [tf.matMul(x, x, true, false), tf.matMul(x, tf.tensor2d(y, [keep.length, 1]), true, false)];
    });
    const gv = g.dataSync(), cv = c.dataSync();
    tf.dispose([g, c]);
    for (let i = 0; i < n * n; i++) gram[i] += gv[i];
    for (let i = 0; i < n; i++) xy[i] += cv[i];
    tokens += keep.length;
    for (const v of y) {
      sumY += v;
      sumY2 += v * v;
    }
  }
  if (!tokens) throw new Error('fitSparseHeadToIdf: the sample has no content tokens');
  for (let i = 0; i < d; i++) gram[i * n + i] += RIDGE;
  const sol = solveSymmetric(gram, xy, n);
  // R² from the normal equations: SSE = yᵀy − 2·solᵀXᵀy + solᵀ(XᵀX)sol, with the ridge term taken back out.
  let fitTerm = 0, quad = 0;
  for (let i = 0; i < n; i++) {
    fitTerm += sol[i] * xy[i];
    let row = 0;
    for (let j = 0; j < n; j++) row += (gram[i * n + j] - (i === j && i < d ? RIDGE : 0)) * sol[j];
    quad += sol[i] * row;
  }
  const sse = sumY2 - 2 * fitTerm + quad;
  const sst = sumY2 - (sumY * sumY) / tokens;
  (model.params.get('sparse_linear.weight') as tf.Variable).assign(tf.tensor2d(Array.from(sol.subarray(0, d)), [1, d]));
  (model.params.get('sparse_linear.bias') as tf.Variable).assign(tf.tensor1d([sol[d]]));
  return { tokens, r2: sst > 0 ? 1 - sse / sst : 0 };
}

/** Solves A·x = b for a symmetric positive definite A (n × n, row-major) by Gaussian elimination with pivoting. */
function solveSymmetric(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const m = a.slice();
  const y = b.slice();
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]) > Math.abs(m[p * n + c])) p = r;
    if (p !== c) {
      for (let k = 0; k < n; k++) [m[c * n + k], m[p * n + k]] = [m[p * n + k], m[c * n + k]];
      [y[c], y[p]] = [y[p], y[c]];
    }
    for (let r = c + 1; r < n; r++) {
      const f = m[r * n + c] / m[c * n + c];
      if (!f) continue;
      for (let k = c; k < n; k++) m[r * n + k] -= f * m[c * n + k];
      y[r] -= f * y[c];
    }
  }
  const x = new Float64Array(n);
  for (let r = n - 1; r >= 0; r--) {
    let s = y[r];
    for (let k = r + 1; k < n; k++) s -= m[r * n + k] * x[k];
    x[r] = s / m[r * n + r];
  }
  return x;
}
