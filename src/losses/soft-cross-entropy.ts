/**
 * Soft-target cross-entropy, FlagEmbedding's "kl_div" (AbsModeling `distill_loss` kl_div branch):
 * −mean_rows Σ_cols T · log softmax(S). It equals KL(T‖softmax S) up to the teacher's entropy, so its
 * gradient is the KL gradient. T is a probability row per query and is treated as a constant.
 */
import * as tf from '@tensorflow/tfjs';

export function softCrossEntropy(targets: tf.Tensor2D, logits: tf.Tensor2D): tf.Scalar {
  if (targets.shape[0] !== logits.shape[0] || targets.shape[1] !== logits.shape[1]) {
    throw new Error(`softCrossEntropy: targets [${targets.shape}] and logits [${logits.shape}] differ`);
  }
  return tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), 1))) as tf.Scalar);
}
