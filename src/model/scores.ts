/**
 * Query–passage scores of inference outputs, equal to FlagEmbedding's BGEM3FlagModel.compute_score:
 * dense inner product, lexical matching over shared token ids, ColBERT mean-of-max, and their weighted
 * fusion ("sparse+dense" = (w0·d + w1·s)/(w0 + w1); "colbert+sparse+dense" = Σ w·s / Σ w).
 */
export type SparseVec = Record<string, number>;

export function denseScore(q: Float32Array, p: Float32Array): number {
  let s = 0;
  for (let i = 0; i < q.length; i++) s += q[i] * p[i];
  return s;
}

export function lexicalScore(q: SparseVec, p: SparseVec): number {
  let s = 0;
  for (const id in q) {
    const w = p[id];
    if (w !== undefined) s += q[id] * w;
  }
  return s;
}

/** Mean over query vectors of the best dot product with any passage vector. */
export function colbertScore(q: Float32Array[], p: Float32Array[]): number {
  if (q.length === 0) return 0;
  let total = 0;
  for (const qv of q) {
    let best = -Infinity;
    for (const pv of p) best = Math.max(best, denseScore(qv, pv));
    total += p.length ? best : 0;
  }
  return total / q.length;
}

export interface ModeScores { dense: number; sparse: number; colbert: number; 'sparse+dense': number; 'colbert+sparse+dense': number }

/** All of compute_score's modes for one pair; `weights` = [dense, sparse, colbert] (FlagEmbedding default [1, 1, 1]). */
export function fuseScores(dense: number, sparse: number, colbert: number, weights: [number, number, number] = [1, 1, 1]): ModeScores {
  const [w0, w1, w2] = weights;
  return {
    dense,
    sparse,
    colbert,
    'sparse+dense': (w0 * dense + w1 * sparse) / (w0 + w1),
    'colbert+sparse+dense': (w0 * dense + w1 * sparse + w2 * colbert) / (w0 + w1 + w2),
  };
}
