/**
 * Native kernels against TF.js's cpu backend: the same op on the same inputs must give the same shape,
 * dtype and values; gradients are compared the same way. Cases favour what the framework uses
 * (broadcasting, transposed matmuls, axis reductions, gathers, int32 index math).
 */
import * as tf from '@tensorflow/tfjs';
import { fallbackStats, resetFallbackStats } from '../../../src/backend/torch';
import { describeTorch, expectSame, rand, runOn } from './setup';

type Case = [string, () => tf.Tensor | tf.Tensor[]];

const a34 = () => rand([3, 4], 1);
const b34 = () => rand([3, 4], 2);
const pos34 = () => tf.add(tf.abs(rand([3, 4], 3)), 0.1);
const ints = () => tf.tensor2d([[3, -7, 0, 5], [-2, 9, 4, -1], [8, 1, -6, 2]], [3, 4], 'int32');

const unary: Case[] = (
  ['abs', 'acos', 'asin', 'atan', 'ceil', 'cos', 'cosh', 'elu', 'erf', 'exp', 'expm1', 'floor', 'neg', 'relu', 'relu6', 'round',
    'selu', 'sigmoid', 'sign', 'sin', 'sinh', 'softplus', 'square', 'step', 'tan', 'tanh', 'isNaN', 'isFinite', 'logicalNot'] as const
).map((op) => [op, () => (tf as any)[op](op === 'logicalNot' ? tf.greater(a34(), 0) : op === 'acos' || op === 'asin' ? tf.mul(a34(), 0.9) : a34())]);
const positiveUnary: Case[] = (['log', 'log1p', 'sqrt', 'rsqrt', 'reciprocal', 'acosh'] as const).map((op) => [
  op, () => (tf as any)[op](op === 'acosh' ? tf.add(pos34(), 1) : pos34()),
]);

const binary: Case[] = (['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'squaredDifference', 'atan2', 'floorDiv', 'mod',
  'equal', 'notEqual', 'greater', 'greaterEqual', 'less', 'lessEqual'] as const).flatMap((op): Case[] => [
  [`${op} same shape`, () => (tf as any)[op](a34(), b34())],
  [`${op} broadcast row`, () => (tf as any)[op](a34(), rand([4], 5))],
  [`${op} broadcast column`, () => (tf as any)[op](rand([3, 1], 6), b34())],
]);

