/**
 * Query–passage scores of inference outputs, equal to FlagEmbedding's BGEM3FlagModel.compute_score:
 * dense inner product, lexical matching over shared token ids, ColBERT mean-of-max, and their weighted
 * fusion ("dense+sparse" = (w0·d + w1·s)/(w0 + w1); "all" = Σ w·s / Σ w — compute_score calls them
 * "sparse+dense" and "colbert+sparse+dense", accepted here as aliases).
 */
import { DEFAULT_ENSEMBLE_WEIGHTS } from '../losses/ensemble-score';

/** The retrieval modes: the three functions and their weighted sums. */
export const MODES = ['dense', 'sparse', 'colbert', 'dense+sparse', 'all'] as const;
export type Mode = (typeof MODES)[number];

/** FlagEmbedding's compute_score names of the hybrid modes. */
export const MODE_ALIASES: Readonly<Record<string, Mode>> = { 'sparse+dense': 'dense+sparse', 'colbert+sparse+dense': 'all' };

/** A mode by its name or alias; null for an unknown name. */
export function modeNamed(name: string): Mode | null {
  return (MODES as readonly string[]).includes(name) ? (name as Mode) : MODE_ALIASES[name] ?? null;
}

/** [dense, sparse, colbert] weights of the hybrid modes: the ensemble weights of M3's training (1, 0.3, 1). */
export const DEFAULT_MODE_WEIGHTS: readonly [number, number, number] = [DEFAULT_ENSEMBLE_WEIGHTS.dense, DEFAULT_ENSEMBLE_WEIGHTS.sparse, DEFAULT_ENSEMBLE_WEIGHTS.colbert];
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

export type ModeScores = Record<Mode, number>;

/** All of compute_score's modes for one pair; `weights` = [dense, sparse, colbert] (compute_score's default [1, 1, 1]). */
export function fuseScores(dense: number, sparse: number, colbert: number, weights: readonly [number, number, number] = [1, 1, 1]): ModeScores {
  const [w0, w1, w2] = weights;
  return {
    dense,
    sparse,
    colbert,
    'dense+sparse': (w0 * dense + w1 * sparse) / (w0 + w1),
    all: (w0 * dense + w1 * sparse + w2 * colbert) / (w0 + w1 + w2),
  };
}
