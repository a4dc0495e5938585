/**
 * safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
 * then the raw data. Files are untrusted: the header length, every offset and shape are checked before any
 * allocation, and tensors are read through a file handle (never the whole file), so a 2 GB checkpoint
 * loads tensor by tensor. Writers stream tensor by tensor too, as F32 (default), F16 or BF16.
 */
import * as fs from 'fs';
import { UserError } from '../../util/errors';
import { BYTES_PER_ELEMENT, decodeTensor, encodeTensor, isStoredDType, StoredDType, WritableDType } from './dtype';
import { openForRead, readAt, writeAll, writeFileStreamAtomic } from './fileio';
import { HostTensor, TensorMap, TensorSource } from './types';

const MAX_HEADER_BYTES = 100 * 1024 * 1024; // the reference implementation's own limit

interface Entry { name: string; dtype: StoredDType; shape: number[]; begin: number; end: number }

/** Parses and validates the header; returns entries sorted by offset and the data section's start. */
export function readSafetensorsHeader(file: string): { entries: Entry[]; dataStart: number; metadata: Record<string, string> } {
  const { fd, size } = openForRead(file);
  try {
    if (size < 8) throw new UserError(`${file}: not a safetensors file (${size} bytes, shorter than the 8-byte header length)`);
    const len = readAt(fd, 0, 8, file).readBigInt64LE(0);
    if (len < 0n || len > BigInt(MAX_HEADER_BYTES)) throw new UserError(`${file}: safetensors header length ${len} is out of range (0..${MAX_HEADER_BYTES})`);
    if (Number(len) > size - 8) throw new UserError(`${file}: truncated: header length ${len} exceeds the file size ${size}`);
    const headerBuf = readAt(fd, 8, Number(len), file);
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
  const { fd } = openForRead(file);
  try {
    for (const e of entries) {
      if (!want(e.name)) continue;
      const buf = readAt(fd, dataStart + e.begin, e.end - e.begin, `${file}: tensor '${e.name}'`);
      out.set(e.name, decodeTensor(buf, e.dtype, e.shape, `${file}: tensor '${e.name}'`));
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

export interface SafetensorsWriteOptions {
  /** `__metadata__` (default {format: 'pt'}, which transformers expects). */
  metadata?: Record<string, string>;
  /** Stored type of float32 tensors (default F32); int32 tensors are written as I32. */
  floatDtype?: 'F32' | 'F16' | 'BF16';
}

type Writable = TensorMap | Map<string, TensorSource>;

const sourceOf = (t: HostTensor | TensorSource): TensorSource => ('read' in t ? t : { dtype: t.dtype, shape: t.shape, read: () => t.data });

interface Part { name: string; s: TensorSource; n: number; dtype: WritableDType }

/** The header (length prefix + padded JSON) and the tensors in data order (sorted by name). */
function layout(tensors: Writable, o: SafetensorsWriteOptions): { head: Buffer; parts: Part[] } {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  const parts: Part[] = [];
  let off = 0;
  for (const name of names) {
    const s = sourceOf(tensors.get(name)!);
    const n = s.shape.reduce((a, b) => a * b, 1);
    const dtype: WritableDType = s.dtype === 'float32' ? o.floatDtype ?? 'F32' : 'I32';
    const bytes = n * BYTES_PER_ELEMENT[dtype];
    header[name] = { dtype, shape: s.shape, data_offsets: [off, off + bytes] };
    parts.push({ name, s, n, dtype });
    off += bytes;
  }
  header.__metadata__ = o.metadata ?? { format: 'pt' };
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const head = Buffer.alloc(8 + json.length);
  head.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(head, 8);
  return { head, parts };
}

/** One tensor's bytes, read from its source now. */
function encodePart(p: Part): Uint8Array {
  const data = p.s.read();
  if (data.length !== p.n) throw new Error(`tensor '${p.name}': ${data.length} values for shape [${p.s.shape}]`);
  return encodeTensor({ dtype: p.s.dtype, shape: p.s.shape, data }, p.dtype);
}

/** Serialises tensors in memory (float32 → F32 unless asked otherwise, int32 → I32), in name order. */
export function encodeSafetensors(tensors: TensorMap, metadata: Record<string, string> = { format: 'pt' }, floatDtype?: 'F32' | 'F16' | 'BF16'): Buffer {
  const { head, parts } = layout(tensors, { metadata, floatDtype });
  return Buffer.concat([head, ...parts.map(encodePart)]);
}

/** Streams a safetensors file to an open descriptor, one tensor at a time (no whole-file buffer). */
export function writeSafetensorsFd(fd: number, tensors: Writable, o: SafetensorsWriteOptions = {}): void {
  const { head, parts } = layout(tensors, o);
  writeAll(fd, head);
  for (const p of parts) writeAll(fd, encodePart(p));
}

/** Writes a safetensors file atomically (temp file + rename), streaming tensor by tensor. */
export function writeSafetensors(file: string, tensors: Writable, o: SafetensorsWriteOptions = {}): void {
  writeFileStreamAtomic(file, (fd) => writeSafetensorsFd(fd, tensors, o));
}
