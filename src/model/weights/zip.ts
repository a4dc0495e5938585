/**
 * Zip archives as PyTorch writes them (torch.save since 1.6): stored entries whose data is 64-byte aligned
 * through an 'FB' padding extra field, data descriptors, zip64 records. The reader works on a file
 * descriptor (central directory + positional reads of one entry at a time: pytorch_model.bin of bge-m3 is
 * 2.27 GB) and treats the archive as untrusted: every offset and size is checked against the file, deflated
 * entries are inflated only within the ratio deflate can reach (zip bombs are refused) and CRC-checked.
 * The writer reproduces torch's layout byte for byte (see writeZip).
 */
import * as zlib from 'zlib';
import { UserError } from '../../util/errors';
import { crc32, readAt, writeAll } from './fileio';

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_Z64_EOCD = 0x06064b50;
const SIG_Z64_LOCATOR = 0x07064b50;
const SIG_DESCRIPTOR = 0x08074b50;
const U32_MAX = 0xffffffff;
const MAX_CENTRAL_DIR = 256 * 1024 * 1024;
/** Deflate cannot do better than about 1032:1; a larger claimed ratio is a lie (or a bomb). */
const MAX_DEFLATE_RATIO = 1032;
/** The largest entry inflated in memory. */
const MAX_INFLATED = 2 ** 31 - 1;

export interface ZipEntry {
  name: string;
  flags: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  headerOffset: number;
}

export interface ZipReader {
  file: string;
  fd: number;
  size: number;
  /** Where the central directory starts: no entry's data may reach past it. */
  cdOffset: number;
  entries: Map<string, ZipEntry>;
  /** Data offsets resolved from local headers, and inflated entries, by name. */
  dataOffsets: Map<string, number>;
  inflated: Map<string, Buffer>;
}

function u64(b: Buffer, at: number, what: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UserError(`${what}: 64-bit value ${v} is out of range`);
  return Number(v);
}

