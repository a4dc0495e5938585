/**
 * How a batch's score matrix is laid out, as in FlagEmbedding's AbsEmbedderModel. B queries and B·G
 * passages, passages grouped by query: query b's group is columns b·G … b·G+G−1 with its positive first.
 *   in-batch negatives (default): scores are [B, B·G]; query b's positive is column b·G.
 *   no_in_batch_neg data:          scores are [B, G] (own group only); every positive is column 0.
 */
import * as tf from '@tensorflow/tfjs';

export interface ScoreLayout {
  /** G = train_group_size: passages per query (positive + G−1 hard negatives). */
  groupSize: number;
  /** false for `no_in_batch_neg` datasets: each query is scored against its own group only. */
  inBatchNegatives: boolean;
}

/** Column of query b's first candidate (its positive) in a score matrix of this layout. */
export function groupStart(layout: ScoreLayout, b: number): number {
  return layout.inBatchNegatives ? b * layout.groupSize : 0;
}

/** The target column of every query: b·G in-batch, 0 for own-group scores. */
export function positiveColumns(layout: ScoreLayout, numQueries: number): Int32Array {
  return Int32Array.from({ length: numQueries }, (_, b) => groupStart(layout, b));
}

/** Checks that a [B, C] score matrix has the column count the layout implies. */
export function checkScoreShape(scores: tf.Tensor, layout: ScoreLayout, what = 'scores'): void {
  if (scores.rank !== 2) throw new Error(`${what}: expected a [B, C] matrix, got shape [${scores.shape}]`);
  const [b, c] = scores.shape;
  const want = layout.inBatchNegatives ? b * layout.groupSize : layout.groupSize;
  if (c !== want) {
    throw new Error(`${what}: ${c} columns for ${b} queries, group size ${layout.groupSize} and ` +
      `${layout.inBatchNegatives ? 'in-batch negatives' : 'own-group scoring'} (want ${want})`);
  }
}

/**
 * Each query's scores against its own group, [B, G]: columns b·G … b·G+G−1 of an in-batch matrix
 * (FlagEmbedding AbsModeling `get_local_score`), or the matrix itself when it is already own-group.
 */
export function ownGroupScores(scores: tf.Tensor2D, layout: ScoreLayout): tf.Tensor2D {
  checkScoreShape(scores, layout);
  if (!layout.inBatchNegatives) return scores;
  return tf.tidy(() => {
    const [b, c] = scores.shape;
    const g = layout.groupSize;
    const flat = Int32Array.from({ length: b * g }, (_, k) => Math.floor(k / g) * c + Math.floor(k / g) * g + (k % g));
    return tf.reshape(tf.gather(tf.reshape(scores, [b * c]), tf.tensor1d(flat, 'int32')), [b, g]) as tf.Tensor2D;
  });
}

/** Options shared by the dense, sparse and ColBERT score functions. */
export interface ScoreOptions {
  /** τ; all three scores are divided by it, as in FlagEmbedding. Default 1 (raw scores, as at inference). */
  temperature?: number;
  /**
   * G for own-group scoring (`no_in_batch_neg`): passages must be B·G, laid out by query, and the result is
   * [B, G] with s[b, g] = score(q_b, p_{b·G+g}). Unset: every query against every passage, [Bq, Bp].
   */
  ownGroupSize?: number;
}

/** Own-group scoring needs exactly G passages per query. */
export function checkOwnGroup(numQueries: number, numPassages: number, g: number, what: string): void {
  if (!Number.isInteger(g) || g < 1 || numPassages !== numQueries * g) {
    throw new Error(`${what}: ${numPassages} passages are not ${numQueries} groups of ${g}`);
  }
}
