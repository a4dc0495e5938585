/**
 * Cross-entropy with integer targets, PyTorch `F.cross_entropy` semantics (mean over the rows whose target
 * is not `ignoreIndex`, default −100):
 *   CE = −(1/|K|) Σ_{n∈K} log softmax(z_n)[t_n]
 * Written as logSoftmax + a flat gather of the target entries: no [N, C] one-hot is built (C can be a
 * 250k vocabulary), and the gather's gradient is a segment sum, which every backend has (wasm through
 * src/backend/wasm-fixes.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { ops } from '../backend/ops';

export const IGNORE_INDEX = -100;

// Flat indices n·C + t must stay within int32.
const MAX_FLAT_INDEX = 2 ** 31 - 1;

/** −log softmax(z_n)[t_n] for every row: [N, C] logits, N targets → [N]. */
export function crossEntropyPerRow(logits: tf.Tensor2D, targets: Int32Array | number[]): tf.Tensor1D {
  const [n, c] = logits.shape;
  if (targets.length !== n) throw new Error(`crossEntropy: ${targets.length} targets for ${n} rows`);
  for (const t of targets) if (!(t >= 0 && t < c)) throw new Error(`crossEntropy: target ${t} is outside 0..${c - 1}`);
  const fused = ops().softmaxCrossEntropy;
  if (fused) return tf.tidy(() => fused(logits, tf.tensor1d(Int32Array.from(targets), 'int32')));
  return tf.tidy(() => {
    const logp = tf.logSoftmax(logits);
    const rowsPerChunk = Math.max(1, Math.floor(MAX_FLAT_INDEX / c));
    const parts: tf.Tensor[] = [];
    for (let start = 0; start < n; start += rowsPerChunk) {
      const rows = Math.min(rowsPerChunk, n - start);
      const block = rows === n ? logp : tf.slice(logp, [start, 0], [rows, c]);
      const idx = Int32Array.from({ length: rows }, (_, r) => r * c + targets[start + r]);
      parts.push(tf.gather(tf.reshape(block, [rows * c]), tf.tensor1d(idx, 'int32')));
    }
    return tf.neg(parts.length === 1 ? parts[0] : tf.concat(parts)) as tf.Tensor1D;
  });
}

/**
 * Mean cross-entropy over the rows whose target is not `ignoreIndex`. With no such row the result is 0
 * (PyTorch gives NaN there; a batch without targets carries no signal and must not poison the step).
 */
export function crossEntropy(logits: tf.Tensor2D, targets: Int32Array | number[], ignoreIndex = IGNORE_INDEX): tf.Scalar {
  return tf.tidy(() => {
    const kept: number[] = [];
    for (let i = 0; i < targets.length; i++) if (targets[i] !== ignoreIndex) kept.push(i);
    if (kept.length === 0) return tf.scalar(0);
    if (kept.length === targets.length) return tf.mean(crossEntropyPerRow(logits, targets)) as tf.Scalar;
    const rows = tf.gather(logits, tf.tensor1d(kept, 'int32')) as tf.Tensor2D;
    return tf.mean(crossEntropyPerRow(rows, kept.map((i) => targets[i]))) as tf.Scalar;
  });
}

/**
 * Mean cross-entropy of the logits of a linear output layer, x·Wᵀ + b (x [N, d], W [V, d], b [V]), against
 * in-range targets. The backend's fused kernel computes it without keeping the [N, V] logits (torch).
 */
export function linearCrossEntropy(x: tf.Tensor2D, weight: tf.Tensor2D, bias: tf.Tensor1D, targets: Int32Array | number[]): tf.Scalar {
  const fused = ops().linearCrossEntropy;
  return tf.tidy(() => {
    if (!fused) return tf.mean(crossEntropyPerRow(tf.add(tf.matMul(x, weight, false, true), bias) as tf.Tensor2D, targets)) as tf.Scalar;
    const v = weight.shape[0];
    for (const t of targets) if (!(t >= 0 && t < v)) throw new Error(`crossEntropy: target ${t} is outside 0..${v - 1}`);
    return tf.mean(fused(x, weight, bias, tf.tensor1d(Int32Array.from(targets), 'int32'))) as tf.Scalar;
  });
}
