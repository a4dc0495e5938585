/**
 * Input files for `m3 data prepare`: which files an --input names, and their JSON lines streamed in
 * bounded memory (1 MiB reads, gzip decoded on the fly) with 1-based line numbers, strict UTF-8, and the
 * sha256 and size of the file's bytes computed on the same pass (the manifest records them for reuse).
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { UserError } from '../util/errors';

const EXTENSIONS = ['.jsonl', '.json', '.jsonl.gz', '.json.gz'];
/** A longer line is refused (memory stays bounded on a file without newlines). */
export const MAX_LINE_BYTES = 32 * 1024 * 1024;

export function isDataFile(name: string): boolean {
  return EXTENSIONS.some((e) => name.endsWith(e));
}

/** The file name without its data extension ("msmarco.jsonl.gz" → "msmarco"). */
export function stem(file: string): string {
  const base = path.basename(file);
  const ext = EXTENSIONS.slice().sort((a, b) => b.length - a.length).find((e) => base.endsWith(e));
  return ext ? base.slice(0, -ext.length) : base;
}

export interface InputGroup {
  /** The --input as given (a file or a directory). */
  input: string;
  /** Files in it, sorted by name; one file when the input is a file. */
  files: string[];
  isDir: boolean;
}

/** Resolves each --input: a file is itself, a directory is its data files (not recursive). */
export function discoverInputs(inputs: string[]): InputGroup[] {
  if (inputs.length === 0) throw new UserError('no --input given');
  return inputs.map((input) => {
    let st: fs.Stats;
    try {
      st = fs.statSync(input);
    } catch {
      throw new UserError(`${input}: input not found`);
    }
    if (st.isDirectory()) {
      const files = fs.readdirSync(input).filter(isDataFile).sort().map((f) => path.join(input, f));
      if (files.length === 0) throw new UserError(`${input}: directory holds no .jsonl, .json or .jsonl.gz files`);
      return { input, files, isDir: true };
    }
    if (!isDataFile(input)) throw new UserError(`${input}: not a .jsonl, .json or .jsonl.gz file`);
    return { input, files: [input], isDir: false };
  });
}

export interface FileLine {
  /** 1-based line number in the (decompressed) file. */
  lineNo: number;
  /** Decoded text, or null when the bytes are not valid UTF-8. */
  text: string | null;
}

export interface FileDigest {
  size: number;
  sha256: string;
}

/**
 * Streams the non-blank lines of a JSON-lines file. `onBytes` reports raw bytes read (for progress);
 * `digest()` is valid once the iteration has finished.
 */
export function readLines(file: string, onBytes?: (n: number) => void): { lines: AsyncGenerator<FileLine>; digest: () => FileDigest } {
  const hash = createHash('sha256');
  let size = 0;
  let result: FileDigest | null = null;
  const gz = file.endsWith('.gz');
  async function* gen(): AsyncGenerator<FileLine> {
    const raw = fs.createReadStream(file, { highWaterMark: 1 << 20 });
    raw.on('data', (c) => {
      const b = c as Buffer;
      hash.update(b);
      size += b.length;
      onBytes?.(b.length);
    });
    const source: AsyncIterable<Buffer> = gz ? raw.pipe(zlib.createGunzip()) : raw;
    const decoder = new TextDecoder('utf-8', { fatal: true });
    // the unfinished line's pieces (joined once its end is found: no quadratic re-copying of a long line)
    let carry: Buffer[] = [];
    let carried = 0;
    let lineNo = 0;
    const emit = (buf: Buffer): FileLine | null => {
      lineNo++;
      let end = buf.length;
      if (end > 0 && buf[end - 1] === 0x0d) end--;
      let start = 0;
      if (lineNo === 1 && end >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) start = 3; // BOM
      let blank = true;
      for (let i = start; i < end; i++) {
        const c = buf[i];
        if (c !== 0x20 && c !== 0x09) {
          blank = false;
          break;
        }
      }
      if (blank) return null;
      let text: string | null;
      try {
        text = decoder.decode(buf.subarray(start, end));
      } catch {
        text = null;
      }
      return { lineNo, text };
    };
    try {
      for await (const chunk of source) {
        const buf = chunk as Buffer;
        let from = 0;
        for (;;) {
          const nl = buf.indexOf(0x0a, from);
          if (nl < 0) break;
          const piece = buf.subarray(from, nl);
          const l = emit(carried ? Buffer.concat([...carry, piece]) : piece);
          carry = [];
          carried = 0;
          if (l) yield l;
          from = nl + 1;
        }
        if (from < buf.length) {
          carried += buf.length - from;
          if (carried > MAX_LINE_BYTES) throw new UserError(`${file}:${lineNo + 1}: line is longer than ${MAX_LINE_BYTES >> 20} MiB (not JSON lines?)`);
          carry.push(Buffer.from(buf.subarray(from)));
        }
      }
    } catch (e) {
      raw.destroy();
      if (e instanceof UserError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      if (gz && (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR')) throw new UserError(`${file}: not a valid gzip file (${(e as Error).message})`);
      throw new UserError(`${file}: cannot read (${code ?? (e as Error).message})`);
    } finally {
      raw.destroy(); // a reader that stops early (a `break` out of the lines) leaves no file open
    }
    if (carried) {
      const l = emit(Buffer.concat(carry));
      if (l) yield l;
    }
    result = { size, sha256: hash.digest('hex') };
  }
  return {
    lines: gen(),
    digest: () => {
      if (!result) throw new Error(`${file}: digest requested before the file was read to the end`);
      return result;
    },
  };
}

/** sha256 and size of a file, streamed (for cache checks without preparing). */
export async function digestFile(file: string): Promise<FileDigest> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const c of fs.createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { size, sha256: hash.digest('hex') };
}
