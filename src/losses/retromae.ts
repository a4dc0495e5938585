/**
 * RetroMAE pre-training loss (Xiao et al., 2022, arXiv 2205.12035; staoxiao/RetroMAE
 * src/pretrain/modeling.py `RetroMAEForPretraining.forward`):
 *   L_enc = mean CE of the MLM logits of the encoder's hidden states over the masked-input labels
 *   L_dec = mean CE of the MLM logits of the enhanced decoder's output over the decoder labels
 *   L     = L_enc + L_dec
 * Both use the same MLM head, passed in (src/model/retromae.ts computes the hidden states and owns the
 * head): a transform of the hidden rows, then an output layer tied to the word embeddings. Labels −100 are
 * ignored; logits are computed only at labelled rows (the CE is per row, so this is exact and spares the
 * [B·L, V] product at unlabelled ones), and the output layer and its CE run as one `linearCrossEntropy`.
 */
import * as tf from '@tensorflow/tfjs';
import { IGNORE_INDEX, linearCrossEntropy } from './cross-entropy';

/** An MLM head: hidden rows [N, d] → transformed rows [N, d], then logits = rows·weightᵀ + bias [N, V]. */
export interface MlmHead {
  transform: (rows: tf.Tensor2D) => tf.Tensor2D;
  weight: tf.Tensor2D;
  bias: tf.Tensor1D;
}

/** Mean MLM cross-entropy of hidden states [B, L, d] against labels [B·L] (−100 ignored); 0 with no label. */
export function mlmLoss(hidden: tf.Tensor3D, labels: Int32Array, head: MlmHead): tf.Scalar {
  const [b, l, d] = hidden.shape;
  if (labels.length !== b * l) throw new Error(`RetroMAE: ${labels.length} labels for a [${b}, ${l}] batch`);
  return tf.tidy(() => {
    const rows: number[] = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] !== IGNORE_INDEX) rows.push(i);
    if (rows.length === 0) return tf.scalar(0);
    const picked = tf.gather(tf.reshape(hidden, [b * l, d]), tf.tensor1d(rows, 'int32')) as tf.Tensor2D;
    return linearCrossEntropy(head.transform(picked), head.weight, head.bias, rows.map((i) => labels[i]));
  });
}

export interface RetroMaeLoss {
  loss: tf.Scalar;
  encoderLoss: tf.Scalar;
  decoderLoss: tf.Scalar;
}

/** L = L_enc + L_dec over the encoder's and the decoder's hidden states [B, L, d]. */
export function retroMaeLoss(
  encoderHidden: tf.Tensor3D, encoderLabels: Int32Array, decoderHidden: tf.Tensor3D, decoderLabels: Int32Array, head: MlmHead,
): RetroMaeLoss {
  return tf.tidy(() => {
    const encoderLoss = mlmLoss(encoderHidden, encoderLabels, head);
    const decoderLoss = mlmLoss(decoderHidden, decoderLabels, head);
    return { loss: tf.add(encoderLoss, decoderLoss) as tf.Scalar, encoderLoss, decoderLoss };
  });
}
