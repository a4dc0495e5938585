/**
 * The ensemble ("inter") score of the unified loss (FlagEmbedding m3/modeling.py `ensemble_score`):
 * s_e = w_d·s_d + w_s·s_s + w_c·s_c over the already temperature-scaled scores, default
 * weights (1, 0.3, 1).
 */
import * as tf from '@tensorflow/tfjs';

export interface HeadWeights {
  dense: number;
  sparse: number;
  colbert: number;
}

export const DEFAULT_ENSEMBLE_WEIGHTS: Readonly<HeadWeights> = Object.freeze({ dense: 1, sparse: 0.3, colbert: 1 });

export function ensembleScores(dense: tf.Tensor2D, sparse: tf.Tensor2D, colbert: tf.Tensor2D, weights: HeadWeights = DEFAULT_ENSEMBLE_WEIGHTS): tf.Tensor2D {
  return tf.tidy(() => tf.addN([tf.mul(dense, weights.dense), tf.mul(sparse, weights.sparse), tf.mul(colbert, weights.colbert)]) as tf.Tensor2D);
}
