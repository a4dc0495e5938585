/**
 * Positional file IO for multi-GB weight files: reads and writes go through a file descriptor in chunks
 * (fs.readSync/writeSync move at most 2 GiB per call), so no file is ever held whole in memory.
 * Also CRC-32 (zlib's when Node has it, a table otherwise) for the zip reader/writer.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { UserError } from '../../util/errors';

const CHUNK = 1 << 30;

/** Opens `file` for reading; a missing or unreadable file is a UserError naming it. */
export function openForRead(file: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new UserError(`${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new UserError(`${file}: not a regular file`);
  }
  return { fd, size: st.size };
}

/** Reads exactly `length` bytes at `position`; fewer available bytes is a UserError (`what` names the data). */
export function readAt(fd: number, position: number, length: number, what: string): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, Math.min(CHUNK, length - done), position + done);
    if (n === 0) throw new UserError(`${what}: truncated (wanted ${length} bytes at offset ${position}, got ${done})`);
    done += n;
  }
  return buf;
}

/** Writes all of `data` at the descriptor's current position. */
export function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) {
    done += fs.writeSync(fd, data, done, Math.min(CHUNK, data.byteLength - done));
  }
}

/**
 * Streams a file into place atomically: `fill` writes to a descriptor on a dot-named temp sibling, which is
 * fsynced and renamed onto `target`; on any error the temp file is removed and `target` is untouched.
 */
export function writeFileStreamAtomic(target: string, fill: (fd: number) => void): void {
  const dir = path.dirname(path.resolve(target));
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new UserError(`${dir}: cannot write here (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const tmp = path.join(dir, `.${path.basename(target)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fill(fd);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    if (e instanceof UserError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') throw new UserError(`${target}: disk full (${code}); nothing was written`);
    if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') throw new UserError(`${target}: cannot write here (${code})`);
    throw e;
  }
}

let table: Uint32Array | null = null;

function crc32Table(data: Uint8Array, crc: number): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const nativeCrc = (zlib as unknown as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;

/** CRC-32 (zip's), continuing from `crc` (0 to start). */
export function crc32(data: Uint8Array, crc = 0): number {
  return nativeCrc ? nativeCrc(data, crc) >>> 0 : crc32Table(data, crc);
}

/** The pure-JS CRC-32, exported so tests can check it against zlib's. */
export const crc32Portable = crc32Table;
