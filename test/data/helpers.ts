/** Shared fixtures of the data tests: temp dirs, the shared tokenizers, JSONL writing, batch decoding. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTokenizer, Tokenizer } from '../../src/model/tokenizer';
import type { TokenBatch } from '../../src/util/token-batch';
import { sharedDir } from '../helpers/shared';

export const FE = sharedDir('data/flagembedding');
export const BERT_DIR = sharedDir('data/tokenizers/bert-base-uncased');

let bert: Tokenizer | null = null;
export function bertTokenizer(): Tokenizer {
  return (bert ??= loadTokenizer(BERT_DIR));
}

export function tmpDir(prefix = 'm3-data-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function writeJsonl(file: string, rows: unknown[]): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return file;
}

export function readJsonl(file: string): Record<string, any>[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/** Row b of a padded batch, without its padding. */
export function rowOf(e: TokenBatch, b: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < e.length; i++) if (e.attentionMask[b * e.length + i]) out.push(e.inputIds[b * e.length + i]);
  return out;
}

export function rowsOf(e: TokenBatch): number[][] {
  return Array.from({ length: e.batch }, (_, b) => rowOf(e, b));
}

/** Entries left beside `target` by an atomic write (should be none after a failure). */
export function leftovers(target: string): string[] {
  const dir = path.dirname(target);
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.startsWith(`.${path.basename(target)}.tmp`)) : [];
}
