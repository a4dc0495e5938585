/**
 * The Hugging Face dataset layout MIRACL (`miracl/miracl`) and MLDR (`Shitao/MLDR`) ship, as one folder:
 *
 *   corpus.jsonl[.gz]   {"docid", "title"?, "text"}
 *   <split>.jsonl[.gz]  {"query_id", "query", "positive_passages": [{"docid", ...}], "negative_passages": [...]}
 *   qrels/<split>.tsv   optional BEIR TSV, or <split>.qrels / qrels/<split>.trec in TREC form
 *
 * A qrels file, when there is one, gives the judgements (it may grade them); otherwise each query's
 * `positive_passages` are its relevant documents (grade 1; `negative_passages` are judged non-relevant and
 * change no metric). Documents are joined "title text" as BEIR does, so the result is a BeirDataset and
 * is searched and scored exactly as a BEIR folder.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../util/errors';
import { BeirDataset, readBeirCorpus, readBeirQrels } from './data';
import { idField, jsonObjects, readTextFile, stringField } from './files';
import { Qrels } from './metrics';
import { readQrelsTrec } from './trec';

/** The first of `names` present in `dir`, or null. */
function firstIn(dir: string, names: string[]): string | null {
  for (const n of names) if (fs.existsSync(path.join(dir, n))) return path.join(dir, n);
  return null;
}

export const hfCorpusFile = (dir: string) => firstIn(dir, ['corpus.jsonl', 'corpus.jsonl.gz']);
export const hfSplitFile = (dir: string, split: string) => firstIn(dir, [`${split}.jsonl`, `${split}.jsonl.gz`]);
const hfQrelsFile = (dir: string, split: string) => firstIn(dir, [`qrels/${split}.tsv`, `qrels/${split}.trec`, `${split}.qrels`]);

/** The splits a folder holds (names of its `<split>.jsonl[.gz]` files other than the corpus). */
export function hfSplits(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => /\.jsonl(\.gz)?$/.test(f) && !f.startsWith('corpus.')).map((f) => f.replace(/\.jsonl(\.gz)?$/, '')).sort();
}

/** Loads the folder's corpus and the split's queries with their judgements (the first `maxQueries` in file order). */
export function loadHfJsonl(dir: string, split = 'dev', opts: { maxQueries?: number } = {}): BeirDataset {
  const corpusFile = hfCorpusFile(dir);
  if (!corpusFile) throw new UserError(`${dir}: no corpus.jsonl or corpus.jsonl.gz`);
  const splitFile = hfSplitFile(dir, split);
  if (!splitFile) {
    const have = hfSplits(dir);
    throw new UserError(`${dir}: no ${split}.jsonl for split '${split}'${have.length ? ` (splits here: ${have.join(', ')})` : ''}`);
  }
  const qrelsFile = hfQrelsFile(dir, split);
  const fromFile: Qrels | null = qrelsFile ? (qrelsFile.endsWith('.tsv') ? readBeirQrels(qrelsFile) : readQrelsTrec(qrelsFile)) : null;
  const corpus = readBeirCorpus(corpusFile, 'docid');
  const known = new Set(corpus.ids);
  const qrels: Qrels = new Map();
  const queryIds: string[] = [];
  const queryTexts: string[] = [];
  for (const { value, where } of jsonObjects(splitFile, readTextFile(splitFile, 'queries file'))) {
    const qid = idField(value, 'query_id', where);
    if (qrels.has(qid)) throw new UserError(`${where}: query id '${qid}' appears twice`);
    const text = stringField(value, 'query', where)!;
    let judged: Map<string, number>;
    if (fromFile) {
      const j = fromFile.get(qid);
      if (!j) continue; // a query without judgements is not evaluated (as BEIR's qrels decide the queries)
      judged = j;
    } else {
      const pos = value.positive_passages;
      if (!Array.isArray(pos)) throw new UserError(`${where}: 'positive_passages' must be a list of {docid, ...} (or give qrels/${split}.tsv)`);
      judged = new Map();
      pos.forEach((p, i) => {
        if (!p || typeof p !== 'object' || Array.isArray(p)) throw new UserError(`${where}: positive_passages[${i}] must be an object with a 'docid'`);
        const id = idField(p as Record<string, unknown>, 'docid', `${where}: positive_passages[${i}]`);
        if (!known.has(id)) throw new UserError(`${where}: positive passage '${id}' is not in ${corpusFile}`);
        judged.set(id, 1);
      });
      if (judged.size === 0) continue; // nothing relevant: trec_eval would not count the query either
    }
    qrels.set(qid, judged);
    queryIds.push(qid);
    queryTexts.push(text);
    if (opts.maxQueries !== undefined && queryIds.length >= opts.maxQueries) break;
  }
  if (queryIds.length === 0) throw new UserError(`${splitFile}: no query has a relevant passage${qrelsFile ? ` in ${qrelsFile}` : ''}`);
  return { dir, split, corpus, queryIds, queryTexts, qrels };
}