const cases: Case[] = [
  ...unary, ...positiveUnary, ...binary,
  ['pow', () => tf.pow(pos34(), b34())],
  ['leakyRelu', () => tf.leakyRelu(a34(), 0.1)],
  ['prelu', () => tf.prelu(a34(), rand([4], 9))],
  ['clipByValue', () => tf.clipByValue(a34(), -0.3, 0.4)],
  ['logicalAnd/Or', () => [tf.logicalAnd(tf.greater(a34(), 0), tf.less(b34(), 0)), tf.logicalOr(tf.greater(a34(), 0), tf.less(b34(), 0))]],
  ['addN', () => tf.addN([a34(), b34(), pos34()])],
  // int32 arithmetic stays int32; an int32 tensor plus a JS number becomes float32 in TF.js (same on both)
  ['int32 add/mul/sub', () => [tf.add(ints(), ints()), tf.mul(ints(), ints()), tf.sub(ints(), tf.scalar(3, 'int32'))]],
  ['int32 floorDiv/mod/div', () => [tf.floorDiv(ints(), tf.scalar(3, 'int32')), tf.mod(ints(), tf.scalar(3, 'int32')), tf.div(ints(), tf.scalar(2, 'int32'))]],
  ['int32 + number', () => tf.add(ints(), 2)],
  ['int32 abs/neg/square/maximum', () => [tf.abs(ints()), tf.neg(ints()), tf.square(ints()), tf.maximum(ints(), tf.scalar(0, 'int32'))]],
  // reductions
  ...(['sum', 'mean', 'max', 'min', 'prod'] as const).flatMap((op): Case[] => [
    [`${op} all`, () => (tf as any)[op](a34())],
    [`${op} axis 0`, () => (tf as any)[op](a34(), 0)],
    [`${op} axis -1 keepDims`, () => (tf as any)[op](a34(), -1, true)],
    [`${op} axes [0, 2] of 3-D`, () => (tf as any)[op](rand([2, 3, 4], 11), [0, 2])],
  ]),
  ['sum/mean of int32 and bool', () => [tf.sum(ints(), 1), tf.mean(ints(), 0), tf.sum(tf.greater(a34(), 0), 1)]],
  ['all/any', () => [tf.all(tf.greater(a34(), -0.5), 1), tf.any(tf.greater(a34(), 0.5), [0, 1])]],
  ['argMax/argMin', () => [tf.argMax(a34(), 1), tf.argMin(a34(), 0), tf.argMax(ints(), -1)]],
  ['logSumExp', () => tf.logSumExp(a34(), -1)],
  // matrix products
  ['matMul', () => tf.matMul(rand([5, 3], 12), rand([3, 4], 13))],
  ['matMul transposeA', () => tf.matMul(rand([3, 5], 12), rand([3, 4], 13), true, false)],
  ['matMul transposeB', () => tf.matMul(rand([5, 3], 12), rand([4, 3], 13), false, true)],
  ['matMul both transposed', () => tf.matMul(rand([3, 5], 12), rand([4, 3], 13), true, true)],
  ['batch matMul', () => tf.matMul(rand([2, 4, 5, 3], 14), rand([2, 4, 3, 6], 15))],
  // (broadcasting where both sides have batch dims is left out: the cpu backend indexes batches modulo
  // their count instead of broadcasting, so it is not a reference there)
  ['batch matMul broadcast', () => [tf.matMul(rand([2, 4, 5, 3], 14), rand([3, 6], 15)), tf.matMul(rand([1, 5, 3], 14), rand([4, 3, 6], 15))]],
  ['batch matMul transposes', () => tf.matMul(rand([2, 3, 5], 14), rand([2, 6, 3], 15), true, true)],
  ['fused matMul bias relu', () => tf.fused.matMul({ a: rand([5, 3], 12), b: rand([3, 4], 13), bias: rand([4], 16), activation: 'relu' })],
  ['softmax', () => tf.softmax(rand([2, 3, 7], 17, 4))],
  ['logSoftmax', () => tf.logSoftmax(rand([3, 7], 18, 4))],
  // indexing
  ['gather axis 0', () => tf.gather(rand([5, 3], 19), tf.tensor1d([4, 0, 0, 2], 'int32'))],
  ['gather axis 1, 2-D indices', () => tf.gather(rand([2, 5, 3], 19), tf.tensor2d([[1, 4], [0, 0]], [2, 2], 'int32'), 1)],
  ['gatherND', () => tf.gatherND(rand([4, 3, 2], 20), tf.tensor2d([[0, 1], [3, 2], [3, 2]], [3, 2], 'int32'))],
  ['scatterND with duplicates', () => tf.scatterND(tf.tensor2d([[1], [3], [1]], [3, 1], 'int32'), rand([3, 2], 21), [5, 2])],
  ['tensorScatterUpdate', () => tf.tensorScatterUpdate(rand([5, 2], 22), tf.tensor2d([[1], [3]], [2, 1], 'int32'), rand([2, 2], 21))],
  ['unsortedSegmentSum', () => tf.unsortedSegmentSum(rand([6, 3], 23), tf.tensor1d([2, 0, 2, -1, 1, 7], 'int32'), 4)],
  ['oneHot', () => [tf.oneHot(tf.tensor1d([0, 3, -1, 2], 'int32'), 4), tf.oneHot(tf.tensor1d([1, 2], 'int32'), 3, 5, -1)]],
  ['topk', () => { const r = tf.topk(tf.tensor1d([1, 5, 3, 5, 2, 5]), 4); return [r.values, r.indices]; }],
  ['cumsum variants', () => [tf.cumsum(a34(), 1), tf.cumsum(a34(), 0, true), tf.cumsum(a34(), 1, false, true), tf.cumsum(a34(), 1, true, true), tf.cumsum(ints(), 1)]],
  ['cumprod', () => tf.cumprod(a34(), 1)],
  ['where/select', () => [tf.where(tf.greater(a34(), 0), a34(), b34()), tf.where(tf.greater(rand([4], 5), 0), a34(), b34())]],
  // creation
  ['range', () => [tf.range(0, 10, 3), tf.range(5, -3, -2, 'int32'), tf.range(2, 2), tf.range(0.5, 2.1, 0.4)]],
  ['fill/zerosLike/onesLike', () => [tf.fill([2, 3], 7.5), tf.fill([2], 3, 'int32'), tf.zerosLike(ints()), tf.onesLike(a34())]],
  ['linspace', () => tf.linspace(-1, 2, 7)],
  // layout
  ['reshape/transpose/expandDims/squeeze', () => [tf.reshape(a34(), [2, 6]), tf.transpose(rand([2, 3, 4], 24), [2, 0, 1]), tf.expandDims(a34(), -1), tf.squeeze(rand([3, 1, 4], 25))]],
  ['slice', () => [tf.slice(rand([4, 5, 3], 26), [1, 0, 1], [2, -1, 2]), tf.slice(a34(), [0, 3], [3, 1])]],
  ['stridedSlice', () => [
    tf.stridedSlice(rand([6, 5], 27), [1, 0], [6, 5], [2, 2]),
    tf.stridedSlice(rand([6, 5], 27), [5, 4], [0, 0], [-2, -1]),
    tf.stridedSlice(rand([6, 5], 27), [2, 0], [3, 5], [1, 1], 0, 0, 0, 0, 1),
  ]],
  ['concat/stack/unstack/split', () => [tf.concat([a34(), b34()], 1), tf.concat([a34(), b34()], 0), tf.stack([a34(), b34()], 1), ...tf.unstack(a34(), 1), ...tf.split(rand([6, 4], 28), [1, 2, 3], 0)]],
  ['concat mixed int32/float32 upcasts', () => tf.concat([tf.cast(ints(), 'float32'), a34()], 0)],
  ['pad/tile/reverse', () => [tf.pad(a34(), [[1, 0], [2, 1]], 0.5), tf.tile(rand([2, 3], 29), [2, 3]), tf.reverse(a34(), [0, 1])]],
  ['cast', () => [tf.cast(tf.mul(a34(), 10), 'int32'), tf.cast(ints(), 'float32'), tf.cast(ints(), 'bool'), tf.cast(tf.greater(a34(), 0), 'int32')]],
  ['einsum', () => [tf.einsum('ij,jk->ik', rand([3, 4], 30), rand([4, 2], 31)), tf.einsum('bij,bkj->bik', rand([2, 3, 4], 30), rand([2, 5, 4], 31))]],
  ['diag', () => tf.diag(tf.tensor1d([1, 2, 3]))],
];

