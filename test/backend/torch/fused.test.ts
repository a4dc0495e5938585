/**
 * Fused kernels (native forward and backward) against the TF.js composites they replace, on the torch
 * backend: values and gradients of every input, and the composite path on other backends.
 */
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { addon } from '../../../src/backend/torch/addon';
import { attention, gelu, layerNorm, linear, linearCrossEntropy, softmaxCrossEntropy } from '../../../src/backend/torch/fused';
import { compositeLinearCrossEntropy, compositeOps } from '../../../src/backend/ops';
import { describeTorch, expectSame, rand, runOn } from './setup';

type Fn = (xs: tf.Tensor[]) => tf.Tensor;

/** [B, L, 12] → [B, 3, L, 4] and back: the composite's head split and merge. */
const split3 = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [t.shape[0], -1, 3, 4]), [0, 2, 1, 3]);
const heads3 = (t: tf.Tensor) => tf.reshape(tf.transpose(t, [0, 2, 1, 3]), [t.shape[0], -1, 12]);

/** Value and gradients of sum(f(xs) · w) for a fixed weighting w, so every output element matters. */
function valueAndGrads(f: Fn, inputs: () => tf.Tensor[], wrt: number[]): () => tf.Tensor[] {
  return () => {
    const xs = inputs();
    const weighted = (...args: tf.Tensor[]) => {
      const all = xs.map((x, i) => (wrt.includes(i) ? args[wrt.indexOf(i)] : x));
      const y = f(all);
      return tf.sum(tf.mul(y, rand(y.shape, 99)));
    };
    const { value, grads } = tf.valueAndGrads(weighted)(wrt.map((i) => xs[i]));
    return [tf.reshape(f(xs), [-1]), value, ...grads];
  };
}

const tol = { atol: 2e-5, rtol: 2e-4 };

