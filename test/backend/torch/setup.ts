/**
 * Shared set-up for the torch backend tests. Where libtorch is installed the addon must build and load
 * (a broken build fails these tests); where it is not, each suite asserts instead that
 * loadTorchBackend reports why, so nothing is skipped silently.
 */
import * as tf from '@tensorflow/tfjs';
import { loadTorchBackend, TorchLoadResult } from '../../../src/backend/torch';

const { locate } = require('../../../native/locate-libtorch');

export const libtorchInstalled: boolean = locate() !== null;
export const loaded: TorchLoadResult = loadTorchBackend('cpu');

/** describe() over the torch backend, or one test that checks the reported reason where it cannot load. */
export function describeTorch(name: string, body: () => void): void {
  if (loaded.ok) {
    describe(name, body);
    return;
  }
  describe(name, () => {
    test('torch backend is unavailable for a stated reason, and only because libtorch is missing', () => {
      expect(loaded.ok).toBe(false);
      expect((loaded as { reason: string }).reason).toMatch(/\S/);
      expect(libtorchInstalled).toBe(false);
    });
  });
}

export interface Result {
  shape: number[];
  dtype: string;
  values: number[];
}

function collect(out: tf.Tensor | tf.Tensor[]): Result[] {
  return (Array.isArray(out) ? out : [out]).map((t) => ({ shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync() as ArrayLike<number>) }));
}

/** Runs fn on a backend (inputs are made inside fn, from JS arrays, so both backends see the same data). */
export async function runOn(backend: string, fn: () => tf.Tensor | tf.Tensor[]): Promise<Result[]> {
  await tf.setBackend(backend);
  const out = tf.tidy(fn);
  try {
    return collect(out);
  } finally {
    tf.dispose(out);
  }
}

/** Same shapes and dtypes; values equal within atol + rtol·|expected| (NaN matches NaN). */
export function expectSame(actual: Result[], expected: Result[], label: string, tol = { atol: 1e-5, rtol: 1e-4 }): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((a, i) => {
    const e = expected[i];
    expect(`${label}[${i}] ${a.dtype} [${a.shape}]`).toBe(`${label}[${i}] ${e.dtype} [${e.shape}]`);
    for (let j = 0; j < e.values.length; j++) {
      const x = a.values[j];
      const y = e.values[j];
      const ok = (Number.isNaN(x) && Number.isNaN(y)) || x === y || Math.abs(x - y) <= tol.atol + tol.rtol * Math.abs(y);
      if (!ok) throw new Error(`${label}[${i}] value ${j}: torch ${x}, cpu ${y}`);
    }
  });
}

/** Deterministic pseudo-random floats in [-scale, scale). */
export function randomValues(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (((s >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

export function rand(shape: number[], seed: number, scale = 1): tf.Tensor {
  return tf.tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed, scale), shape);
}
