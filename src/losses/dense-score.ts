/**
 * Dense score (paper arXiv 2402.03216 §3.2; FlagEmbedding AbsModeling `compute_score` with normalised CLS
 * embeddings): s_dense[q, p] = ⟨e_q, e_p⟩ / τ over L2-normalised embeddings (src/model/heads.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { checkOwnGroup, ScoreOptions } from './layout';

/** [Bq, d] × [Bp, d] → [Bq, Bp] (or [B, G] own-group), divided by τ. */
export function denseScores(queries: tf.Tensor2D, passages: tf.Tensor2D, opts: ScoreOptions = {}): tf.Tensor2D {
  const tau = opts.temperature ?? 1;
  return tf.tidy(() => {
    let s: tf.Tensor;
    if (opts.ownGroupSize === undefined) {
      s = tf.matMul(queries, passages, false, true);
    } else {
      const [b, d] = queries.shape;
      const g = opts.ownGroupSize;
      checkOwnGroup(b, passages.shape[0], g, 'denseScores');
      s = tf.sum(tf.mul(tf.reshape(queries, [b, 1, d]), tf.reshape(passages, [b, g, d])), 2);
    }
    return (tau === 1 ? s : tf.div(s, tau)) as tf.Tensor2D;
  });
}
