/**
 * safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
 * then the raw data. Files are untrusted: the header length, every offset and shape are checked before any
 * allocation, and tensors are read through a file handle (never the whole file), so a 2 GB checkpoint
 * loads tensor by tensor.
 */
import * as fs from 'fs';
import { UserError } from '../../util/errors';
import { writeFileAtomic } from '../../util/fsx';
import { BYTES_PER_ELEMENT, decodeTensor, isStoredDType, StoredDType } from './dtype';
import { HostTensor, TensorMap } from './types';

const MAX_HEADER_BYTES = 100 * 1024 * 1024; // the reference implementation's own limit

interface Entry { name: string; dtype: StoredDType; shape: number[]; begin: number; end: number }

/** Parses and validates the header; returns entries sorted by offset and the data section's start. */
export function readSafetensorsHeader(file: string): { entries: Entry[]; dataStart: number; metadata: Record<string, string> } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new UserError(`${file}: cannot open (${(e as NodeJS.ErrnoException).code})`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new UserError(`${file}: not a safetensors file (${size} bytes, shorter than the 8-byte header length)`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const len = lenBuf.readBigInt64LE(0);
    if (len < 0n || len > BigInt(MAX_HEADER_BYTES)) throw new UserError(`${file}: safetensors header length ${len} is out of range (0..${MAX_HEADER_BYTES})`);
    if (Number(len) > size - 8) throw new UserError(`${file}: truncated: header length ${len} exceeds the file size ${size}`);
    const headerBuf = Buffer.alloc(Number(len));
    fs.readSync(fd, headerBuf, 0, headerBuf.length, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch {
      throw new UserError(`${file}: safetensors header is not valid JSON`);
    }
    if (!header || typeof header !== 'object' || Array.isArray(header)) throw new UserError(`${file}: safetensors header is not a JSON object`);
    const dataStart = 8 + Number(len);
    const dataLen = size - dataStart;
    const entries: Entry[] = [];
    let metadata: Record<string, string> = {};
    for (const [name, v] of Object.entries(header)) {
      if (name === '__metadata__') { metadata = (v ?? {}) as Record<string, string>; continue; }
      const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const where = `${file}: tensor '${name}'`;
      if (typeof t?.dtype !== 'string' || !isStoredDType(t.dtype)) throw new UserError(`${where}: unknown dtype ${JSON.stringify(t?.dtype)}`);
      if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new UserError(`${where}: invalid shape ${JSON.stringify(t.shape)}`);
      const offs = t.data_offsets;
      if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0) || offs[0] > offs[1]) {
        throw new UserError(`${where}: invalid data_offsets ${JSON.stringify(offs)}`);
      }
      const n = (t.shape as number[]).reduce((a, b) => a * b, 1);
      if (offs[1] - offs[0] !== n * BYTES_PER_ELEMENT[t.dtype]) {
        throw new UserError(`${where}: data_offsets span ${offs[1] - offs[0]} bytes but shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${n * BYTES_PER_ELEMENT[t.dtype]}`);
      }
      if (offs[1] > dataLen) throw new UserError(`${where}: data_offsets [${offs[0]}, ${offs[1]}] run past the end of the data (${dataLen} bytes; file truncated?)`);
      entries.push({ name, dtype: t.dtype, shape: t.shape as number[], begin: offs[0], end: offs[1] });
    }
    entries.sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < entries.length; i++) {
      if (entries[i].begin < entries[i - 1].end) throw new UserError(`${file}: tensors '${entries[i - 1].name}' and '${entries[i].name}' overlap`);
    }
    return { entries, dataStart, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads tensors (all, or those `want` accepts) from a safetensors file. */
export function readSafetensors(file: string, want: (name: string) => boolean = () => true): TensorMap {
  const { entries, dataStart } = readSafetensorsHeader(file);
  const out: TensorMap = new Map();
  const fd = fs.openSync(file, 'r');
  try {
    for (const e of entries) {
      if (!want(e.name)) continue;
      const buf = Buffer.alloc(e.end - e.begin);
      const got = fs.readSync(fd, buf, 0, buf.length, dataStart + e.begin);
      if (got !== buf.length) throw new UserError(`${file}: tensor '${e.name}' is truncated`);
      out.set(e.name, decodeTensor(buf, e.dtype, e.shape, `${file}: tensor '${e.name}'`));
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** Serialises tensors (float32 → F32, int32 → I32) in name order, as the reference writer does. */
export function encodeSafetensors(tensors: TensorMap, metadata: Record<string, string> = { format: 'pt' }): Buffer {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const name of names) {
    const t = tensors.get(name) as HostTensor;
    const bytes = t.data.byteLength;
    header[name] = { dtype: t.dtype === 'float32' ? 'F32' : 'I32', shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  header.__metadata__ = metadata;
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = Buffer.alloc(8 + json.length + off);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  let p = 8 + json.length;
  for (const name of names) {
    const t = tensors.get(name) as HostTensor;
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, p);
    p += t.data.byteLength;
  }
  return out;
}

export function writeSafetensors(file: string, tensors: TensorMap, metadata?: Record<string, string>): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}