/** Gradients of sum(f(inputs) · weights) w.r.t. every input. */
const gradCases: Array<[string, (xs: tf.Tensor[]) => tf.Tensor, () => tf.Tensor[]]> = [
  ['matMul transposes', ([x, y]) => tf.matMul(x, y, false, true), () => [rand([5, 3], 40), rand([4, 3], 41)]],
  ['batch matMul', ([x, y]) => tf.matMul(x, y), () => [rand([2, 5, 3], 40), rand([2, 3, 4], 41)]],
  ['broadcast add/mul/div', ([x, y]) => tf.div(tf.mul(tf.add(x, y), x), tf.add(tf.abs(y), 1)), () => [rand([3, 4], 42), rand([4], 43)]],
  ['softmax', ([x]) => tf.softmax(x), () => [rand([3, 6], 44, 3)]],
  ['logSoftmax', ([x]) => tf.logSoftmax(x), () => [rand([3, 6], 44, 3)]],
  ['gather', ([x]) => tf.gather(x, tf.tensor1d([2, 0, 2, 1], 'int32')), () => [rand([3, 5], 45)]],
  ['erf/tanh/sqrt/rsqrt', ([x]) => tf.add(tf.add(tf.erf(x), tf.tanh(x)), tf.add(tf.sqrt(tf.abs(x)), tf.rsqrt(tf.add(tf.abs(x), 1)))), () => [rand([3, 4], 46)]],
  ['mean/max/sum over axes', ([x]) => tf.add(tf.add(tf.mean(x, -1, true), tf.max(x, -1, true)), tf.sum(x, 0)), () => [rand([3, 4], 47)]],
  ['slice/concat/transpose/reshape', ([x]) => tf.reshape(tf.transpose(tf.concat([tf.slice(x, [0, 1], [3, 2]), x], 1), [1, 0]), [-1]), () => [rand([3, 4], 48)]],
  ['pad/tile/stack/split', ([x]) => tf.concat([tf.stack(tf.split(tf.tile(tf.pad(x, [[1, 1], [0, 2]]), [1, 2]), 2, 1)), tf.zeros([1, 5, 6])]), () => [rand([3, 4], 49)]],
  ['unsortedSegmentSum/oneHot matMul', ([x]) => tf.add(tf.sum(tf.unsortedSegmentSum(x, tf.tensor1d([1, 0, 1], 'int32'), 2)), tf.matMul(tf.oneHot(tf.tensor1d([2, 0], 'int32'), 3), x)), () => [rand([3, 4], 50)]],
  ['relu/leakyRelu/sigmoid/square', ([x]) => tf.add(tf.add(tf.relu(x), tf.leakyRelu(x, 0.2)), tf.add(tf.sigmoid(x), tf.square(x))), () => [rand([3, 4], 51)]],
  ['where/maximum/minimum', ([x, y]) => tf.add(tf.where(tf.greater(rand([3, 4], 54), 0), x, y), tf.sub(tf.maximum(x, y), tf.minimum(x, 0))), () => [rand([3, 4], 52), rand([3, 4], 53)]],
];

