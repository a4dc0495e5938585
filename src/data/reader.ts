/**
 * Streams training batches from prepared datasets with bounded memory.
 *
 * An epoch's plan is a pure function of (seed, epoch) and the manifest's chunk row counts: each stream
 * (one dataset and length bucket) visits its chunks in a shuffled order and the rows of each chunk in a
 * shuffled order, is cut into global batches (per-device size × world size), and the streams' batches are
 * interleaved in a shuffled order. Batch k of an epoch is therefore computed directly — a resumed reader
 * reads exactly the chunks that batch needs (seeking through the Arrow footer), nothing is replayed — and
 * every rank sees the same global batch and takes its own slice (FlagEmbedding's fixed-seed scheme).
 * Per-example draws (positive, negatives, text shuffle) are seeded by the example's place in the data.
 */
import type { RecordBatch } from 'apache-arrow';
import * as path from 'path';
import { padBatch, Tokenizer } from '../model/tokenizer';
import { check, UserError } from '../util/errors';
import { createRng, deriveSeed, Rng } from '../util/rng';
import { TokenBatch } from '../util/token-batch';
import { ArrowFileReader, IdLists, openArrowReader, pairChunk, PairChunk, pretrainChunk } from './arrow';
import { BUCKET_BOUNDS, BUCKETS, checkTokenizer, DatasetEntry, Manifest, readManifest } from './manifest';
import { encodeTruncated } from './prepare';
import { groupSizeFor, maybeShuffleText, sampleNegatives } from './sampling';

export interface Position {
  epoch: number;
  /** Index of the next batch within the epoch. */
  batch: number;
}

export interface ReaderOptions {
  seed: number;
  /**
   * Per-device batch size: one number, or a table by bucket ("0-500": 48, …; see FINETUNE_BATCH_SIZES).
   * A dataset's `batch_size` column overrides it; symmetric types get half of it (FlagEmbedding).
   */
  batchSize: number | Record<string, number>;
  /** G: passages per query (1 positive + G−1 negatives). Default 8 for finetune, 1 for pairs; a `train_group_size` column overrides. */
  trainGroupSize?: number;
  /**
   * Probability of cutting a positive over 100 characters into three shuffled parts (FlagEmbedding's
   * shuffle_ratio / _shuffle_text; BGE-M3 used 0.002). Needs texts and the tokenizer.
   */
  shuffleRatio?: number;
  padToMultipleOf?: number;
  rank?: number;
  worldSize?: number;
  /** Drop each stream's incomplete last batch (FlagEmbedding's current behaviour). Default true. */
  dropLast?: boolean;
  /** The model's tokenizer: the data must have been prepared with it. */
  tokenizer?: Tokenizer;
  /** Where to start (default: epoch 0, batch 0). */
  position?: Position;
  /** Budget for decoded chunks kept in memory (default 24 MiB; at least the chunks of one batch are kept). */
  cacheBytes?: number;
}

export interface PairBatch {
  kind: 'pairs';
  dataset: string;
  bucket: string;
  type: string | null;
  noInBatchNeg: boolean;
  /** Queries in this device's batch (B) and passages per query (G). */
  size: number;
  groupSize: number;
  queries: TokenBatch;
  /** [B·G, L]: row b·G is query b's positive, the next G−1 rows its negatives. */
  passages: TokenBatch;
  /** [B·G] teacher scores in passage order, or null when any example has none. */
  teacherScores: Float32Array | null;
  position: Position;
}

export interface PretrainBatch {
  kind: 'pretrain';
  dataset: string;
  bucket: string;
  size: number;
  inputIds: TokenBatch;
  position: Position;
}

export type DataBatch = PairBatch | PretrainBatch;

export interface DatasetReader {
  readonly manifests: Manifest[];
  readonly batchesPerEpoch: number;
  /** The position of the next batch (save it with a checkpoint; pass it back as `position` or to seek). */
  position(): Position;
  seek(pos: Position): void;
  /** The next batch; after the last batch of an epoch comes the first of the next. */
  next(): Promise<DataBatch>;
  /** The remaining batches of the current epoch. */
  epoch(): AsyncGenerator<DataBatch>;
  /** Record batches read from disk so far (a resumed reader reads only what its batches need). */
  stats(): { chunksRead: number };
  /** The batch shapes the data can produce (one per dataset and length bucket): what a memory plan sizes. */
  shapes(): BatchShape[];
  close(): Promise<void>;
}

