/**
 * Retrieval evaluation on a raw BEIR folder: encode the corpus and the split's queries with the model,
 * search every requested mode exactly (src/eval/search.ts, the M3 paper's hybrid protocol), and score the runs
 * with trec_eval's nDCG@10, Recall@100 and MRR@10 (src/eval/metrics.ts).
 *
 * Memory: the corpus outputs stay in memory while searching — dense rows × dim floats, the lexical
 * dicts, and for `colbert` / `all` every document's token vectors (tokens × colbert dim floats), which
 * is what bounds the corpus size for multi-vector modes.
 */
import { colbertDim, hasHeads, M3Model } from '../model/m3';
import { encodeTexts, OutputKind } from '../model/inference';
import { maxInputLength } from '../model/config';
import { UserError } from '../util/errors';
import { Progress } from '../util/progress';
import { BeirDataset, loadBeir } from './data';
import { evaluateRun, METRIC_NAMES, RetrievalMetrics, Run } from './metrics';
import { DEFAULT_MODE_WEIGHTS, Mode, MODE_ALIASES, modeNamed, MODES } from '../model/scores';
import { EncodedSet, Hits, outputsFor, searchModes } from './search';

export type EvalResults = Partial<Record<Mode, RetrievalMetrics>>;

export const DEFAULT_MAX_LENGTH = 512;
export const DEFAULT_TOP_K = 100;

export interface BeirEvalOptions {
  /** qrels/<split>.tsv (default 'dev'); used only when a folder path is given. */
  split?: string;
  modes?: Mode[];
  /** [dense, sparse, colbert] weights of the hybrid modes. */
  weights?: readonly [number, number, number];
  /** Document truncation in tokens (default 512, capped by the model). */
  maxLength?: number;
  /** Query truncation in tokens (default: maxLength). */
  queryMaxLength?: number;
  /** Documents per query in each run, and the depth of each first-stage retriever (default 100). */
  topK?: number;
  batchSize?: number;
  /** Only the first N judged queries of the split (qrels order); used only when a folder path is given. */
  maxQueries?: number;
  /** Progress bars on stderr (default true). */
  progress?: boolean;
  /** Dense vectors through multiple CLS (`m3 encode --mcls`); dense mode only. */
  mcls?: boolean;
}

export interface BeirRetrieval {
  dataset: BeirDataset;
  runs: Partial<Record<Mode, Run>>;
  seconds: { encodeCorpus: number; encodeQueries: number; search: number };
}

/** Parses "dense,sparse,all" into modes, rejecting unknown names and modes the model cannot serve. */
export function parseModes(spec: string | readonly string[]): Mode[] {
  const names = (typeof spec === 'string' ? spec.split(',') : [...spec]).map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new UserError(`no evaluation modes given (choose from ${MODES.join(', ')})`);
  const modes = names.map((n) => {
    const m = modeNamed(n);
    if (!m) throw new UserError(`unknown evaluation mode '${n}' (choose from ${MODES.join(', ')}; FlagEmbedding's ${Object.keys(MODE_ALIASES).join(', ')} are accepted)`);
    return m;
  });
  return [...new Set(modes)];
}

export function checkModesSupported(model: M3Model, modes: readonly Mode[]): void {
  const needHeads = modes.filter((m) => m !== 'dense');
  if (needHeads.length && !hasHeads(model)) {
    throw new UserError(`${model.source}: has no M3 heads (colbert_linear / sparse_linear), so mode${needHeads.length > 1 ? 's' : ''} ${needHeads.join(', ')} cannot run; use --modes dense`);
  }
}

function checkOptions(o: BeirEvalOptions): void {
  const posInt = (v: number | undefined, name: string, min = 1) => {
    if (v !== undefined && (!Number.isInteger(v) || v < min)) throw new UserError(`${name} must be an integer ≥ ${min}, got ${v}`);
  };
  posInt(o.maxLength, 'max length', 2);
  posInt(o.queryMaxLength, 'query max length', 2);
  posInt(o.topK, 'top-k');
  posInt(o.batchSize, 'batch size');
  posInt(o.maxQueries, 'max queries');
  if (o.mcls && o.modes?.some((m) => m !== 'dense')) throw new UserError(`--mcls scores dense only; use --modes dense (got ${o.modes.join(', ')})`);
  if (o.weights && (o.weights.length !== 3 || o.weights.some((w) => !Number.isFinite(w)))) {
    throw new UserError(`weights must be three numbers (dense, sparse, colbert), got ${JSON.stringify(o.weights)}`);
  }
}

const ENCODE_CHUNK = 1024; // texts encoded per call: bounds the per-token objects alive at once

/**
 * Encodes texts into the compact layouts search uses (one dense matrix, lexical dicts, packed ColBERT
 * vectors). Texts go longest first in chunks, so batches stay evenly padded across chunk boundaries.
 */