/** Opens a zip archive and reads its central directory (the caller closes it with closeZip). */
export function openZip(file: string, fd: number, size: number): ZipReader {
  const bad = (msg: string): never => { throw new UserError(`${file}: ${msg}`); };
  const tailLen = Math.min(size, 22 + 0xffff);
  const tail = readAt(fd, size - tailLen, tailLen, file);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD && i + 22 + tail.readUInt16LE(i + 20) <= tailLen) { eocd = i; break; }
  }
  if (eocd < 0) bad('truncated or not a zip archive (no end-of-central-directory record)');
  const eocdPos = size - tailLen + eocd;
  let disk = tail.readUInt16LE(eocd + 4);
  let cdDisk = tail.readUInt16LE(eocd + 6);
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  let cdEnd = eocdPos;
  if (eocdPos >= 20 && readAt(fd, eocdPos - 20, 4, file).readUInt32LE(0) === SIG_Z64_LOCATOR) {
    const loc = readAt(fd, eocdPos - 20, 20, file);
    const z64 = u64(loc, 8, file);
    if (z64 + 56 > eocdPos - 20) bad(`truncated or corrupt: the zip64 end record's offset ${z64} lies beyond its locator (${eocdPos - 20})`);
    const rec = readAt(fd, z64, 56, file);
    if (rec.readUInt32LE(0) !== SIG_Z64_EOCD) bad('bad zip64 end-of-central-directory record');
    disk = rec.readUInt32LE(16);
    cdDisk = rec.readUInt32LE(20);
    count = u64(rec, 32, file);
    cdSize = u64(rec, 40, file);
    cdOffset = u64(rec, 48, file);
    cdEnd = z64;
  } else if (count === 0xffff || cdSize === U32_MAX || cdOffset === U32_MAX) {
    bad('zip64 archive without a zip64 end-of-central-directory locator (truncated?)');
  }
  if (disk !== 0 || cdDisk !== 0) bad('multi-disk zip archives are not supported');
  if (cdOffset + cdSize > cdEnd) bad(`truncated: the central directory (${cdSize} bytes at ${cdOffset}) runs past its end record (${cdEnd})`);
  if (cdSize > MAX_CENTRAL_DIR) bad(`central directory of ${cdSize} bytes is too large`);
  if (count > cdSize / 46) bad(`central directory claims ${count} entries in ${cdSize} bytes`);
  const cd = readAt(fd, cdOffset, cdSize, file);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || cd.readUInt32LE(p) !== SIG_CENTRAL) bad(`corrupt central directory (entry ${i})`);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let headerOffset = cd.readUInt32LE(p + 42);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdSize) bad(`corrupt central directory (entry ${i} runs past its end)`);
    const name = cd.toString(flags & 0x800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen);
    const where = `${file}: zip entry '${name}'`;
    // zip64 extra: the 64-bit values of exactly those fields that hold 0xFFFFFFFF, in this order.
    for (let x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen;) {
      const id = cd.readUInt16LE(x);
      const len = cd.readUInt16LE(x + 2);
      if (x + 4 + len > p + 46 + nameLen + extraLen) throw new UserError(`${where}: corrupt extra field`);
      if (id === 0x0001) {
        let q = x + 4;
        const take = (): number => {
          if (q + 8 > x + 4 + len) throw new UserError(`${where}: zip64 extra field too short`);
          const v = u64(cd, q, where);
          q += 8;
          return v;
        };
        if (usize === U32_MAX) usize = take();
        if (compressedSize === U32_MAX) compressedSize = take();
        if (headerOffset === U32_MAX) headerOffset = take();
      }
      x += 4 + len;
    }
    if (entries.has(name)) throw new UserError(`${where}: appears twice in the archive`);
    if (headerOffset + 30 + compressedSize > cdOffset) {
      throw new UserError(`${where}: ${compressedSize} bytes at offset ${headerOffset} run past the end of the entries (${cdOffset}; truncated or corrupt)`);
    }
    entries.set(name, { name, flags, method, crc, compressedSize, size: usize, headerOffset });
    p = next;
  }
  return { file, fd, size, cdOffset, entries, dataOffsets: new Map(), inflated: new Map() };
}

export function closeZip(z: ZipReader): void {
  z.inflated.clear();
}

function dataOffset(z: ZipReader, e: ZipEntry): number {
  const known = z.dataOffsets.get(e.name);
  if (known !== undefined) return known;
  const where = `${z.file}: zip entry '${e.name}'`;
  const h = readAt(z.fd, e.headerOffset, 30, where);
  if (h.readUInt32LE(0) !== SIG_LOCAL) throw new UserError(`${where}: bad local header`);
  const nameLen = h.readUInt16LE(26);
  const extraLen = h.readUInt16LE(28);
  const start = e.headerOffset + 30 + nameLen + extraLen;
  if (start + e.compressedSize > z.cdOffset) throw new UserError(`${where}: data runs past the end of the entries (truncated or corrupt)`);
  const localName = readAt(z.fd, e.headerOffset + 30, nameLen, where).toString(e.flags & 0x800 ? 'utf8' : 'latin1');
  if (localName !== e.name) throw new UserError(`${where}: local header names '${localName}'`);
  z.dataOffsets.set(e.name, start);
  return start;
}

function inflate(z: ZipReader, e: ZipEntry): Buffer {
  const cached = z.inflated.get(e.name);
  if (cached) return cached;
  const where = `${z.file}: zip entry '${e.name}'`;
  const raw = readAt(z.fd, dataOffset(z, e), e.compressedSize, where);
  let out: Buffer;
  try {
    out = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
  } catch (err) {
    throw new UserError(`${where}: deflate data is corrupt or larger than its declared ${e.size} bytes (${(err as Error).message.split('\n')[0]})`);
  }
  if (out.length !== e.size) throw new UserError(`${where}: inflates to ${out.length} bytes, not the declared ${e.size}`);
  if (crc32(out) !== e.crc) throw new UserError(`${where}: CRC mismatch (corrupt)`);
  z.inflated.set(e.name, out);
  return out;
}