/** The largest batch of one dataset and length bucket: this device's rows, G, and the padded lengths at most. */
export interface BatchShape {
  dataset: string;
  bucket: string;
  batchSize: number;
  groupSize: number;
  /** Longest padded query / passage (pairs) or sequence (pretrain): the bucket's bound capped by the prepared max lengths. */
  queryLength: number;
  passageLength: number;
}

interface ChunkRef {
  file: string;
  index: number;
  rows: number;
}

/** One dataset's rows of one length bucket: a batch is cut from one stream, never across streams. */
interface Stream {
  id: number;
  dataset: DatasetEntry;
  manifest: Manifest;
  bucket: string;
  chunks: ChunkRef[];
  rows: number;
  batchSize: number;
  groupSize: number;
  batches: number;
}

interface EpochPlan {
  epoch: number;
  /** order[k] = the stream of batch k; indexInStream[k] = which of that stream's batches it is. */
  order: Int32Array;
  indexInStream: Int32Array;
  chunkOrder: Int32Array[];
  /** cumRows[s][i] = rows before the i-th chunk in stream s's shuffled chunk order. */
  cumRows: Float64Array[];
}

interface LoadedChunk {
  bytes: number;
  pairs: PairChunk | null;
  ids: IdLists | null;
  /** The chunk's row order for this epoch. */
  perm: Int32Array;
}

/** One row of a batch: its chunk (index into the stream's chunks) and its row there, after the row shuffle. */
interface Example {
  chunk: number;
  loaded: LoadedChunk;
  row: number;
}

/** ReaderOptions with the defaults filled in and checked, and the kind of data being read. */
type Settings = ReaderOptions & Required<Pick<ReaderOptions, 'rank' | 'worldSize' | 'shuffleRatio' | 'dropLast'>> & { kind: 'pairs' | 'pretrain' };

/** The fields both batch kinds share. */
type BatchBase = Pick<PretrainBatch, 'dataset' | 'bucket' | 'size' | 'position'>;

interface ChunkCache {
  load(s: Stream, epoch: number, c: number, pinned: Set<string>): Promise<LoadedChunk>;
  chunksRead(): number;
  close(): Promise<void>;
}

// each shuffle draws from its own seed, derived from (seed, epoch, …, salt), so none depends on another
const SALT_CHUNK_ORDER = 1;
const SALT_STREAM_ORDER = 2;
const SALT_ROW_ORDER = 3;
const SALT_EXAMPLE = 4;
/** Arrow files kept open at once. */
const MAX_OPEN_FILES = 16;

/** Opens prepared dataset dir(s) for reading batches. */
export async function openDataset(dirs: string | string[], opts: ReaderOptions): Promise<DatasetReader> {
  const dirList = Array.isArray(dirs) ? dirs : [dirs];
  const manifests = readManifests(dirList, opts.tokenizer);
  const cfg = resolveSettings(opts, manifests, dirList);
  const streams = planStreams(manifests, dirList, cfg);
  const batchesPerEpoch = countBatches(streams, dirList, cfg.worldSize);
  let plan: EpochPlan | null = null;
  const planFor = (epoch: number): EpochPlan => (plan?.epoch === epoch ? plan : (plan = planEpoch(streams, batchesPerEpoch, cfg.seed, epoch)));
  const chunks = openChunkCache(cfg);

  let pos: Position = { epoch: 0, batch: 0 };
  const seek = (p: Position): void => {
    check(Number.isInteger(p.epoch) && p.epoch >= 0 && Number.isInteger(p.batch) && p.batch >= 0 && p.batch <= batchesPerEpoch,
      `data position ${JSON.stringify(p)} is outside this dataset (${batchesPerEpoch} batches per epoch)`);
    pos = positionAt(p.epoch, p.batch, batchesPerEpoch);
  };
  if (opts.position) seek(opts.position);
  const next = async (): Promise<DataBatch> => {
    const p = pos;
    const b = await readBatch(p, planFor(p.epoch), streams, chunks, cfg);
    pos = positionAt(p.epoch, p.batch + 1, batchesPerEpoch);
    return b;
  };

  return {
    manifests,
    batchesPerEpoch,
    position: () => ({ ...pos }),
    seek,
    next,
    stats: () => ({ chunksRead: chunks.chunksRead() }),
    shapes: () => streams.filter((s) => s.batches > 0).map((s) => shapeOf(s, cfg)),
    async *epoch() {
      const e = pos.epoch;
      while (pos.epoch === e) yield await next();
    },
    close: () => chunks.close(),
  };
}

