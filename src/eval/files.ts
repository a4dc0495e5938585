/**
 * Reading the text files evaluation and mining consume (JSONL, TSV, TREC), plain or gzip-compressed,
 * with every complaint naming file:line so a user can open the exact spot.
 */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { UserError } from '../util/errors';

/** The whole file as UTF-8 text; `.gz` files are decompressed. */
export function readTextFile(file: string, what = 'file'): string {
  if (!fs.existsSync(file)) throw new UserError(`${file}: ${what} does not exist`);
  let bytes: Buffer = fs.readFileSync(file);
  if (file.endsWith('.gz')) {
    try {
      bytes = zlib.gunzipSync(bytes);
    } catch (e) {
      throw new UserError(`${file}: not a valid gzip file (${(e as Error).message})`);
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new UserError(`${file}: not valid UTF-8`);
  }
}

/** Non-blank lines with their 1-based line numbers (a trailing \r is dropped). */
export function* numberedLines(text: string): Generator<{ line: string; lineNo: number }> {
  let start = 0;
  let lineNo = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    lineNo++;
    let line = text.slice(start, end);
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.trim() !== '') yield { line, lineNo };
    start = end + 1;
  }
}

/** Each line of a JSONL file parsed as a JSON object, with the place it came from ("file:line"). */
export function* jsonObjects(file: string, text: string): Generator<{ value: Record<string, unknown>; where: string }> {
  for (const { line, lineNo } of numberedLines(text)) {
    const where = `${file}:${lineNo}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new UserError(`${where}: invalid JSON (${(e as Error).message})`);
    }
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new UserError(`${where}: expected a JSON object`);
    yield { value: value as Record<string, unknown>, where };
  }
}

/** A string field, or an id that BEIR files sometimes write as a number. */
export function idField(v: Record<string, unknown>, key: string, where: string): string {
  const x = v[key];
  if (typeof x === 'string' && x !== '') return x;
  if (typeof x === 'number' && Number.isFinite(x)) return String(x);
  throw new UserError(`${where}: '${key}' must be a non-empty string${x === undefined ? ' (missing)' : `, got ${JSON.stringify(x)}`}`);
}

export function stringField(v: Record<string, unknown>, key: string, where: string, opts: { optional?: boolean } = {}): string | undefined {
  const x = v[key];
  if (x === undefined || x === null) {
    if (opts.optional) return undefined;
    throw new UserError(`${where}: missing field '${key}'`);
  }
  if (typeof x !== 'string') throw new UserError(`${where}: '${key}' must be a string, got ${JSON.stringify(x).slice(0, 60)}`);
  return x;
}
