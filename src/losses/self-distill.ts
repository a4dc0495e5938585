/**
 * Self-knowledge distillation of the unified loss (paper arXiv 2402.03216 §3.3 eqs. 2–4; FlagEmbedding
 * m3/modeling.py forward, `use_self_distill` branch):
 *   T  = softmax(stop_gradient(s_e)) over each score row
 *   L' = (λ_d·SCE(T, s_d) + λ_s·SCE(T, s_s) + λ_c·SCE(T, s_c)) / 3,   SCE(T, s) = −mean_b Σ_c T·log softmax(s)
 * with loss weights λ = (1, 0.1, 1). The teacher is detached: no gradient reaches s_e through T.
 */
import * as tf from '@tensorflow/tfjs';
import { HeadWeights } from './ensemble-score';
import { softCrossEntropy } from './soft-cross-entropy';
import { stopGradient } from './stop-gradient';

/** The self-distillation teacher: softmax of the ensemble score with the gradient stopped. */
export function selfDistillTeacher(ensemble: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.softmax(stopGradient(ensemble)) as tf.Tensor2D);
}

export function selfDistillLoss(
  scores: { dense: tf.Tensor2D; sparse: tf.Tensor2D; colbert: tf.Tensor2D }, teacher: tf.Tensor2D, lossWeights: HeadWeights,
): tf.Scalar {
  return tf.tidy(() => {
    const terms = [
      tf.mul(softCrossEntropy(teacher, scores.dense), lossWeights.dense),
      tf.mul(softCrossEntropy(teacher, scores.sparse), lossWeights.sparse),
      tf.mul(softCrossEntropy(teacher, scores.colbert), lossWeights.colbert),
    ];
    return tf.div(tf.addN(terms), 3) as tf.Scalar;
  });
}