/** Every dir's manifest, refusing a mix that cannot share batches: pretrain with pairs, or two tokenizers. */
function readManifests(dirs: string[], tokenizer: Tokenizer | undefined): Manifest[] {
  check(dirs.length > 0, 'no dataset dir given');
  const manifests = dirs.map(readManifest);
  const pretrain = manifests[0].kind === 'pretrain';
  manifests.forEach((m, i) => {
    check((m.kind === 'pretrain') === pretrain, `${dirs[i]}: a ${m.kind} dataset cannot be read together with ${manifests[0].kind} data`);
    if (tokenizer) checkTokenizer(m, tokenizer, dirs[i]);
    else check(m.tokenizer.fingerprint === manifests[0].tokenizer.fingerprint, `${dirs[i]}: prepared with a different tokenizer than ${dirs[0]}`);
  });
  return manifests;
}

function resolveSettings(opts: ReaderOptions, manifests: Manifest[], dirs: string[]): Settings {
  const kind = manifests[0].kind === 'pretrain' ? 'pretrain' : 'pairs';
  const rank = opts.rank ?? 0;
  const worldSize = opts.worldSize ?? 1;
  check(Number.isInteger(worldSize) && worldSize >= 1, `world size must be a positive integer, got ${worldSize}`);
  check(Number.isInteger(rank) && rank >= 0 && rank < worldSize, `rank must be in [0, ${worldSize}), got ${rank}`);
  const shuffleRatio = opts.shuffleRatio ?? 0;
  check(shuffleRatio >= 0 && shuffleRatio <= 1, `shuffle_ratio must be in [0, 1], got ${shuffleRatio}`);
  if (shuffleRatio > 0) {
    check(!!opts.tokenizer, 'shuffle_ratio > 0 needs the tokenizer (positives are re-tokenized)');
    manifests.forEach((m, i) => check(m.kind === 'pretrain' || m.options.keepText, `${dirs[i]}: prepared without texts; shuffle_ratio needs them (prepare without --no-text)`));
  }
  return { ...opts, kind, rank, worldSize, shuffleRatio, dropLast: opts.dropLast ?? true };
}

/**
 * One stream per (dataset, length bucket) that has rows, with its batch and group size: a batch holds one
 * dataset (FlagEmbedding's same-dataset batches) of one length bucket (so padding stays short).
 */
function planStreams(manifests: Manifest[], dirs: string[], cfg: Settings): Stream[] {
  const streams: Stream[] = [];
  manifests.forEach((m, mi) => {
    for (const d of m.datasets) {
      for (const [bucket, files] of Object.entries(d.buckets)) {
        const chunks = files.flatMap((f) => f.chunks.map((rows, index) => ({ file: path.join(dirs[mi], f.file), index, rows })));
        const rows = chunks.reduce((a, c) => a + c.rows, 0);
        if (rows === 0) continue;
        const batchSize = resolveBatchSize(cfg, d, bucket);
        const groupSize = cfg.kind === 'pairs' ? resolveGroupSize(cfg, m, d, dirs[mi]) : 1;
        streams.push({ id: streams.length, dataset: d, manifest: m, bucket, chunks, rows, batchSize, groupSize, batches: batchCount(rows, batchSize, cfg) });
      }
    }
  });
  return streams;
}

