/**
 * Bitext mining accuracy on a Tatoeba pair, as LASER's `xsim` reports its error rate (Artetxe & Schwenk,
 * "Massively Multilingual Sentence Embeddings for Zero-Shot Cross-Lingual Transfer and Beyond", TACL 2019;
 * facebookresearch/LASER `data/tatoeba/v1`, files `tatoeba.<xxx>-eng.<xxx>` and `tatoeba.<xxx>-eng.eng`,
 * line i of one the translation of line i of the other).
 *
 * Each sentence of one side is searched among all sentences of the other by dense inner product (the CLS
 * vectors are L2-normalised, so this is cosine similarity); it is correct when its nearest neighbour is
 * its own translation, ties going to the lowest line index. `accuracy_to_eng` searches the xxx sentences
 * in the eng pool, `accuracy_from_eng` the eng sentences in the xxx pool, `accuracy` is their mean
 * (1 − xsim's error rate, per direction). Both sides are encoded exactly as `m3 encode` encodes text with
 * its defaults (the whole sentence, truncated only at the model's maximum length).
 */
import * as fs from 'fs';
import * as path from 'path';
import { encodeIds } from '../model/inference';
import { M3Model } from '../model/m3';
import { UserError } from '../util/errors';
import { Progress } from '../util/progress';
import { readTextFile } from './files';
import { denseSearch, Matrix } from './search';

export interface TatoebaPair {
  /** `tatoeba.<xxx>-eng.<xxx>` and `tatoeba.<xxx>-eng.eng`. */
  xxxFile: string;
  engFile: string;
  /** xxx, from the file name. */
  language: string;
}

const PAIR_NAME = /^(.+)\.([^.]+)-eng\.([^.]+)$/;

/** The pair a file belongs to (either side may be named), or null when the name is not `<prefix>.<xxx>-eng.<xxx|eng>`. */
export function tatoebaPairOf(file: string): TatoebaPair | null {
  const m = PAIR_NAME.exec(path.basename(file));
  if (!m || (m[3] !== m[2] && m[3] !== 'eng')) return null;
  const stem = path.join(path.dirname(file), `${m[1]}.${m[2]}-eng`);
  return { xxxFile: `${stem}.${m[2]}`, engFile: `${stem}.eng`, language: m[2] };
}

/** The file's lines (a final newline ends the last line; every line is a sentence, none may be empty). */
function sentences(file: string): string[] {
  const lines = readTextFile(file, 'Tatoeba file').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((l, i) => {
    if (l.endsWith('\r')) lines[i] = l.slice(0, -1);
    if (lines[i].trim() === '') throw new UserError(`${file}:${i + 1}: empty sentence (the two files must stay line-aligned)`);
  });
  return lines;
}

/** Both sides, line-aligned; `maxPairs` keeps the first N pairs (both pools shrink with it). */
export function readTatoebaPair(pair: TatoebaPair, maxPairs?: number): { xxx: string[]; eng: string[] } {
  for (const f of [pair.xxxFile, pair.engFile]) if (!fs.existsSync(f)) throw new UserError(`${f}: does not exist (a Tatoeba pair needs both ${path.basename(pair.xxxFile)} and ${path.basename(pair.engFile)})`);
  let xxx = sentences(pair.xxxFile);
  let eng = sentences(pair.engFile);
  if (xxx.length !== eng.length) throw new UserError(`${pair.xxxFile}: ${xxx.length} lines but ${pair.engFile} has ${eng.length}; the pair must be line-aligned`);
  if (xxx.length === 0) throw new UserError(`${pair.xxxFile}: no sentences`);
  if (maxPairs !== undefined) {
    xxx = xxx.slice(0, maxPairs);
    eng = eng.slice(0, maxPairs);
  }
  return { xxx, eng };
}

/** Share of rows i of `from` whose nearest row of `to` (inner product, ties to the lowest index) is row i. */
export function nearestNeighbourAccuracy(from: Matrix, to: Matrix): number {
  if (from.rows !== to.rows) throw new Error(`bitext sides differ in size: ${from.rows} vs ${to.rows}`);
  const hits = denseSearch(from, to, 1);
  let correct = 0;
  hits.forEach((h, i) => (correct += h.indices[0] === i ? 1 : 0));
  return correct / from.rows;
}

export interface BitextMetrics {
  accuracy: number;
  accuracy_to_eng: number;
  accuracy_from_eng: number;
}

export function bitextMetrics(xxx: Matrix, eng: Matrix): BitextMetrics {
  const to = nearestNeighbourAccuracy(xxx, eng);
  const from = nearestNeighbourAccuracy(eng, xxx);
  return { accuracy: (to + from) / 2, accuracy_to_eng: to, accuracy_from_eng: from };
}

/** Dense vectors as `m3 encode --model M` (plus `--mcls` when asked) writes them for lines of text. */
export async function encodeAsM3Encode(model: M3Model, texts: string[], opts: { batchSize?: number; mcls?: boolean; label: string; progress?: boolean }): Promise<Matrix> {
  if (!model.tokenizer) throw new UserError(`${model.source}: no tokenizer files; evaluation needs one to encode text`);
  const bar = opts.progress === false ? null : new Progress(opts.label, texts.length, 'text');
  const embs = await encodeIds(model, texts.map((t) => model.tokenizer!.encode(t, 1 << 30)), {
    outputs: ['dense'], batchSize: opts.batchSize, mcls: opts.mcls, onBatch: (done) => bar?.update(done),
  });
  bar?.done();
  const dim = embs[0].dense!.length;
  const data = new Float32Array(texts.length * dim);
  embs.forEach((e, i) => data.set(e.dense!, i * dim));
  return { data, rows: texts.length, dim };
}

/** Encodes both sides (already read) and scores them. */
export async function evaluateBitext(model: M3Model, sides: { xxx: string[]; eng: string[] }, language: string, opts: { batchSize?: number; mcls?: boolean; progress?: boolean } = {}): Promise<BitextMetrics & { pairs: number }> {
  const x = await encodeAsM3Encode(model, sides.xxx, { ...opts, label: `encode ${language}` });
  const e = await encodeAsM3Encode(model, sides.eng, { ...opts, label: 'encode eng' });
  return { ...bitextMetrics(x, e), pairs: sides.xxx.length };
}

/** Reads a pair, encodes both sides and scores them. */
export async function evaluateTatoeba(model: M3Model, pair: TatoebaPair, opts: { batchSize?: number; mcls?: boolean; maxPairs?: number; progress?: boolean } = {}): Promise<BitextMetrics & { pairs: number }> {
  return evaluateBitext(model, readTatoebaPair(pair, opts.maxPairs), pair.language, opts);
}
