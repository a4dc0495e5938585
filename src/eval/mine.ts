/**
 * Hard-negative mining with the semantics of FlagEmbedding's `scripts/hn_mine.py`:
 *  - the candidate pool is the given corpus (`{"text": ...}` lines), or else every pos and neg text of the
 *    input; duplicates are dropped;
 *  - each query is searched densely (exact inner product) against the pool, keeping the top `end`;
 *  - `range` = [start, end) is a Python slice of that ranking, 0-based: "2-200" skips the two best hits and
 *    keeps ranks 3..200 (1-based), exactly as hn_mine's `all_inxs[i][start:end]`;
 *  - hits equal to a positive or to the query itself are skipped;
 *  - when more than `negatives` remain, `negatives` of them are drawn at random; otherwise all are kept in
 *    rank order and the rest is filled with random pool texts that are not positives.
 * Deliberate differences: draws come from a seeded generator per example (reruns give the same file);
 * random fill-ins also avoid the query and negatives already chosen (hn_mine may repeat them); and
 * `neg_scores`, which scored the replaced negatives, is dropped. Every other field is kept as it was.
 */
import { M3Model } from '../model/m3';
import { UserError } from '../util/errors';
import { createRng, deriveSeed, Rng } from '../util/rng';
import { describeInvalid, isInvalidRecord, recordOf } from '../data/records';
import { encodeCollection } from './beir';
import { jsonObjects, readTextFile, stringField } from './files';
import { denseSearch } from './search';

export interface TrainingExample {
  /** The line as read; written back with `neg` replaced. */
  value: Record<string, unknown>;
  query: string;
  pos: string[];
  neg: string[];
}

export interface MineOptions {
  /** [start, end): 0-based slice of each query's dense ranking, as hn_mine's `--range_for_sampling`. */
  range: [number, number];
  negatives: number;
  seed: number;
  maxLength: number;
  queryMaxLength: number;
  batchSize?: number;
  progress?: boolean;
}

export interface MineStats {
  examples: number;
  pool: number;
  /** Negatives taken from the ranking range, and drawn at random to fill up. */
  fromRange: number;
  filled: number;
  /** Examples left with fewer than `negatives` (the pool ran out). */
  short: number;
}

/** "2-200" → [2, 200]. */
export function parseRange(spec: string): [number, number] {
  const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(spec);
  if (!m) throw new UserError(`range '${spec}' must look like START-END, e.g. 2-200`);
  const range: [number, number] = [Number(m[1]), Number(m[2])];
  if (range[0] >= range[1]) throw new UserError(`range '${spec}': START must be below END`);
  return range;
}

/**
 * FlagEmbedding training JSONL ({"query": str, "pos": [str, ...], "neg": [str, ...]?, ...}), validated as
 * `m3 data prepare` validates it (same aliases, same messages); `neg` is optional, mining fills it.
 */
export function readTrainingJsonl(file: string): TrainingExample[] {
  const out: TrainingExample[] = [];
  for (const { value, where } of jsonObjects(file, readTextFile(file, 'input file'))) {
    // teacher scores are not mining's business (hn_mine passes them through; `neg_scores` go with `neg`)
    const r = recordOf({ ...value, pos_scores: undefined, neg_scores: undefined }, 'pairs');
    if (isInvalidRecord(r)) throw new UserError(describeInvalid(where, r));
    out.push({ value, query: r.query, pos: r.pos, neg: r.neg });
  }
  if (out.length === 0) throw new UserError(`${file}: no examples`);
  return out;
}

/** A candidate pool file: JSONL of {"text": str}. */
export function readCandidatePool(file: string): string[] {
  const texts: string[] = [];
  for (const { value, where } of jsonObjects(file, readTextFile(file, 'corpus file'))) texts.push(stringField(value, 'text', where)!);
  if (texts.length === 0) throw new UserError(`${file}: the corpus is empty`);
  return texts;
}

/** `n` distinct items of `items` in random order (a partial Fisher–Yates shuffle on a copy). */
function sample<T>(items: readonly T[], n: number, rng: Rng): T[] {
  const a = [...items];
  const m = Math.min(n, a.length);
  for (let i = 0; i < m; i++) {
    const j = i + rng.int(a.length - i);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, m);
}

/** Mines `negatives` hard negatives per example; returns the rows to write (FlagEmbedding format) and counts. */
export async function mineHardNegatives(model: M3Model, examples: readonly TrainingExample[], pool: readonly string[] | null, opts: MineOptions): Promise<{ rows: Record<string, unknown>[]; stats: MineStats }> {
  if (!Number.isInteger(opts.negatives) || opts.negatives < 1) throw new UserError(`negatives must be a positive integer, got ${opts.negatives}`);
  const corpus = [...new Set(pool ?? examples.flatMap((e) => [...e.pos, ...e.neg]))];
  const [start, end] = opts.range;
  const enc = (texts: string[], maxLength: number, label: string) =>
    encodeCollection(model, texts, ['dense'], { maxLength, batchSize: opts.batchSize, label, progress: opts.progress });
  const corpusVecs = await enc(corpus, opts.maxLength, 'encode corpus');
  const queryVecs = await enc(examples.map((e) => e.query), opts.queryMaxLength, 'encode queries');
  const hits = denseSearch(queryVecs.dense!, corpusVecs.dense!, end);
  const stats: MineStats = { examples: examples.length, pool: corpus.length, fromRange: 0, filled: 0, short: 0 };
  const rows = examples.map((ex, i) => {
    const rng = createRng(deriveSeed(opts.seed, i));
    const positives = new Set(ex.pos);
    const ranked = Array.from(hits[i].indices.subarray(start, end), (d) => corpus[d]);
    let neg = ranked.filter((t) => !positives.has(t) && t !== ex.query);
    if (neg.length > opts.negatives) neg = sample(neg, opts.negatives, rng);
    stats.fromRange += neg.length;
    if (neg.length < opts.negatives) {
      const taken = new Set(neg);
      const eligible = corpus.filter((t) => !positives.has(t) && t !== ex.query && !taken.has(t));
      const fill = sample(eligible, opts.negatives - neg.length, rng);
      stats.filled += fill.length;
      neg = [...neg, ...fill];
      if (neg.length < opts.negatives) stats.short++;
    }
    const row: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(ex.value)) if (k !== 'neg_scores') row[k] = k === 'neg' ? neg : v;
    if (!('neg' in row)) row.neg = neg;
    return row;
  });
  return { rows, stats };
}