function shapeOf(s: Stream, cfg: Settings): BatchShape {
  const upper = BUCKET_BOUNDS[BUCKETS.indexOf(s.bucket) + 1];
  const cap = (max: number | undefined) => {
    const n = Math.min(upper, max ?? upper);
    return cfg.padToMultipleOf && cfg.padToMultipleOf > 1 ? Math.ceil(n / cfg.padToMultipleOf) * cfg.padToMultipleOf : n;
  };
  const m = s.manifest.maxLengths;
  const pretrain = cfg.kind === 'pretrain';
  return {
    dataset: s.dataset.name, bucket: s.bucket, batchSize: s.batchSize, groupSize: s.groupSize,
    queryLength: pretrain ? 0 : cap(m.query), passageLength: cap(pretrain ? m.max : m.passage),
  };
}

/** Per-device batch size: the dataset's batch_size column, else the option, halved for symmetric types (FlagEmbedding's _get_file_batch_size). */
function resolveBatchSize(cfg: Settings, d: DatasetEntry, bucket: string): number {
  let base: number;
  if (typeof cfg.batchSize === 'number') base = cfg.batchSize;
  else {
    const b = cfg.batchSize[bucket];
    if (b === undefined) throw new UserError(`batch size: no entry for length bucket '${bucket}' (dataset ${d.name}); the table has ${Object.keys(cfg.batchSize).join(', ')}`);
    base = b;
  }
  check(Number.isInteger(base) && base >= 1, `batch size for bucket ${bucket} must be a positive integer, got ${base}`);
  if (d.batchSize !== null) return d.batchSize;
  if (d.type && d.type.includes('symmetric')) return Math.max(1, Math.floor(base / 2));
  return base;
}

/** G: the dataset's train_group_size column, else the option, else 1 for pairs and 8 for finetune data. */
function resolveGroupSize(cfg: Settings, m: Manifest, d: DatasetEntry, dir: string): number {
  const g = d.trainGroupSize ?? cfg.trainGroupSize ?? (m.kind === 'pairs' ? 1 : 8);
  check(Number.isInteger(g) && g >= 1, `train_group_size must be a positive integer, got ${g}`);
  const effective = groupSizeFor(d.type, d.minNeg, g);
  if (effective > 1 && d.minNeg === 0) {
    throw new UserError(`${dir}: dataset ${d.name} has rows without negatives, which cannot fill a group of ${effective}; use train_group_size 1 or add negatives`);
  }
  return g;
}

/** A stream's batches per epoch: its full global batches, and with dropLast off a partial one that gives every rank a row. */
function batchCount(rows: number, batchSize: number, cfg: Settings): number {
  const gbs = batchSize * cfg.worldSize;
  const full = Math.floor(rows / gbs);
  const partial = !cfg.dropLast && Math.floor((rows - full * gbs) / cfg.worldSize) >= 1 ? 1 : 0;
  return full + partial;
}

/** Batches per epoch over all streams; none at all is an error that names the global batch sizes. */
function countBatches(streams: Stream[], dirs: string[], world: number): number {
  const total = streams.reduce((a, s) => a + s.batches, 0);
  if (total === 0) {
    const rows = streams.reduce((a, s) => a + s.rows, 0);
    throw new UserError(`${dirs.join(', ')}: ${rows} rows make no full batch (batch sizes ${[...new Set(streams.map((s) => s.batchSize * world))].join('/')} across all ranks)`);
  }
  return total;
}

/**
 * The order of an epoch: every stream's chunks shuffled, and the streams' batches interleaved in a shuffled
 * order. Like FlagEmbedding's refresh_epoch, but every shuffle has its own seed from (seed, epoch), so batch
 * k of any epoch is found without replaying the ones before it.
 */
