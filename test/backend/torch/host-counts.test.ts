/**
 * What a step costs the host, as the bench counts it (src/backend/torch hostCounts): TF.js kernel
 * invocations, calls into the addon, ATen operator calls the addon made, the kernels' own time; and the
 * M3_TORCH_PROFILE report: one `NAME  T ms  N calls` row for every kernel that ran, nothing else ending in
 * `calls`.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../../src/backend';
import { hostCounts, setKernelTiming } from '../../../src/backend/torch';
import { describeTorch } from './setup';

describeTorch('host-cost counters on torch', () => {
  beforeAll(() => useBackend('torch'));

  test('one Add: one TF.js kernel, one ATen call, and the addon calls that carried it', () => {
    const [a, b] = [tf.tensor1d([1, 2, 3]), tf.tensor1d([4, 5, 6])];
    const before = hostCounts();
    const c = tf.add(a, b);
    const after = hostCounts();
    expect(after.tfjsKernels - before.tfjsKernels).toBe(1);
    expect(after.atenCalls - before.atenCalls).toBe(1); // aten::add.Tensor
    expect(after.addonCalls - before.addonCalls).toBeGreaterThanOrEqual(2); // the call, then the result's meta
    const read = hostCounts();
    expect(Array.from(c.dataSync())).toEqual([5, 7, 9]);
    expect(hostCounts().addonCalls - read.addonCalls).toBe(1); // toArray; reading the counters is not counted
    tf.dispose([a, b, c]);
  });

  test('kernel time accumulates only while timing is on', () => {
    const x = tf.randomNormal([64, 64]);
    const start = hostCounts().kernelMs;
    tf.dispose(tf.matMul(x, x));
    expect(hostCounts().kernelMs).toBe(start);
    setKernelTiming(true);
    try {
      tf.dispose(tf.matMul(x, x));
      expect(hostCounts().kernelMs).toBeGreaterThan(start);
    } finally {
      setKernelTiming(false);
      x.dispose();
    }
  });

  test('M3_TORCH_PROFILE=1 prints a row for every kernel that ran, and no other line ends in "calls"', () => {
    const root = path.resolve(__dirname, '../../..');
    // 45 distinct kernels: more than the 40 rows the profile used to print
    const script = `
      const tf = require('@tensorflow/tfjs');
      require('./src/backend').useBackend('torch').then(() => {
        const x = tf.tensor2d([[1, 2], [3, 4]]);
        const unary = ['abs', 'neg', 'exp', 'log1p', 'sqrt', 'square', 'relu', 'sigmoid', 'tanh', 'sin', 'cos', 'floor', 'ceil', 'round', 'sign',
          'reciprocal', 'softplus', 'elu', 'selu', 'erf', 'expm1', 'atan', 'asinh', 'rsqrt', 'logSigmoid', 'relu6', 'isNaN', 'isFinite', 'cumsum', 'softmax'];
        for (const f of unary) tf[f](x);
        for (const f of ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'pow', 'squaredDifference', 'greater', 'less', 'equal', 'matMul', 'atan2', 'floorDiv', 'mod']) tf[f](x, x);
      });`;
    const r = spawnSync(process.execPath, ['-r', './bin/register.js', '-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, M3_TORCH_PROFILE: '1' } });
    expect(r.status).toBe(0);
    const lines = r.stderr.split('\n');
    const rows = lines.filter((l) => / calls$/.test(l));
    expect(rows.length).toBeGreaterThan(40);
    for (const row of rows) expect(row).toMatch(/^\S+\s+\d+\.\d ms\s+\d+ calls$/);
    for (const name of ['Add', 'BatchMatMul', 'Softmax', 'Mod']) expect(rows.some((l) => l.startsWith(name + ' '))).toBe(true);
    expect(lines.some((l) => /^torch kernel profile \(\d+ ms in kernels\)$/.test(l))).toBe(true);
  }, 60_000);
});
