/**
 * The fused in-place AdamW kernel (TorchAdamW; on the CPU its one-pass loop, native/src/adamw.cc) and the
 * CPU's one-call update of every parameter (adamwMany → adamwCpuAll) against the TF.js composite of
 * src/train/adamw.ts: bit-equal results on torch, parameters and moments updated in their own memory when
 * nothing shares it, and a copy (never a write into shared memory) when a clone, view or second reference
 * holds the same data.
 */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../../src/backend';
import { ops } from '../../../src/backend/ops';
import { hostCounts } from '../../../src/backend/torch';
import { addon } from '../../../src/backend/torch/addon';
import { aten } from '../../../src/backend/torch/aten';
import { adamwStep, createAdamW, disposeAdamW } from '../../../src/train/adamw';
import { describeTorch, rand } from './setup';

// big.weight is large enough (2 M elements) for the one-pass CPU kernel to split it over threads
const NAMES = ['w.weight', 'w.bias', 'LayerNorm.weight', 'big.weight'];
const SHAPES = [[37, 19], [19], [19], [1031, 2053]];

function makeParams(): Map<string, tf.Variable> {
  return new Map(NAMES.map((n, i) => [n, tf.tidy(() => tf.variable(rand(SHAPES[i], i + 1)))]));
}

/**
 * Three AdamW steps with weight decay; returns params and moments as arrays. `all`: every parameter in one
 * call (the CPU's adamwMany); `each`: the TorchAdamW kernel per parameter; `composite`: TF.js ops.
 */
function run(mode: 'all' | 'each' | 'composite', hold?: (params: Map<string, tf.Variable>) => tf.Tensor[]) {
  const params = makeParams();
  const opt = createAdamW({ lr: 3e-3, weightDecay: 0.1, eps: 1e-6 });
  const held = hold ? hold(params) : [];
  const heldValues = held.map((t) => Array.from(t.dataSync()));
  // Without the backend's ops adamwStep takes the per-parameter kernel, or the composite.
  const { adamwMany, adamw } = ops();
  if (mode !== 'all') delete ops().adamwMany;
  if (mode === 'composite') delete ops().adamw;
  try {
    for (let step = 0; step < 3; step++) {
      const grads = new Map(NAMES.map((n, i) => [n, rand(SHAPES[i], 10 * step + i + 5, 0.5)]));
      adamwStep(opt, params, grads, 3e-3);
      tf.dispose([...grads.values()]);
    }
    const read = (m: Map<string, tf.Tensor>) => NAMES.map((n) => Buffer.from((m.get(n)!.dataSync() as Float32Array).buffer));
    const out = { params: read(params), m: read(opt.m), v: read(opt.v), heldAfter: held.map((t) => Array.from(t.dataSync())), heldValues };
    return out;
  } finally {
    Object.assign(ops(), { adamwMany, adamw });
    tf.dispose(held);
    disposeAdamW(opt);
    tf.dispose([...params.values()]);
  }
}

function expectSameBits(a: Buffer[], b: Buffer[]): void {
  expect(a.map((x, i) => x.equals(b[i]))).toEqual(a.map(() => true));
}

describeTorch('fused AdamW on torch', () => {
  beforeAll(() => useBackend('torch')); // with the torch backend's fused ops (src/backend/ops.ts)
  afterAll(() => tf.setBackend('cpu'));

  test('is registered and gives exactly the composite results, per parameter and all in one call', () => {
    expect(tf.getKernel('TorchAdamW', 'torch')).toBeDefined();
    expect(ops().adamwMany).toBeDefined();
    const all = run('all');
    const each = run('each');
    const composite = run('composite');
    for (const k of ['params', 'm', 'v'] as const) {
      expectSameBits(each[k], composite[k]);
      expectSameBits(all[k], each[k]);
    }
  });

  test('on the CPU a step updates every parameter in one addon call and no TF.js kernel', () => {
    const params = makeParams();
    const opt = createAdamW({ lr: 1e-3, weightDecay: 0.01 });
    const grads = new Map(NAMES.map((n, i) => [n, rand(SHAPES[i], i + 7)]));
    try {
      adamwStep(opt, params, grads, 1e-3); // creates the moments
      const before = hostCounts();
      adamwStep(opt, params, grads, 1e-3);
      const after = hostCounts();
      expect(after.addonCalls - before.addonCalls).toBe(1);
      expect(after.tfjsKernels - before.tfjsKernels).toBe(0);
      expect(after.atenCalls - before.atenCalls).toBe(0);
    } finally {
      tf.dispose([...grads.values(), ...params.values()]);
      disposeAdamW(opt);
    }
  });

  test('updates in place, allocating no new tensors in steady state', () => {
    const params = makeParams();
    const opt = createAdamW({ lr: 1e-3, weightDecay: 0.01 });
    const grads = new Map(NAMES.map((n, i) => [n, rand(SHAPES[i], i + 7)]));
    try {
      adamwStep(opt, params, grads, 1e-3); // creates the moments
      const ids = NAMES.map((n) => [params.get(n)!.dataId, opt.m.get(n)!.dataId, opt.v.get(n)!.dataId]);
      const before = { tensors: tf.memory().numTensors, handles: addon().liveHandles() };
      adamwStep(opt, params, grads, 1e-3);
      expect(NAMES.map((n) => [params.get(n)!.dataId, opt.m.get(n)!.dataId, opt.v.get(n)!.dataId])).toEqual(ids);
      expect(tf.memory().numTensors).toBe(before.tensors);
      expect(addon().liveHandles()).toBe(before.handles);
    } finally {
      tf.dispose([...grads.values(), ...params.values()]);
      disposeAdamW(opt);
    }
  });

  test('never writes into memory another tensor shares (clone, view, second reference)', () => {
    const hold = (p: Map<string, tf.Variable>) => [tf.clone(p.get(NAMES[0])!), tf.reshape(p.get(NAMES[1])!, [1, 19]), tf.keep(p.get(NAMES[2])!.clone())];
    const shared = run('all', hold);
    expect(shared.heldAfter).toEqual(shared.heldValues);
    expectSameBits(shared.params, run('composite').params);
  });
});

describeTorch('global gradient norm on the CPU', () => {
  beforeAll(() => useBackend('torch'));

  test('one addon call gives the bits of the per-tensor ATen norms (clip_grad_norm_)', () => {
    const grads = SHAPES.map((s, i) => rand(s, i + 40, 0.5));
    const b = tf.backend() as unknown as { h(t: tf.Tensor): number };
    const vectorNorm = aten('linalg_vector_norm');
    const perTensor = grads.map((g) => vectorNorm(b.h(g), 2, null, false, null) as number);
    const stacked = aten('stack')(perTensor, 0) as number;
    const expected = vectorNorm(stacked, 2, null, false, null) as number;
    const want = Buffer.from((addon().toArray(expected) as Float32Array).buffer);
    for (const h of [...perTensor, stacked, expected]) addon().free(h);
    const before = hostCounts();
    const norm = ops().globalNorm!(grads)!;
    expect(hostCounts().addonCalls - before.addonCalls).toBe(2); // globalNormCpu, and the result's meta
    expect(Buffer.from((norm.dataSync() as Float32Array).buffer).equals(want)).toBe(true);
    tf.dispose([norm, ...grads]);
  });
});