function planEpoch(streams: Stream[], batchesPerEpoch: number, seed: number, epoch: number): EpochPlan {
  const chunkOrder: Int32Array[] = [];
  const cumRows: Float64Array[] = [];
  for (const s of streams) {
    const ord = Int32Array.from(s.chunks.keys());
    createRng(deriveSeed(seed, epoch, s.id, SALT_CHUNK_ORDER)).shuffle(ord as unknown as number[]);
    const cum = new Float64Array(ord.length + 1);
    for (let i = 0; i < ord.length; i++) cum[i + 1] = cum[i] + s.chunks[ord[i]].rows;
    chunkOrder.push(ord);
    cumRows.push(cum);
  }
  const order = new Int32Array(batchesPerEpoch);
  let k = 0;
  for (const s of streams) for (let i = 0; i < s.batches; i++) order[k++] = s.id;
  createRng(deriveSeed(seed, epoch, SALT_STREAM_ORDER)).shuffle(order as unknown as number[]);
  const seen = new Int32Array(streams.length);
  const indexInStream = new Int32Array(batchesPerEpoch);
  for (let i = 0; i < batchesPerEpoch; i++) indexInStream[i] = seen[order[i]]++;
  return { epoch, order, indexInStream, chunkOrder, cumRows };
}

/** Batch `batch` of `epoch`, the end of an epoch being the start of the next. */
function positionAt(epoch: number, batch: number, batchesPerEpoch: number): Position {
  return batch >= batchesPerEpoch ? { epoch: epoch + 1, batch: 0 } : { epoch, batch };
}

/**
 * This rank's batch at p: its slice of the global batch, read through the cache, assembled by kind. With
 * several ranks the whole global batch is assembled and sliced, so every rank pads to the global batch's
 * longest sequence and uses its group size and teacher-score presence: the rows are exactly those one
 * process with the global batch would see (dropout masks depend on the padded length).
 */
async function readBatch(p: Position, plan: EpochPlan, streams: Stream[], chunks: ChunkCache, cfg: Settings): Promise<DataBatch> {
  const s = streams[plan.order[p.batch]];
  const [start, count] = sliceOf(s, plan.indexInStream[p.batch], cfg);
  const globalStart = start - cfg.rank * count;
  const total = count * cfg.worldSize;
  const examples = await loadExamples(s, p.epoch, plan, globalStart, total, chunks);
  const base: BatchBase = { dataset: s.dataset.name, bucket: s.bucket, size: total, position: { ...p } };
  const all = cfg.kind === 'pretrain' ? pretrainBatch(s, examples, base, cfg) : pairBatch(s, examples, base, p.epoch, cfg);
  return cfg.worldSize === 1 ? all : rowsOf(all, cfg.rank * count, count);
}

/** Rows [first, first + n) of an assembled batch (a pairs batch's passages and teacher scores follow its queries). */
function rowsOf(b: DataBatch, first: number, n: number): DataBatch {
  if (b.kind === 'pretrain') return { ...b, size: n, inputIds: sliceRows(b.inputIds, first, n) };
  const g = b.groupSize;
  return {
    ...b, size: n, queries: sliceRows(b.queries, first, n), passages: sliceRows(b.passages, first * g, n * g),
    teacherScores: b.teacherScores ? b.teacherScores.slice(first * g, (first + n) * g) : null,
  };
}

function sliceRows(t: TokenBatch, first: number, n: number): TokenBatch {
  const l = t.length;
  return { inputIds: t.inputIds.slice(first * l, (first + n) * l), attentionMask: t.attentionMask.slice(first * l, (first + n) * l), batch: n, length: l };
}

/**
 * This rank's rows of the j-th global batch of s, as [first row in the stream's epoch order, count]: every
 * rank sees the same global batch and takes its own slice (FlagEmbedding's AbsEmbedderSameDatasetTrainDataset
 * .__getitem__); a partial last batch is shared evenly and its remainder left out.
 */
function sliceOf(s: Stream, j: number, cfg: Settings): [number, number] {
  const gbs = s.batchSize * cfg.worldSize;
  const start = j * gbs;
  const avail = Math.min(gbs, s.rows - start);
  const share = avail === gbs ? s.batchSize : Math.floor(avail / cfg.worldSize);
  return [start + cfg.rank * share, share];
}

