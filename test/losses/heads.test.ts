/**
 * The M3 heads (src/model/heads.ts) at their edges: all-zero rows normalise to zero with finite gradients,
 * padding is zeroed, CLS is excluded from the ColBERT vectors.
 */
import * as tf from '@tensorflow/tfjs';
import { colbertVectors, denseEmbedding, sparseTokenWeights } from '../../src/model/heads';
import { randomNormal, testBackends } from './helpers';

let backends: string[];
beforeAll(async () => {
  backends = await testBackends();
});

test('zero rows stay zero with finite gradients; padding and CLS are dropped', async () => {
  for (const backend of backends) {
    await tf.setBackend(backend);
    tf.tidy(() => {
      const h = randomNormal([2, 4, 6], 80).mul(tf.tensor3d([1, 1, 1, 1, 0, 1, 1, 1], [2, 4, 1])) as tf.Tensor3D; // row 1's CLS is all zero
      const mask = tf.tensor2d([[1, 1, 1, 0], [1, 1, 1, 1]], [2, 4], 'int32');
      const zeroW = tf.zeros([5, 6]);
      const zeroB = tf.zeros([5]);
      const dense = denseEmbedding(h);
      expect(Array.from(dense.slice([1, 0], [1, 6]).dataSync()).every((x) => x === 0)).toBe(true);
      const norms = tf.norm(dense.slice([0, 0], [1, 6])).dataSync()[0];
      expect(norms).toBeCloseTo(1, 5);

      const colbert = colbertVectors(h, mask, randomNormal([5, 6], 81), randomNormal([5], 82));
      expect(colbert.shape).toEqual([2, 3, 5]);
      expect(Array.from(colbert.slice([0, 2, 0], [1, 1, 5]).dataSync()).every((x) => x === 0)).toBe(true); // padded position 3
      expect(tf.norm(colbert.slice([1, 0, 0], [1, 1, 5])).dataSync()[0]).toBeCloseTo(1, 5);
      // With a zero head every ColBERT vector is zero; the gradient must still be finite.
      const grads = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.add(tf.sum(colbertVectors(x as tf.Tensor3D, mask, w, zeroB)), tf.sum(denseEmbedding(x as tf.Tensor3D))))([h, zeroW]);
      for (const g of grads) expect(Array.from(g.dataSync()).every(Number.isFinite)).toBe(true);

      const sparse = sparseTokenWeights(h, tf.ones([1, 6]), tf.tensor1d([0.5]), mask);
      expect(sparse.shape).toEqual([2, 4]);
      const v = sparse.dataSync();
      expect(v[3]).toBe(0); // padding
      expect(v[4]).toBeCloseTo(0.5, 6); // zero hidden row: relu(0 + bias)
      expect(Array.from(v).every((x) => x >= 0)).toBe(true);
    });
  }
});
