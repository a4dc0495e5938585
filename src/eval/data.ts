/**
 * A raw BEIR folder: `corpus.jsonl` (or `corpus.jsonl.gz`) of {_id, title, text}, `queries.jsonl` of
 * {_id, text} and `qrels/<split>.tsv` (`query-id  corpus-id  score` with a header line). Documents are
 * encoded as BEIR's dense searchers join them: "title text", trimmed, or the text alone when no title.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../util/errors';
import { idField, jsonObjects, numberedLines, readTextFile, stringField } from './files';
import { Qrels } from './metrics';

export interface BeirCorpus {
  ids: string[];
  /** Texts to encode (title and text joined), parallel to ids. */
  texts: string[];
}

export interface BeirDataset {
  dir: string;
  split: string;
  corpus: BeirCorpus;
  /** The split's queries that have judgements, in qrels order. */
  queryIds: string[];
  queryTexts: string[];
  qrels: Qrels;
}

/** The path of the corpus file: corpus.jsonl, else corpus.jsonl.gz. */
export function corpusFile(dir: string): string {
  for (const name of ['corpus.jsonl', 'corpus.jsonl.gz']) {
    const f = path.join(dir, name);
    if (fs.existsSync(f)) return f;
  }
  throw new UserError(`${dir}: no corpus.jsonl or corpus.jsonl.gz (not a BEIR folder)`);
}

/** BEIR's document text: "title text" trimmed, or the text alone when the title is empty. */
export function documentText(title: string | undefined, text: string): string {
  return title ? `${title} ${text}`.trim() : text.trim();
}

/** A JSONL corpus of `{<idKey>, title?, text}` (BEIR: `_id`; the Hugging Face MIRACL / MLDR layout: `docid`). */
export function readBeirCorpus(file: string, idKey = '_id'): BeirCorpus {
  const ids: string[] = [];
  const texts: string[] = [];
  const seen = new Set<string>();
  for (const { value, where } of jsonObjects(file, readTextFile(file, 'corpus file'))) {
    const id = idField(value, idKey, where);
    if (seen.has(id)) throw new UserError(`${where}: document id '${id}' appears twice`);
    seen.add(id);
    ids.push(id);
    texts.push(documentText(stringField(value, 'title', where, { optional: true }), stringField(value, 'text', where)!));
  }
  if (ids.length === 0) throw new UserError(`${file}: the corpus is empty`);
  return { ids, texts };
}

/** query id → text. */
export function readBeirQueries(file: string): Map<string, string> {
  const queries = new Map<string, string>();
  for (const { value, where } of jsonObjects(file, readTextFile(file, 'queries file'))) {
    const id = idField(value, '_id', where);
    if (queries.has(id)) throw new UserError(`${where}: query id '${id}' appears twice`);
    queries.set(id, stringField(value, 'text', where)!);
  }
  return queries;
}

/**
 * BEIR qrels TSV: `query-id corpus-id score`, tab-separated; the first line is the header (BEIR skips it
 * unconditionally; here it is skipped only when its score column is not a number). A repeated pair keeps
 * the last score, as BEIR's dict does.
 */
export function readBeirQrels(file: string): Qrels {
  const qrels: Qrels = new Map();
  let first = true;
  for (const { line, lineNo } of numberedLines(readTextFile(file, 'qrels file'))) {
    const cols = line.split('\t');
    const isHeader = first && (cols.length !== 3 || !/^-?\d+$/.test(cols[2].trim()));
    first = false;
    if (isHeader) continue;
    if (cols.length !== 3) throw new UserError(`${file}:${lineNo}: expected 3 tab-separated columns 'query-id corpus-id score', got ${cols.length}`);
    const [qid, docId, score] = cols.map((c) => c.trim());
    if (!qid || !docId) throw new UserError(`${file}:${lineNo}: empty query or corpus id`);
    if (!/^-?\d+$/.test(score)) throw new UserError(`${file}:${lineNo}: score '${score}' is not an integer`);
    let judged = qrels.get(qid);
    if (!judged) qrels.set(qid, (judged = new Map()));
    judged.set(docId, Number(score));
  }
  if (qrels.size === 0) throw new UserError(`${file}: no judgements`);
  return qrels;
}

/** A BEIR folder's qrels of `split` and the queries they judge (every one must be in queries.jsonl). */
function readJudgedQueries(dir: string, split: string): { qrels: Qrels; queries: Map<string, string> } {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`${dir}: BEIR folder does not exist`);
  const qrelsFile = path.join(dir, 'qrels', `${split}.tsv`);
  if (!fs.existsSync(qrelsFile)) {
    const have = fs.existsSync(path.join(dir, 'qrels')) ? fs.readdirSync(path.join(dir, 'qrels')).filter((f) => f.endsWith('.tsv')).map((f) => f.slice(0, -4)) : [];
    throw new UserError(`${qrelsFile}: no qrels for split '${split}'${have.length ? ` (splits here: ${have.join(', ')})` : ''}`);
  }
  const queriesFile = path.join(dir, 'queries.jsonl');
  const qrels = readBeirQrels(qrelsFile);
  const queries = readBeirQueries(queriesFile);
  for (const qid of qrels.keys()) {
    if (!queries.has(qid)) throw new UserError(`${qrelsFile}: query '${qid}' is not in ${queriesFile}`);
  }
  return { qrels, queries };
}

/** The queries a split evaluates (id → text, qrels order), without reading the corpus. */
export function loadBeirQueries(dir: string, split = 'dev'): Map<string, string> {
  const { qrels, queries } = readJudgedQueries(dir, split);
  return new Map([...qrels.keys()].map((q) => [q, queries.get(q)!]));
}

/** Loads a BEIR folder's corpus, the split's qrels and their queries (the first `maxQueries` in qrels order). */
export function loadBeir(dir: string, split = 'dev', opts: { maxQueries?: number } = {}): BeirDataset {
  const judged = readJudgedQueries(dir, split);
  const queries = judged.queries;
  let qrels = judged.qrels;
  const corpus = readBeirCorpus(corpusFile(dir));
  let queryIds = [...qrels.keys()];
  if (opts.maxQueries !== undefined && opts.maxQueries < queryIds.length) {
    queryIds = queryIds.slice(0, opts.maxQueries);
    qrels = new Map(queryIds.map((q) => [q, qrels.get(q)!]));
  }
  return { dir, split, corpus, queryIds, queryTexts: queryIds.map((q) => queries.get(q)!), qrels };
}
