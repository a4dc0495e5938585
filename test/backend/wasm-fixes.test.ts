/** The wasm patches against TF.js's reference cpu backend: gather gradient, transposed matmuls, one-hot. */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';

async function onBoth<T>(fn: () => T): Promise<{ wasm: T; cpu: T }> {
  await useBackend('cpu');
  const cpu = fn();
  await useBackend('wasm');
  return { wasm: fn(), cpu };
}

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-4) => {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(tol * (1 + Math.abs(b[i])));
};

describe('wasm fixes', () => {
  test('gather has a gradient (UnsortedSegmentSum), repeated and out-of-order ids accumulate', async () => {
    const r = await onBoth(() => {
      const table = tf.tensor2d(Array.from({ length: 12 }, (_, i) => i * 0.5 - 2), [4, 3]);
      const ids = tf.tensor1d([3, 1, 3, 0, 3], 'int32');
      const w = tf.tensor2d(Array.from({ length: 15 }, (_, i) => Math.sin(i)), [5, 3]);
      return Array.from(tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, ids), w)))(table).dataSync());
    });
    close(r.wasm, r.cpu);
    expect(r.wasm.slice(6, 9)).toEqual([0, 0, 0]); // row 2 was never gathered
  });

  test.each([[false, false], [false, true], [true, false], [true, true]])('2-D matmul transposeA=%s transposeB=%s', async (ta, tb) => {
    const r = await onBoth(() => {
      const a = tf.randomNormal(ta ? [37, 21] : [21, 37], 0, 1, 'float32', 1);
      const b = tf.randomNormal(tb ? [19, 37] : [37, 19], 0, 1, 'float32', 2);
      return Array.from(tf.matMul(a, b, ta, tb).dataSync());
    });
    close(r.wasm, r.cpu);
  });

  test('batched matmul with transposes keeps the stock path and agrees', async () => {
    const r = await onBoth(() => {
      const a = tf.randomNormal([3, 5, 7], 0, 1, 'float32', 3);
      const b = tf.randomNormal([3, 4, 5], 0, 1, 'float32', 4);
      return Array.from(tf.matMul(a, b, true, true).dataSync());
    });
    close(r.wasm, r.cpu);
  });

  test('float32 one-hot holds ones, not int32 bits', async () => {
    const r = await onBoth(() => Array.from(tf.oneHot(tf.tensor1d([0, 2, 1], 'int32'), 3, 1, 0, 'float32').dataSync()));
    expect(r.wasm).toEqual([1, 0, 0, 0, 0, 1, 0, 1, 0]);
    expect(r.wasm).toEqual(r.cpu);
  });
});