describeTorch('fused torch kernels vs TF.js composites', () => {
  afterAll(() => tf.setBackend('cpu'));

  const cases: Array<[string, Fn, Fn, () => tf.Tensor[], number[]]> = [
    [
      'layerNorm [2, 5, 16]',
      ([x, g, b]) => layerNorm(x, g, b, 1e-5),
      ([x, g, b]) => compositeOps.layerNorm(x, g, b, 1e-5),
      () => [rand([2, 5, 16], 1, 3), tf.add(rand([16], 2), 1), rand([16], 3)],
      [0, 1, 2],
    ],
    ['gelu', ([x]) => gelu(x), ([x]) => compositeOps.gelu(x), () => [rand([4, 33], 4, 4)], [0]],
    [
      'layerNorm of x + residual [2, 5, 16]',
      ([x, r, g, b]) => layerNorm(x, g, b, 1e-5, r),
      ([x, r, g, b]) => compositeOps.layerNorm(tf.add(x, r), g, b, 1e-5),
      () => [rand([2, 5, 16], 11, 3), rand([2, 5, 16], 12), tf.add(rand([16], 2), 1), rand([16], 3)],
      [0, 1, 2, 3],
    ],
    [
      'linear [2, 5, 8] × [6, 8] + [6] (leading dims folded)',
      ([x, w, b]) => linear(x, w, b),
      ([x, w, b]) => tf.add(tf.reshape(tf.matMul(tf.reshape(x, [10, 8]), w, false, true), [2, 5, 6]), b),
      () => [rand([2, 5, 8], 13), rand([6, 8], 14), rand([6], 15)],
      [0, 1, 2],
    ],
    [
      'linear [4, 160, 24] × [40, 24] + [40] (640 rows: oneDNN sgemm where libtorch ships it)',
      ([x, w, b]) => linear(x, w, b),
      ([x, w, b]) => tf.add(tf.reshape(tf.matMul(tf.reshape(x, [640, 24]), w, false, true), [4, 160, 40]), b),
      () => [rand([4, 160, 24], 16), rand([40, 24], 17), rand([40], 18)],
      [0, 1, 2],
    ],
    [
      'attention, 3 heads, with a padding mask',
      ([q, k, v, m]) => attention(q, k, v, m, 0.25, 3),
      ([q, k, v, m]) => heads3(tf.matMul(tf.softmax(tf.add(tf.mul(tf.matMul(split3(q), split3(k), false, true), 0.25), m)), split3(v))),
      () => [rand([2, 5, 12], 5), rand([2, 7, 12], 6), rand([2, 7, 12], 7), tf.reshape(tf.tensor([0, 0, 0, -1e9, -1e9, 0, 0, 0, 0, 0, 0, -1e9, 0, 0]), [2, 1, 1, 7])],
      [0, 1, 2],
    ],
    [
      'attention, 3 heads, no mask',
      ([q, k, v]) => attention(q, k, v, null, 0.25, 3),
      ([q, k, v]) => heads3(tf.matMul(tf.softmax(tf.mul(tf.matMul(split3(q), split3(k), false, true), 0.25)), split3(v))),
      () => [rand([2, 5, 12], 5), rand([2, 7, 12], 6), rand([2, 7, 12], 7)],
      [0, 1, 2],
    ],
    [
      'linearCrossEntropy [6, 8] × [37, 8] (the MLM output layer)',
      ([x, w, b, t]) => linearCrossEntropy(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D, t as tf.Tensor1D),
      ([x, w, b, t]) => compositeLinearCrossEntropy(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D, t as tf.Tensor1D),
      () => [rand([6, 8], 8, 2), rand([37, 8], 9), rand([37], 10), tf.tensor1d([0, 36, 5, 5, 17, 2], 'int32')],
      [0, 1, 2],
    ],
  ];

  test.each(cases)('%s: value and gradients match the composite', async (name, fused, composite, inputs, wrt) => {
    const reference = await runOn('torch', valueAndGrads(composite, inputs, wrt));
    const viaFused = await runOn('torch', valueAndGrads(fused, inputs, wrt));
    expectSame(viaFused, reference, name, tol);
    // and the composite on torch agrees with the cpu backend, so the reference itself is sound
    expectSame(reference, await runOn('cpu', valueAndGrads(composite, inputs, wrt)), `${name} (cpu)`, tol);
  });

  test.each([
    ['all targets valid', [2, 0, 4]],
    ['an ignored row (-100)', [2, -100, 4]],
  ])('softmaxCrossEntropy, %s: per-row loss and logits gradient match logSoftmax + pick', async (_n, targets) => {
    const run = (useFused: boolean) => () => {
      const logits = rand([3, 5], 8, 3);
      const t = tf.tensor1d(targets as number[], 'int32');
      const f = (z: tf.Tensor) => {
        if (useFused) return softmaxCrossEntropy(z as tf.Tensor2D, t);
        const keep = tf.cast(tf.notEqual(t, -100), 'float32');
        const picked = tf.sum(tf.mul(tf.logSoftmax(z), tf.oneHot(tf.maximum(t, tf.scalar(0, 'int32')), 5)), -1);
        return tf.mul(tf.neg(picked), keep);
      };
      const { value, grad } = tf.valueAndGrad((z: tf.Tensor) => tf.sum(tf.mul(f(z), tf.tensor1d([1, 2, 3]))))(logits);
      return [f(logits), value, grad];
    };
    expectSame(await runOn('torch', run(true)), await runOn('torch', run(false)), 'softmaxCrossEntropy', tol);
  });

  test('oneDNN sgemm: op(a)·op(b) + bias for every transpose, present wherever libtorch loaded a shared oneDNN', async () => {
    await tf.setBackend('torch');
    const loaded = fs.readFileSync('/proc/self/maps', 'utf8').includes('libdnnl.so');
    const b = tf.backend() as unknown as { h(t: tf.TensorInfo): number; free(h: number): void };
    const a = rand([3, 5], 21);
    const m = rand([5, 4], 22);
    const bias = rand([4], 23);
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      // stored transposed (a fresh contiguous tensor: the backend's transpose is a view, which dnnlMm refuses)
      const stored = (t: tf.Tensor, trans: boolean) => (trans ? tf.tensor(tf.transpose(t).arraySync() as number[][]) : t);
      const [aT, mT] = [stored(a, ta), stored(m, tb)];
      const h = addon().dnnlMm(b.h(aT), b.h(mT), ta, tb, b.h(bias));
      if (!loaded) {
        expect(h).toBeNull();
        continue;
      }
      expect(h).not.toBeNull();
      const got = Array.from(addon().toArray(h!));
      b.free(h!);
      const want = Array.from(tf.add(tf.matMul(a, m), bias).dataSync());
      expectSame([{ shape: [12], dtype: 'float32', values: got }], [{ shape: [12], dtype: 'float32', values: want }], `transA ${ta}, transB ${tb}`, tol);
    }
  });

  test('on other backends the fused functions compute the composites', async () => {
    const x = () => [rand([2, 6], 9)];
    expectSame(await runOn('cpu', () => gelu(x()[0])), await runOn('torch', () => gelu(x()[0])), 'gelu', tol);
  });

  test('fused ops keep memory flat across forward+backward steps', async () => {
    await tf.setBackend('torch');
    const x = tf.variable(rand([2, 5, 16], 10));
    const g = tf.variable(tf.ones([16]));
    const b = tf.variable(tf.zeros([16]));
    const step = () => {
      const { value, grads } = tf.variableGrads(() => tf.sum(gelu(layerNorm(x, g, b, 1e-5))) as tf.Scalar);
      tf.dispose([value, ...Object.values(grads)]);
    };
    step();
    const before = { ...tf.memory() } as tf.MemoryInfo & { nativeHandles: number };
    for (let i = 0; i < 5; i++) step();
    const after = tf.memory() as tf.MemoryInfo & { nativeHandles: number };
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.nativeHandles).toBe(before.nativeHandles);
    tf.dispose([x, g, b]);
  });

  test('linearCrossEntropy releases its [N, V] blocks: no native handle or large block outlives a step', async () => {
    await tf.setBackend('torch');
    const { addon } = await import('../../../src/backend/torch/addon');
    const x = tf.variable(rand([64, 16], 11));
    const w = tf.variable(rand([20000, 16], 12)); // [64, 20000] float32 = 5 MB: a large (cached) block
    const b = tf.variable(tf.zeros([20000]));
    const t = tf.tensor1d(Array.from({ length: 64 }, (_, i) => (i * 311) % 20000), 'int32');
    const step = () => {
      const { value, grads } = tf.variableGrads(() => tf.mean(linearCrossEntropy(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D, t)) as tf.Scalar);
      tf.dispose([value, ...Object.values(grads)]);
    };
    step();
    const before = { handles: (tf.memory() as tf.MemoryInfo & { nativeHandles: number }).nativeHandles, live: addon().cpuMemory().liveBytes };
    for (let i = 0; i < 3; i++) step();
    expect((tf.memory() as tf.MemoryInfo & { nativeHandles: number }).nativeHandles).toBe(before.handles);
    expect(addon().cpuMemory().liveBytes).toBe(before.live);
    tf.dispose([x, w, b, t]);
  });
});
