/**
 * Multi-vector (ColBERT) score (paper arXiv 2402.03216 §3.2; FlagEmbedding m3/modeling.py
 * `compute_colbert_score`):
 *   s[q, p] = (1 / n_q) Σ_i max_j ⟨E_q[i], E_p[j]⟩ / τ
 * over the ColBERT vectors of src/model/heads.ts (CLS excluded, padding zeroed, L2-normalised), with n_q the
 * query's non-pad token count excluding CLS. Padded passage vectors are zero, so they take part in the max
 * with similarity 0, as in the reference; padded query vectors add 0 to the sum.
 *
 * The token-similarity block [Bq·Lq′, Bp·Lp′] is the memory hog (Bq·Bp·Lq·Lp floats), so it is computed in
 * chunks of at most `maxChunkElements` under a custom gradient that keeps only the inputs and recomputes
 * the chunk's similarities and arg-max in the backward pass: peak memory is one chunk, with or without a
 * gradient tape. Each chunk is two 2-D matmuls forward and three backward (no einsum, no batched matmul).
 */
import * as tf from '@tensorflow/tfjs';
import { checkOwnGroup, ScoreOptions } from './layout';

export interface ColbertScoreOptions extends ScoreOptions {
  /** Upper bound on the floats of one similarity chunk (default 2^24, 64 MiB). */
  maxChunkElements?: number;
}

const DEFAULT_CHUNK_ELEMENTS = 1 << 24;

/**
 * Σ_i max_j ⟨q_i, p_j⟩ for every query/passage pair of a chunk: [nq, Lq′, d] × [np, Lp′, d] → [nq, np].
 * The gradient sends each query token's upstream weight to its arg-max passage token only (the first on
 * ties, as PyTorch's max does).
 */
// (customGrad's declared type takes variadic tensors-or-save-function; the cast names the real arguments.)
const maxSimSum = tf.customGrad(((q: tf.Tensor, p: tf.Tensor, save: tf.GradSaveFunc) => {
  const [nq, lq, d] = q.shape;
  const [np, lp] = p.shape;
  const sims = (qq: tf.Tensor, pp: tf.Tensor) =>
    tf.reshape(tf.matMul(tf.reshape(qq, [nq * lq, d]) as tf.Tensor2D, tf.reshape(pp, [np * lp, d]) as tf.Tensor2D, false, true), [nq * lq, np, lp]);
  save([q, p]);
  return {
    value: tf.sum(tf.reshape(tf.max(sims(q, p), 2), [nq, lq, np]), 1),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const [qs, ps] = saved;
        // int32 one-hot then a cast: wasm's OneHot writes int bit patterns into a float32 output.
        const best = tf.cast(tf.oneHot(tf.reshape(tf.argMax(sims(qs, ps), 2), [-1]), lp), 'float32');
        // weight[(q,i), (p,j)] = dy[q, p] where j is the arg-max for (q, i, p), else 0
        const weight = tf.reshape(tf.mul(tf.reshape(best, [nq, lq, np, lp]), tf.reshape(dy, [nq, 1, np, 1])), [nq * lq, np * lp]) as tf.Tensor2D;
        const gq = tf.matMul(weight, tf.reshape(ps, [np * lp, d]) as tf.Tensor2D);
        const gp = tf.matMul(weight, tf.reshape(qs, [nq * lq, d]) as tf.Tensor2D, true, false);
        return [tf.reshape(gq, qs.shape), tf.reshape(gp, ps.shape)];
      }),
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]);

/**
 * ColBERT scores [Bq, Bp] (or [B, G] with `ownGroupSize`) from query vectors [Bq, Lq−1, d], passage vectors
 * [Bp, Lp−1, d] and the query attention mask [Bq, Lq] (CLS column included, as the encoder sees it).
 */
export function colbertScores(queries: tf.Tensor3D, passages: tf.Tensor3D, queryMask: tf.Tensor2D, opts: ColbertScoreOptions = {}): tf.Tensor2D {
  const [bq, lq] = queries.shape;
  const [bp, lp] = passages.shape;
  if (queryMask.shape[0] !== bq || queryMask.shape[1] !== lq + 1) throw new Error(`colbertScores: query mask [${queryMask.shape}] for query vectors [${queries.shape}]`);
  const budget = opts.maxChunkElements ?? DEFAULT_CHUNK_ELEMENTS;
  const tau = opts.temperature ?? 1;
  return tf.tidy(() => {
    let sums: tf.Tensor;
    // Chunks come from tf.split, not slices: the backward of a slice pads its gradient to the full input,
    // and TF.js keeps every such padded gradient until the backward pass ends; split's backward is one concat.
    const split = (x: tf.Tensor3D, size: number) => {
      const n = x.shape[0];
      if (size >= n) return [x];
      const sizes = Array.from({ length: Math.ceil(n / size) }, (_, i) => Math.min(size, n - i * size));
      return tf.split(x, sizes, 0);
    };
    if (opts.ownGroupSize === undefined) {
      const rowsPerChunk = Math.max(1, Math.min(bq, Math.floor(budget / (lq * lp))));
      const colsPerChunk = Math.max(1, Math.min(bp, Math.floor(budget / (rowsPerChunk * lq * lp))));
      const passageChunks = split(passages, colsPerChunk);
      const rows = split(queries, rowsPerChunk).map((q) => {
        const cols = passageChunks.map((p) => maxSimSum(q, p));
        return cols.length === 1 ? cols[0] : tf.concat(cols, 1);
      });
      sums = rows.length === 1 ? rows[0] : tf.concat(rows, 0);
    } else {
      // Own group: query b against passages b·G … b·G+G−1 only, one query per chunk.
      const g = opts.ownGroupSize;
      checkOwnGroup(bq, bp, g, 'colbertScores');
      const groups = split(passages, g);
      sums = tf.concat(split(queries, 1).map((q, b) => maxSimSum(q, groups[b])), 0);
    }
    // n_q = non-pad tokens after CLS; a query of CLS alone would divide by 0 in the reference, here by 1.
    const counts = tf.maximum(tf.sum(tf.slice(tf.cast(queryMask, 'float32'), [0, 1], [bq, lq]), 1, true), 1);
    const mean = tf.div(sums, counts);
    return (tau === 1 ? mean : tf.div(mean, tau)) as tf.Tensor2D;
  });
}
