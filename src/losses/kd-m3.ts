/**
 * Teacher-score distillation, kd_loss_type "m3_kd_loss" (FlagEmbedding AbsModeling `distill_loss`
 * m3_kd_loss branch, the `distill_loss` of research/BGE_M3/modeling.py). Listwise,
 * Plackett–Luce style: for the i-th candidate of every group,
 *   L = Σ_{i<G} mean_b T[b, i] · CE(S[b, :] + M_i[b, :], column start_b + i)
 * where M_i puts float32-min on the columns of candidates 0 … i−1 of the same query, so earlier
 * candidates leave the softmax denominator. No separate InfoNCE is added. Columns start at b·G with
 * in-batch negatives, at 0 for own-group scores.
 */
import * as tf from '@tensorflow/tfjs';
import { FLOAT32_MIN } from '../backend/ops';
import { crossEntropyPerRow } from './cross-entropy';
import { checkScoreShape, groupStart, ScoreLayout } from './layout';


export function m3KdLoss(scores: tf.Tensor2D, teacherTargets: tf.Tensor2D, layout: ScoreLayout): tf.Scalar {
  checkScoreShape(scores, layout);
  const [b, c] = scores.shape;
  const g = layout.groupSize;
  if (teacherTargets.shape[0] !== b || teacherTargets.shape[1] !== g) {
    throw new Error(`m3KdLoss: teacher targets [${teacherTargets.shape}] for ${b} queries and group size ${g}`);
  }
  return tf.tidy(() => {
    // Adding the mask (rather than overwriting) matches the reference; the masked columns' softmax is 0,
    // so they get no gradient either way.
    const mask = new Float32Array(b * c);
    let loss: tf.Tensor = tf.scalar(0);
    for (let i = 0; i < g; i++) {
      const targets = Int32Array.from({ length: b }, (_, r) => groupStart(layout, r) + i);
      const masked = i === 0 ? scores : tf.add(scores, tf.tensor2d(mask, [b, c]));
      const ce = crossEntropyPerRow(masked as tf.Tensor2D, targets);
      const weight = tf.reshape(tf.slice(teacherTargets, [0, i], [b, 1]), [b]);
      loss = tf.add(loss, tf.mean(tf.mul(weight, ce)));
      targets.forEach((col, r) => (mask[r * c + col] = FLOAT32_MIN));
    }
    return loss as tf.Scalar;
  });
}
