/** Test helpers for weight IO: temp dirs, tensor builders, exact comparison, and a python3 with torch. */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { crc32 } from '../../../src/model/weights/fileio';
import { writeZip, ZipWriteEntry } from '../../../src/model/weights/zip';
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

/** A torch-style zip with a hand-built data.pkl and raw storage records. */
export function torchZip(file: string, pkl: Buffer, storages: Record<string, Uint8Array> = {}): string {
  const arch = path.basename(file).replace(/\.[^.]*$/, '');
  const entries: ZipWriteEntry[] = [
    { name: `${arch}/data.pkl`, size: pkl.length, data: () => [pkl] },
    ...Object.entries(storages).map(([k, b]) => ({ name: `${arch}/data/${k}`, size: b.byteLength, data: () => [b] })),
    { name: `${arch}/version`, size: 2, data: () => [Buffer.from('3\n')] },
  ];
  const fd = fs.openSync(file, 'w');
  writeZip(fd, entries);
  fs.closeSync(fd);
  return file;
}


export interface RawEntry { name: string; data: Buffer; deflate?: boolean; size?: number; crc?: number; flags?: number }

/** A plain PKZIP archive (local headers with sizes, central directory, 32-bit end record): stored or deflated. */
export function rawZip(entries: RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (const e of entries) {
    const body = e.deflate ? zlib.deflateRawSync(e.data) : e.data;
    const name = Buffer.from(e.name);
    const crc = e.crc ?? crc32(e.data);
    const size = e.size ?? e.data.length;
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0);
    h.writeUInt16LE(20, 4);
    h.writeUInt16LE(e.flags ?? 0, 6);
    h.writeUInt16LE(e.deflate ? 8 : 0, 8);
    h.writeUInt32LE(crc, 14);
    h.writeUInt32LE(body.length, 18);
    h.writeUInt32LE(size, 22);
    h.writeUInt16LE(name.length, 26);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(e.flags ?? 0, 8);
    c.writeUInt16LE(e.deflate ? 8 : 0, 10);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(body.length, 20);
    c.writeUInt32LE(size, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt32LE(off, 42);
    parts.push(h, name, body);
    central.push(c, name);
    off += 30 + name.length + body.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(off, 16);
  return Buffer.concat([...parts, cd, end]);
}


/** A safetensors file from a raw header object and data bytes (the length prefix can lie). */
export function rawSafetensors(file: string, header: unknown, data: Buffer | number = 0, lengthOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigInt64LE(lengthOverride ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, typeof data === 'number' ? Buffer.alloc(data) : data]));
  return file;
}