/** Rows [start, start + count) of stream s in epoch order, their chunks loaded (and pinned while the batch loads). */
async function loadExamples(s: Stream, epoch: number, plan: EpochPlan, start: number, count: number, chunks: ChunkCache): Promise<Example[]> {
  const refs = locateRows(plan.cumRows[s.id], plan.chunkOrder[s.id], start, count);
  const pinned = new Set(refs.map((r) => chunkKey(epoch, s.id, r.chunk)));
  const loaded = new Map<number, LoadedChunk>();
  for (const c of new Set(refs.map((r) => r.chunk))) loaded.set(c, await chunks.load(s, epoch, c, pinned));
  return refs.map((r) => {
    const l = loaded.get(r.chunk)!;
    return { chunk: r.chunk, loaded: l, row: l.perm[r.row] };
  });
}

/** Each of rows [start, start + count) as its chunk (in the shuffled chunk order `ord`) and row in it, before the row shuffle. */
function locateRows(cum: Float64Array, ord: Int32Array, start: number, count: number): { chunk: number; row: number }[] {
  const refs: { chunk: number; row: number }[] = [];
  let ci = upperBound(cum, start) - 1;
  for (let q = start; q < start + count; q++) {
    while (q >= cum[ci + 1]) ci++;
    refs.push({ chunk: ord[ci], row: q - cum[ci] });
  }
  return refs;
}

function pretrainBatch(s: Stream, examples: Example[], base: BatchBase, cfg: Settings): PretrainBatch {
  const seqs = examples.map((x) => x.loaded.ids!.get(x.row));
  return { kind: 'pretrain', ...base, inputIds: padBatch(seqs, s.manifest.tokenizer.padId, cfg.padToMultipleOf) };
}

/**
 * Each query with its G passages (FlagEmbedding's AbsEmbedderSameDatasetTrainDataset._create_batch_data), G
 * set for the whole batch by its first example (_get_train_group_size). An example's draws are seeded by its
 * place in the data, so a batch is the same whatever was read before it.
 */
function pairBatch(s: Stream, examples: Example[], base: BatchBase, epoch: number, cfg: Settings): PairBatch {
  const d = s.dataset;
  const first = examples[0];
  const g = groupSizeFor(d.type, first.loaded.pairs!.neg.count(first.row), s.groupSize);
  const pMax = s.manifest.maxLengths.passage ?? 0;
  const queries: Int32Array[] = [];
  const passages: ArrayLike<number>[] = [];
  let scores: Float32Array | null = new Float32Array(examples.length * g);
  examples.forEach((x, b) => {
    const rng = createRng(deriveSeed(cfg.seed, epoch, s.id, x.chunk, x.row, SALT_EXAMPLE));
    const group = drawGroup(x.loaded.pairs!, x.row, g, pMax, rng, cfg);
    queries.push(group.query);
    passages.push(...group.passages);
    if (scores && group.scores) scores.set(group.scores, b * g);
    else scores = null; // teacher scores only when every example has them
  });
  const padId = s.manifest.tokenizer.padId;
  return {
    kind: 'pairs', ...base, type: d.type, noInBatchNeg: d.noInBatchNeg, groupSize: g,
    queries: padBatch(queries, padId, cfg.padToMultipleOf), passages: padBatch(passages, padId, cfg.padToMultipleOf), teacherScores: scores,
  };
}

/**
 * One row's query and G passages: a positive chosen uniformly (text-shuffled with probability shuffle_ratio,
 * then tokenized again), then G−1 negatives sampled without replacement; teacher scores follow the same
 * indices, or are null when the row has none.
 */
function drawGroup(
  chunk: PairChunk, row: number, g: number, pMax: number, rng: Rng, cfg: Settings,
): { query: Int32Array; passages: ArrayLike<number>[]; scores: number[] | null } {
  const pi = rng.int(chunk.pos.count(row));
  let pos: ArrayLike<number> = chunk.pos.get(row, pi);
  if (cfg.shuffleRatio > 0 && chunk.posText) {
    const shuffled = maybeShuffleText(chunk.posText(row, pi), cfg.shuffleRatio, rng);
    if (shuffled !== null) pos = encodeTruncated(cfg.tokenizer!, shuffled, pMax);
  }
  const negIdx = sampleNegatives(chunk.neg.count(row), g - 1, rng);
  const ps = chunk.posScores(row);
  const ns = chunk.negScores(row);
  return {
    query: chunk.query.get(row),
    passages: [pos, ...negIdx.map((n) => chunk.neg.get(row, n))],
    scores: ps && ns ? [ps[pi], ...negIdx.map((n) => ns[n])] : null,
  };
}