export async function encodeCollection(model: M3Model, texts: readonly string[], outputs: OutputKind[], opts: { maxLength: number; batchSize?: number; label: string; progress?: boolean; mcls?: boolean }): Promise<EncodedSet> {
  const n = texts.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => texts[b].length - texts[a].length || a - b);
  const set: EncodedSet = { count: n };
  if (outputs.includes('sparse')) set.sparse = new Array(n);
  if (outputs.includes('colbert')) {
    set.colbert = new Array(n);
    set.colbertDim = colbertDim(model) ?? model.config.hidden;
  }
  const bar = opts.progress === false ? null : new Progress(opts.label, n, 'text');
  for (let start = 0; start < n; start += ENCODE_CHUNK) {
    const idx = order.slice(start, start + ENCODE_CHUNK);
    const embs = await encodeTexts(model, idx.map((i) => texts[i]), {
      outputs, maxLength: opts.maxLength, batchSize: opts.batchSize, mcls: opts.mcls,
      onBatch: (done) => start + done < n && bar?.update(start + done), // done() draws the final state once
    });
    embs.forEach((e, j) => {
      const i = idx[j];
      if (e.dense) {
        if (!set.dense) set.dense = { data: new Float32Array(n * e.dense.length), rows: n, dim: e.dense.length };
        set.dense.data.set(e.dense, i * set.dense.dim);
      }
      if (set.sparse) set.sparse[i] = e.sparse!;
      if (set.colbert) {
        const vecs = e.colbert!;
        const data = new Float32Array(vecs.length * set.colbertDim!);
        vecs.forEach((v, t) => data.set(v, t * set.colbertDim!));
        set.colbert[i] = { data, count: vecs.length };
      }
    });
  }
  bar?.done();
  return set;
}

function hitsToRun(hits: Hits[], queryIds: readonly string[], docIds: readonly string[]): Run {
  const run: Run = new Map();
  hits.forEach((h, qi) => run.set(queryIds[qi], Array.from(h.indices, (d, r) => ({ docId: docIds[d], score: h.scores[r] }))));
  return run;
}

/** Encodes and searches; the runs of every mode (each query's top-k documents with their scores). */
export async function retrieveBeir(model: M3Model, data: string | BeirDataset, opts: BeirEvalOptions = {}): Promise<BeirRetrieval> {
  checkOptions(opts);
  const modes = opts.modes ?? ['dense'];
  parseModes(modes);
  checkModesSupported(model, modes);
  if (!model.tokenizer) throw new UserError(`${model.source}: no tokenizer files (tokenizer.json or vocab.txt); evaluation needs one to encode text`);
  const dataset = typeof data === 'string' ? loadBeir(data, opts.split ?? 'dev', { maxQueries: opts.maxQueries }) : data;
  const modelMax = maxInputLength(model.config);
  const maxLength = Math.min(opts.maxLength ?? DEFAULT_MAX_LENGTH, modelMax);
  const queryMaxLength = Math.min(opts.queryMaxLength ?? maxLength, modelMax);
  const outputs = outputsFor(modes);
  const progress = opts.progress ?? true;

  let t = performance.now();
  const queries = await encodeCollection(model, dataset.queryTexts, outputs, { maxLength: queryMaxLength, batchSize: opts.batchSize, label: 'encode queries', progress, mcls: opts.mcls });
  const encodeQueries = (performance.now() - t) / 1000;
  t = performance.now();
  const corpus = await encodeCollection(model, dataset.corpus.texts, outputs, { maxLength, batchSize: opts.batchSize, label: 'encode corpus', progress, mcls: opts.mcls });
  const encodeCorpus = (performance.now() - t) / 1000;
  t = performance.now();
  const hits = searchModes(queries, corpus, modes, { topK: opts.topK ?? DEFAULT_TOP_K, weights: opts.weights ?? DEFAULT_MODE_WEIGHTS });
  const runs: Partial<Record<Mode, Run>> = {};
  for (const m of modes) runs[m] = hitsToRun(hits[m]!, dataset.queryIds, dataset.corpus.ids);
  const search = (performance.now() - t) / 1000;
  return { dataset, runs, seconds: { encodeCorpus, encodeQueries, search } };
}

/** nDCG@10, Recall@100 and MRR@10 of each run against the dataset's qrels, in mode order. */
export function scoreRuns(dataset: BeirDataset, runs: Partial<Record<Mode, Run>>): EvalResults {
  const out: EvalResults = {};
  for (const [mode, run] of Object.entries(runs) as [Mode, Run][]) out[mode] = evaluateRun(dataset.qrels, run).mean;
  return out;
}

/**
 * Evaluates a model on a BEIR folder (or an already loaded dataset, so repeated evaluations during training
 * parse the files once): { mode: { 'ndcg@10', 'recall@100', 'mrr@10' } } for every requested mode.
 */
export async function evaluateBeir(model: M3Model, data: string | BeirDataset, opts: BeirEvalOptions = {}): Promise<EvalResults> {
  const { dataset, runs } = await retrieveBeir(model, data, opts);
  return scoreRuns(dataset, runs);
}

/** A fixed-width table, one row per mode. */
export function formatResultsTable(results: EvalResults): string {
  const head = ['mode'.padEnd(14), 'nDCG@10'.padStart(9), 'Recall@100'.padStart(11), 'MRR@10'.padStart(9)].join(' ');
  const rows = (Object.entries(results) as [Mode, RetrievalMetrics][]).map(([mode, m]) =>
    [mode.padEnd(14), ...METRIC_NAMES.map((k, i) => m[k].toFixed(4).padStart(i === 1 ? 11 : 9))].join(' '));
  return [head, ...rows].join('\n') + '\n';
}
