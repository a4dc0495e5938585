/**
 * The loss applied to each score matrix of the unified loss (FlagEmbedding AbsModeling
 * `_compute_in_batch_neg_loss` / `_compute_no_in_batch_neg_loss`): InfoNCE, or — when
 * the batch carries teacher scores — the configured teacher distillation in its place.
 */
import * as tf from '@tensorflow/tfjs';
import { infoNceLoss } from './info-nce';
import { klDivDistillLoss } from './kd-kl-div';
import { m3KdLoss } from './kd-m3';
import { ScoreLayout } from './layout';

/** FlagEmbedding's `kd_loss_type`; its CLI default is kl_div (the runner overrides the M3 model's m3_kd_loss). */
export type KdLossType = 'kl_div' | 'm3_kd_loss';
export const KD_LOSS_TYPES: readonly KdLossType[] = ['kl_div', 'm3_kd_loss'];

export interface TeacherTargets {
  /** softmax of the teacher's raw scores over each query's group, [B, G]; a constant. */
  targets: tf.Tensor2D;
  type: KdLossType;
}

/** Teacher targets from raw teacher scores [B, G]: a softmax without temperature, as AbsEmbedderModel.forward. */
export function teacherTargetsFromScores(teacherScores: tf.Tensor2D): tf.Tensor2D {
  return tf.softmax(teacherScores) as tf.Tensor2D;
}

export function contrastiveLoss(scores: tf.Tensor2D, layout: ScoreLayout, teacher?: TeacherTargets): tf.Scalar {
  if (!teacher) return infoNceLoss(scores, layout);
  switch (teacher.type) {
    case 'kl_div':
      return klDivDistillLoss(scores, teacher.targets, layout);
    case 'm3_kd_loss':
      return m3KdLoss(scores, teacher.targets, layout);
    default:
      throw new Error(`unknown kd_loss_type '${teacher.type as string}' (expected ${KD_LOSS_TYPES.join(' or ')})`);
  }
}
