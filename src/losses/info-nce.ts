/**
 * InfoNCE with in-batch and hard negatives (paper arXiv 2402.03216 eq. 1; FlagEmbedding AbsModeling
 * `_compute_in_batch_neg_loss` / `_compute_no_in_batch_neg_loss`):
 *   L = −mean_b log( exp(s[b, pos_b]) / Σ_c exp(s[b, c]) )
 * over scores already divided by the temperature τ. In-batch: s is [B, B·G] and pos_b = b·G, so every other
 * query's passages are negatives too; `no_in_batch_neg`: s is [B, G] and pos_b = 0.
 */
import * as tf from '@tensorflow/tfjs';
import { crossEntropy } from './cross-entropy';
import { checkScoreShape, positiveColumns, ScoreLayout } from './layout';

export function infoNceLoss(scores: tf.Tensor2D, layout: ScoreLayout): tf.Scalar {
  checkScoreShape(scores, layout);
  return crossEntropy(scores, positiveColumns(layout, scores.shape[0]));
}
