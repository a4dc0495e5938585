/**
 * The three M3 output heads over the encoder's last hidden state H [B, L, d] (FlagEmbedding
 * finetune/embedder/encoder_only/m3/modeling.py `_dense_embedding`, `_sparse_embedding`, `_colbert_embedding`).
 * Plain functions over tf tensors, shared by training (losses) and inference. Head weights use PyTorch's
 * Linear layout: weight [out, in], bias [out], exactly as `colbert_linear.pt` / `sparse_linear.pt` store them.
 */
import * as tf from '@tensorflow/tfjs';
import { l2Normalize, linear } from '../backend/ops';

/** The trainable M3 heads in PyTorch Linear layout. */
export interface M3Heads {
  /** sparse_linear.weight [1, d] */
  sparseWeight: tf.Tensor;
  /** sparse_linear.bias [1] */
  sparseBias: tf.Tensor;
  /** colbert_linear.weight [colbertDim, d] */
  colbertWeight: tf.Tensor;
  /** colbert_linear.bias [colbertDim] */
  colbertBias: tf.Tensor;
}

/** The heads under their checkpoint names (`sparse_linear.weight`, ...) in a parameter map. */
export function headsFromParams(params: Map<string, tf.Tensor>): M3Heads {
  const get = (name: string): tf.Tensor => {
    const t = params.get(name);
    if (!t) throw new Error(`missing head parameter '${name}'`);
    return t;
  };
  return {
    sparseWeight: get('sparse_linear.weight'),
    sparseBias: get('sparse_linear.bias'),
    colbertWeight: get('colbert_linear.weight'),
    colbertBias: get('colbert_linear.bias'),
  };
}

/** Masks arrive as int32 (host token masks) or float32; arithmetic needs float32. */
function floatMask(mask: tf.Tensor): tf.Tensor {
  return mask.dtype === 'float32' ? mask : tf.cast(mask, 'float32');
}

/** Dense embedding: the CLS hidden state, L2-normalised. [B, L, d] → [B, d]. */
export function denseEmbedding(hidden: tf.Tensor3D): tf.Tensor2D {
  return tf.tidy(() => {
    const [b, , d] = hidden.shape;
    return l2Normalize(tf.reshape(tf.slice(hidden, [0, 0, 0], [b, 1, d]), [b, d])) as tf.Tensor2D;
  });
}

/**
 * Per-token lexical weights relu(H·wᵀ + b) [B, L]. With `mask`, padded positions are zeroed (inference
 * needs that; in training the pad id is a special id and drops out of the sparse score anyway).
 */
export function sparseTokenWeights(hidden: tf.Tensor3D, weight: tf.Tensor, bias: tf.Tensor, mask?: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => {
    const [b, l] = hidden.shape;
    let w = tf.reshape(tf.relu(linear(hidden, weight, bias)), [b, l]);
    if (mask) w = tf.mul(w, floatMask(mask));
    return w as tf.Tensor2D;
  });
}

/**
 * ColBERT vectors of every position after CLS: colbert_linear(H[:, 1:]), padded positions zeroed,
 * L2-normalised per token. [B, L, d] → [B, L−1, colbertDim].
 *
 * The reference masks before normalising (a zero row stays zero); masking after normalising gives the same
 * values and keeps the gradient of padded rows at exactly 0 instead of routing it through the 1/eps slope
 * the normaliser has at the origin.
 */
export function colbertVectors(hidden: tf.Tensor3D, mask: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, l, d] = hidden.shape;
    const body = tf.slice(hidden, [0, 1, 0], [b, l - 1, d]);
    const bodyMask = tf.reshape(tf.slice(floatMask(mask), [0, 1], [b, l - 1]), [b, l - 1, 1]);
    return tf.mul(l2Normalize(linear(body, weight, bias)), bodyMask) as tf.Tensor3D;
  });
}
