/**
 * Small models and data for the end-to-end evaluation and mining tests: a BEIR folder built from the
 * lightning-ir toy corpus (20 docs, 2 queries; it matches the tiny BERT's 30-token vocabulary), and a tiny
 * model with M3 heads made from the tiny BERT's config and tokenizer.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parseConfig } from '../../src/model/config';
import { initModel, M3Model, saveModel } from '../../src/model/m3';
import { loadTokenizer } from '../../src/model/tokenizer';
import { sharedDir } from '../helpers/shared';

export const TINY_BERT = sharedDir('data', 'models', 'lightning-ir-tiny-bert');
const TOY = sharedDir('data', 'retrieval', 'lightning-ir-toy');

const tsv = (file: string) => fs.readFileSync(path.join(TOY, file), 'utf8').split('\n').filter(Boolean).map((l) => l.split('\t'));

export const toyDocs = (): [string, string][] => tsv('docs.tsv') as [string, string][];
export const toyQueries = (): [string, string][] => tsv('queries.tsv') as [string, string][];

/**
 * Writes the toy data as a BEIR folder: the 20 documents (10 of them identical "foo …" texts, which tie
 * exactly), the 2 queries, and their iteration-0 judgements (the file's duplicated iteration 1 is dropped)
 * as qrels/dev.tsv.
 */
export function writeToyBeir(dir: string): string {
  fs.mkdirSync(path.join(dir, 'qrels'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'corpus.jsonl'), toyDocs().map(([id, text]) => JSON.stringify({ _id: id, title: '', text })).join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'queries.jsonl'), toyQueries().map(([id, text]) => JSON.stringify({ _id: id, text })).join('\n') + '\n');
  const qrels = fs.readFileSync(path.join(TOY, 'qrels.tsv'), 'utf8').split('\n').filter(Boolean).map((l) => l.split(/\s+/)).filter((c) => c[1] === '0');
  fs.writeFileSync(path.join(dir, 'qrels', 'dev.tsv'), 'query-id\tcorpus-id\tscore\n' + qrels.map((c) => `${c[0]}\t${c[2]}\t${c[3]}`).join('\n') + '\n');
  return dir;
}

/** The tiny BERT's shape and tokenizer with freshly initialised encoder weights and M3 heads. */
export function tinyModelWithHeads(seed = 3): M3Model {
  const raw = JSON.parse(fs.readFileSync(path.join(TINY_BERT, 'config.json'), 'utf8'));
  return initModel(parseConfig(raw), { seed, heads: true, tokenizer: loadTokenizer(TINY_BERT) });
}

export async function saveTinyModelWithHeads(dir: string, seed = 3): Promise<string> {
  await saveModel(tinyModelWithHeads(seed), dir);
  return dir;
}