/** Checks that an entry can be read: not encrypted, stored or deflated, sizes consistent (no zip bomb). */
export function checkReadable(z: ZipReader, e: ZipEntry): void {
  const where = `${z.file}: zip entry '${e.name}'`;
  if (e.flags & 1) throw new UserError(`${where}: encrypted entries are not supported`);
  if (e.method === 0) {
    if (e.compressedSize !== e.size) throw new UserError(`${where}: stored entry with compressed size ${e.compressedSize} != size ${e.size}`);
  } else if (e.method === 8) {
    if (e.size > e.compressedSize * MAX_DEFLATE_RATIO + 1024 || e.size > MAX_INFLATED) {
      throw new UserError(`${where}: refused: ${e.compressedSize} deflated bytes claim to hold ${e.size} (beyond what deflate can reach; a zip bomb?)`);
    }
  } else {
    throw new UserError(`${where}: unsupported compression method ${e.method}`);
  }
}

/**
 * Reads `length` bytes at `start` within an entry's uncompressed data: a positional read for stored
 * entries, a slice of the (cached, bounded) inflated data for deflated ones.
 */
export function readZipRange(z: ZipReader, e: ZipEntry, start: number, length: number): Buffer {
  checkReadable(z, e);
  if (start < 0 || start + length > e.size) throw new UserError(`${z.file}: zip entry '${e.name}': range [${start}, ${start + length}) is beyond its ${e.size} bytes`);
  if (e.method === 8) return inflate(z, e).subarray(start, start + length);
  return readAt(z.fd, dataOffset(z, e) + start, length, `${z.file}: zip entry '${e.name}'`);
}

/** Reads a whole entry and verifies its CRC (meant for small entries such as data.pkl). */
export function readZipEntry(z: ZipReader, e: ZipEntry): Buffer {
  const data = readZipRange(z, e, 0, e.size);
  if (e.method === 0 && crc32(data) !== e.crc) throw new UserError(`${z.file}: zip entry '${e.name}': CRC mismatch (corrupt)`);
  return data;
}

// ---------------------------------------------------------------------------------------------------------
// Writer

export interface ZipWriteEntry {
  name: string;
  /** Exact byte count `data` yields (checked). */
  size: number;
  /** The bytes, produced lazily so multi-GB tensors are converted and written chunk by chunk. */
  data: () => Iterable<Uint8Array>;
}

export interface ZipWriteOptions {
  /** Use zip64 fields for every entry (they are used anyway for sizes/offsets ≥ 4 GiB); for tests. */
  forceZip64?: boolean;
}

const ALIGN = 64;

/**
 * Writes entries as torch's PyTorchStreamWriter (miniz) does: version-0 headers with flags 0x0808 (data
 * descriptor, UTF-8), zero times and CRCs in the local header, an 'FB' extra field padding each entry's data
 * to a 64-byte boundary, a data descriptor after the data, and zip64 end records always.
 */