describeTorch('torch kernels vs the cpu backend', () => {
  afterAll(() => tf.setBackend('cpu'));

  test.each(cases)('%s', async (_name, fn) => {
    const cpu = await runOn('cpu', fn);
    resetFallbackStats();
    const torch = await runOn('torch', fn);
    expectSame(torch, cpu, _name);
    // these are all native kernels: none of them may have gone through the cpu fallback
    expect(fallbackStats()).toEqual({});
  });

  test.each(gradCases)('gradient: %s', async (name, f, inputs) => {
    const run = () => {
      const xs = inputs();
      const g = tf.grads((...args: tf.Tensor[]) => {
        const y = f(args);
        return tf.sum(tf.mul(y, tf.reshape(tf.range(1, y.size + 1), y.shape)));
      });
      return g(xs);
    };
    const cpu = await runOn('cpu', run);
    resetFallbackStats();
    const torch = await runOn('torch', run);
    expectSame(torch, cpu, name, { atol: 1e-4, rtol: 1e-4 });
    expect(fallbackStats()).toEqual({});
  });

  test('kernels still throw on invalid input (TF.js checks are kept)', async () => {
    await tf.setBackend('torch');
    expect(() => tf.matMul(tf.ones([2, 3]) as tf.Tensor2D, tf.ones([4, 2]) as tf.Tensor2D)).toThrow();
    expect(() => tf.gather(tf.ones([2, 3]), tf.tensor1d([5], 'int32'))).toThrow(/index/);
    expect(() => tf.stack([tf.ones([2]), tf.ones([2], 'int32')])).toThrow(/dtypes/);
  });

  test('string tensors stay in JS and take the counted cpu fallback', async () => {
    await tf.setBackend('torch');
    resetFallbackStats();
    const s = tf.tensor1d(['a', 'bc', 'def']);
    const r = tf.reshape(s, [3, 1]);
    expect(r.arraySync()).toEqual([['a'], ['bc'], ['def']]);
    expect(fallbackStats()).toEqual({ Reshape: 1 });
    tf.dispose([s, r]);
  });
});