function chunkKey(epoch: number, stream: number, c: number): string {
  return `${epoch}:${stream}:${c}`;
}

/**
 * Decoded chunks, the least recently used dropped first once over the byte budget (cacheBytes, default
 * 24 MiB), except the chunks of the batch being loaded: a batch always has all of its chunks at once.
 */
function openChunkCache(cfg: Settings): ChunkCache {
  const files = openFileCache();
  const cache = new Map<string, LoadedChunk>();
  const budget = cfg.cacheBytes ?? 24 << 20;
  let bytes = 0;
  let chunksRead = 0;
  return {
    async load(s, epoch, c, pinned) {
      const key = chunkKey(epoch, s.id, c);
      const hit = cache.get(key);
      if (hit) {
        cache.delete(key);
        cache.set(key, hit);
        return hit;
      }
      chunksRead++;
      const loaded = decodeChunk(await files.read(s.chunks[c]), s, epoch, c, cfg);
      cache.set(key, loaded);
      bytes += loaded.bytes;
      for (const [k, v] of cache) {
        if (bytes <= budget) break;
        if (pinned.has(k) || k === key) continue;
        cache.delete(k);
        bytes -= v.bytes;
      }
      return loaded;
    },
    chunksRead: () => chunksRead,
    async close() {
      cache.clear();
      await files.close();
    },
  };
}

/** Chunk c of stream s as read, checked against the manifest, with its row order for this epoch. */
function decodeChunk(batch: RecordBatch, s: Stream, epoch: number, c: number, cfg: Settings): LoadedChunk {
  const ref = s.chunks[c];
  if (batch.numRows !== ref.rows) throw new UserError(`${ref.file}: chunk ${ref.index} has ${batch.numRows} rows, the manifest says ${ref.rows}; prepare the data again`);
  const perm = Int32Array.from({ length: ref.rows }, (_, i) => i);
  createRng(deriveSeed(cfg.seed, epoch, s.id, c, SALT_ROW_ORDER)).shuffle(perm as unknown as number[]);
  const pairs = cfg.kind === 'pairs' ? pairChunk(batch) : null;
  return { bytes: batch.data.byteLength, pairs, ids: cfg.kind === 'pretrain' ? pretrainChunk(batch) : null, perm };
}

/** Open Arrow files, the least recently used closed past MAX_OPEN_FILES: an epoch visits many files, a batch few. */
function openFileCache(): { read(ref: ChunkRef): Promise<RecordBatch>; close(): Promise<void> } {
  const readers = new Map<string, Promise<ArrowFileReader>>();
  const open = (file: string): Promise<ArrowFileReader> => {
    let r = readers.get(file);
    if (r) {
      readers.delete(file);
      readers.set(file, r);
      return r;
    }
    r = openArrowReader(file).catch((e) => {
      readers.delete(file);
      throw new UserError(`${file}: cannot read prepared data (${(e as Error).message})`);
    });
    readers.set(file, r);
    if (readers.size > MAX_OPEN_FILES) {
      const [oldFile, old] = readers.entries().next().value as [string, Promise<ArrowFileReader>];
      readers.delete(oldFile);
      void old.then((x) => x.close()).catch(() => undefined);
    }
    return r;
  };
  return {
    read: async (ref) => (await open(ref.file)).readChunk(ref.index),
    async close() {
      const rs = [...readers.values()];
      readers.clear();
      for (const r of rs) await r.then((x) => x.close()).catch(() => undefined);
    },
  };
}

/** First index i with a[i] > x. */
function upperBound(a: Float64Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