export function writeZip(fd: number, entries: ZipWriteEntry[], opts: ZipWriteOptions = {}): void {
  let cursor = 0;
  const put = (b: Uint8Array) => { writeAll(fd, b); cursor += b.byteLength; };
  const central: Buffer[] = [];
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const big = opts.forceZip64 || e.size >= U32_MAX;
    const far = opts.forceZip64 || cursor >= U32_MAX;
    const z64Len = (big ? 16 : 0) + (far ? 8 : 0);
    const z64Extra = (): Buffer => {
      const b = Buffer.alloc(z64Len ? 4 + z64Len : 0);
      if (!z64Len) return b;
      b.writeUInt16LE(0x0001, 0);
      b.writeUInt16LE(z64Len, 2);
      let q = 4;
      if (big) { b.writeBigUInt64LE(BigInt(e.size), q); b.writeBigUInt64LE(BigInt(e.size), q + 8); q += 16; }
      if (far) b.writeBigUInt64LE(BigInt(cursor), q);
      return b;
    };
    const offset = cursor;
    const localZ64 = z64Extra();
    const start = cursor + 30 + name.length + localZ64.length + 4;
    const pad = (ALIGN - (start % ALIGN)) % ALIGN;
    const fb = Buffer.alloc(4 + pad, 'Z');
    fb.write('FB', 0, 'latin1');
    fb.writeUInt16LE(pad, 2);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(SIG_LOCAL, 0);
    h.writeUInt16LE(big || far ? 45 : 0, 4);
    h.writeUInt16LE(0x0808, 6);
    if (big) { h.writeUInt32LE(U32_MAX, 18); h.writeUInt32LE(U32_MAX, 22); }
    h.writeUInt16LE(name.length, 26);
    h.writeUInt16LE(localZ64.length + fb.length, 28);
    put(h);
    put(name);
    put(localZ64);
    put(fb);
    let crc = 0;
    let n = 0;
    for (const chunk of e.data()) {
      crc = crc32(chunk, crc);
      n += chunk.byteLength;
      put(chunk);
    }
    if (n !== e.size) throw new Error(`zip entry '${e.name}': wrote ${n} bytes, expected ${e.size}`);
    const d = Buffer.alloc(big ? 24 : 16);
    d.writeUInt32LE(SIG_DESCRIPTOR, 0);
    d.writeUInt32LE(crc, 4);
    if (big) { d.writeBigUInt64LE(BigInt(n), 8); d.writeBigUInt64LE(BigInt(n), 16); } else { d.writeUInt32LE(n, 8); d.writeUInt32LE(n, 12); }
    put(d);
    const cz64 = Buffer.alloc(z64Len ? 4 + z64Len : 0);
    if (z64Len) {
      cz64.writeUInt16LE(0x0001, 0);
      cz64.writeUInt16LE(z64Len, 2);
      let q = 4;
      if (big) { cz64.writeBigUInt64LE(BigInt(n), q); cz64.writeBigUInt64LE(BigInt(n), q + 8); q += 16; }
      if (far) cz64.writeBigUInt64LE(BigInt(offset), q);
    }
    const c = Buffer.alloc(46);
    c.writeUInt32LE(SIG_CENTRAL, 0);
    c.writeUInt16LE(big || far ? 45 : 0, 6);
    c.writeUInt16LE(0x0808, 8);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(big ? U32_MAX : n, 20);
    c.writeUInt32LE(big ? U32_MAX : n, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(cz64.length, 30);
    c.writeUInt32LE(far ? U32_MAX : offset, 42);
    central.push(c, name, cz64);
  }
  const cdOffset = cursor;
  for (const b of central) put(b);
  const cdSize = cursor - cdOffset;
  const z64Offset = cursor;
  const z = Buffer.alloc(56);
  z.writeUInt32LE(SIG_Z64_EOCD, 0);
  z.writeBigUInt64LE(44n, 4);
  z.writeUInt16LE(0x031e, 12);
  z.writeUInt16LE(45, 14);
  z.writeBigUInt64LE(BigInt(entries.length), 24);
  z.writeBigUInt64LE(BigInt(entries.length), 32);
  z.writeBigUInt64LE(BigInt(cdSize), 40);
  z.writeBigUInt64LE(BigInt(cdOffset), 48);
  put(z);
  const loc = Buffer.alloc(20);
  loc.writeUInt32LE(SIG_Z64_LOCATOR, 0);
  loc.writeBigUInt64LE(BigInt(z64Offset), 8);
  loc.writeUInt32LE(1, 16);
  put(loc);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(SIG_EOCD, 0);
  end.writeUInt16LE(Math.min(entries.length, 0xffff), 8);
  end.writeUInt16LE(Math.min(entries.length, 0xffff), 10);
  end.writeUInt32LE(Math.min(cdSize, U32_MAX), 12);
  end.writeUInt32LE(Math.min(cdOffset, U32_MAX), 16);
  put(end);
}

