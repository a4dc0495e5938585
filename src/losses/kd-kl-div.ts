/**
 * Teacher-score distillation, kd_loss_type "kl_div" (FlagEmbedding AbsModeling `_compute_in_batch_neg_loss`
 * with teacher targets + `distill_loss` kl_div):
 *   L = −mean_b Σ_g T[b, g] · log softmax(S_own[b, :])[g]  +  InfoNCE(S)
 * S_own [B, G] is each query's own group taken out of the score matrix (the softmax runs over the group
 * only); the plain InfoNCE over the full matrix is added on top. T = softmax(teacher scores), no temperature
 * (AbsEmbedderModel.forward's `teacher_targets`).
 */
import * as tf from '@tensorflow/tfjs';
import { infoNceLoss } from './info-nce';
import { ownGroupScores, ScoreLayout } from './layout';
import { softCrossEntropy } from './soft-cross-entropy';

export function klDivDistillLoss(scores: tf.Tensor2D, teacherTargets: tf.Tensor2D, layout: ScoreLayout): tf.Scalar {
  return tf.tidy(() => tf.add(softCrossEntropy(teacherTargets, ownGroupScores(scores, layout)), infoNceLoss(scores, layout)) as tf.Scalar);
}
