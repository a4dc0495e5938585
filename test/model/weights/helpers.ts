/** Test helpers for weight IO: temp dirs, tensor builders, exact comparison, and a python3 with torch. */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HostTensor, TensorMap } from '../../../src/model/weights/types';

export function tempDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `m3-${tag}-`));
}

/** A float32 tensor with deterministic, non-trivial values (exactly representable in F16 when `half`). */
export function f32(shape: number[], seed = 1, half = false): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const v = (s / 2 ** 32 - 0.5) * 4;
    data[i] = half ? Math.round(v * 256) / 256 : v;
  }
  return { dtype: 'float32', shape, data };
}

export function expectSameTensors(got: TensorMap, want: TensorMap): void {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, w] of want) {
    const g = got.get(name) as HostTensor;
    expect({ name, dtype: g.dtype, shape: g.shape }).toEqual({ name, dtype: w.dtype, shape: w.shape });
    expect(Buffer.from(g.data.buffer, g.data.byteOffset, g.data.byteLength).equals(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength))).toBe(true);
  }
}

let python: string | null = null;

/** A python3 that imports torch: $M3_PYTHON, else python3 / /usr/bin/python3 (Debian's python3-torch). */
export function torchPython(): string {
  if (python) return python;
  const tried: string[] = [];
  for (const c of [process.env.M3_PYTHON, 'python3', '/usr/bin/python3']) {
    if (!c) continue;
    tried.push(c);
    const r = spawnSync(c, ['-c', 'import torch'], { encoding: 'utf8' });
    if (r.status === 0) return (python = c);
  }
  throw new Error(`these tests need python3 with torch (tried ${tried.join(', ')}): apt-get install python3-torch, or set M3_PYTHON`);
}

/** Runs python code with torch available; returns stdout, throws with stderr on failure. */
export function runPython(code: string, args: string[] = []): string {
  const r = spawnSync(torchPython(), ['-c', code, ...args], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`python failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}
