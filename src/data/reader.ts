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
import * as path from 'path';
import { EncodedBatch, padBatch, Tokenizer } from '../model/tokenizer';
import { check, UserError } from '../util/errors';
import { createRng, deriveSeed } from '../util/rng';
import { ArrowFileReader, IdLists, openArrowReader, pairChunk, PairChunk, pretrainChunk } from './arrow';
import { checkTokenizer, DatasetEntry, Manifest, readManifest } from './manifest';
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
  /** Probability of the text-shuffle augmentation of positives (spec §3; needs texts and the tokenizer). */
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
  queries: EncodedBatch;
  /** [B·G, L]: row b·G is query b's positive, the next G−1 rows its negatives. */
  passages: EncodedBatch;
  /** [B·G] teacher scores in passage order, or null when any example has none. */
  teacherScores: Float32Array | null;
  position: Position;
}

export interface PretrainBatch {
  kind: 'pretrain';
  dataset: string;
  bucket: string;
  size: number;
  inputIds: EncodedBatch;
  position: Position;
}

export type Batch = PairBatch | PretrainBatch;

export interface DatasetReader {
  readonly manifests: Manifest[];
  readonly batchesPerEpoch: number;
  /** The position of the next batch (save it with a checkpoint; pass it back as `position` or to seek). */
  position(): Position;
  seek(pos: Position): void;
  /** The next batch; after the last batch of an epoch comes the first of the next. */
  next(): Promise<Batch>;
  /** The remaining batches of the current epoch. */
  epoch(): AsyncGenerator<Batch>;
  /** Record batches read from disk so far (a resumed reader reads only what its batches need). */
  stats(): { chunksRead: number };
  close(): Promise<void>;
}

interface ChunkRef {
  file: string;
  index: number;
  rows: number;
}

interface Stream {
  id: number;
  dataset: DatasetEntry;
  manifest: Manifest;
  dir: string;
  bucket: string;
  chunks: ChunkRef[];
  rows: number;
  batchSize: number;
  groupSize: number;
  batches: number;
}

interface EpochPlan {
  epoch: number;
  order: Int32Array;
  indexInStream: Int32Array;
  chunkOrder: Int32Array[];
  /** cumRows[s][i] = rows before the i-th chunk in stream s's shuffled chunk order. */
  cumRows: Float64Array[];
}

interface LoadedChunk {
  key: string;
  bytes: number;
  pairs: PairChunk | null;
  ids: IdLists | null;
  perm: Int32Array;
}

const SALT_CHUNK_ORDER = 1;
const SALT_STREAM_ORDER = 2;
const SALT_ROW_ORDER = 3;
const SALT_EXAMPLE = 4;

function resolveBatchSize(opts: ReaderOptions, d: DatasetEntry, bucket: string): number {
  let base: number;
  if (typeof opts.batchSize === 'number') base = opts.batchSize;
  else {
    const b = opts.batchSize[bucket];
    if (b === undefined) throw new UserError(`batch size: no entry for length bucket '${bucket}' (dataset ${d.name}); the table has ${Object.keys(opts.batchSize).join(', ')}`);
    base = b;
  }
  check(Number.isInteger(base) && base >= 1, `batch size for bucket ${bucket} must be a positive integer, got ${base}`);
  if (d.batchSize !== null) return d.batchSize;
  if (d.type && d.type.includes('symmetric')) return Math.max(1, Math.floor(base / 2));
  return base;
}

/** Opens prepared dataset dir(s) for reading batches. */
export async function openDataset(dirs: string | string[], opts: ReaderOptions): Promise<DatasetReader> {
  const dirList = Array.isArray(dirs) ? dirs : [dirs];
  check(dirList.length > 0, 'no dataset dir given');
  const manifests = dirList.map(readManifest);
  const kind = manifests[0].kind === 'pretrain' ? 'pretrain' : 'pairs';
  manifests.forEach((m, i) => {
    check((m.kind === 'pretrain') === (kind === 'pretrain'), `${dirList[i]}: a ${m.kind} dataset cannot be read together with ${manifests[0].kind} data`);
    if (opts.tokenizer) checkTokenizer(m, opts.tokenizer, dirList[i]);
    else check(m.tokenizer.fingerprint === manifests[0].tokenizer.fingerprint, `${dirList[i]}: prepared with a different tokenizer than ${dirList[0]}`);
  });
  const rank = opts.rank ?? 0;
  const world = opts.worldSize ?? 1;
  check(Number.isInteger(world) && world >= 1, `world size must be a positive integer, got ${world}`);
  check(Number.isInteger(rank) && rank >= 0 && rank < world, `rank must be in [0, ${world}), got ${rank}`);
  const shuffleRatio = opts.shuffleRatio ?? 0;
  check(shuffleRatio >= 0 && shuffleRatio <= 1, `shuffle_ratio must be in [0, 1], got ${shuffleRatio}`);
  if (shuffleRatio > 0) {
    check(!!opts.tokenizer, 'shuffle_ratio > 0 needs the tokenizer (positives are re-tokenized)');
    manifests.forEach((m, i) => check(m.kind === 'pretrain' || m.options.keepText, `${dirList[i]}: prepared without texts; shuffle_ratio needs them (prepare without --no-text)`));
  }
  const dropLast = opts.dropLast ?? true;
  const padMultiple = opts.padToMultipleOf;
  const seed = opts.seed;

  const streams: Stream[] = [];
  manifests.forEach((m, mi) => {
    for (const d of m.datasets) {
      for (const [bucket, files] of Object.entries(d.buckets)) {
        const chunks: ChunkRef[] = [];
        for (const f of files) f.chunks.forEach((rows, index) => chunks.push({ file: path.join(dirList[mi], f.file), index, rows }));
        const rows = chunks.reduce((a, c) => a + c.rows, 0);
        if (rows === 0) continue;
        const batchSize = resolveBatchSize(opts, d, bucket);
        let groupSize = 1;
        if (kind === 'pairs') {
          groupSize = d.trainGroupSize ?? opts.trainGroupSize ?? (m.kind === 'pairs' ? 1 : 8);
          check(Number.isInteger(groupSize) && groupSize >= 1, `train_group_size must be a positive integer, got ${groupSize}`);
          const effective = groupSizeFor(d.type, d.minNeg, groupSize);
          if (effective > 1 && d.minNeg === 0) {
            throw new UserError(`${dirList[mi]}: dataset ${d.name} has rows without negatives, which cannot fill a group of ${effective}; use train_group_size 1 or add negatives`);
          }
        }
        const gbs = batchSize * world;
        const full = Math.floor(rows / gbs);
        const partial = !dropLast && Math.floor((rows - full * gbs) / world) >= 1 ? 1 : 0;
        streams.push({ id: streams.length, dataset: d, manifest: m, dir: dirList[mi], bucket, chunks, rows, batchSize, groupSize, batches: full + partial });
      }
    }
  });
  const batchesPerEpoch = streams.reduce((a, s) => a + s.batches, 0);
  if (batchesPerEpoch === 0) {
    const rows = streams.reduce((a, s) => a + s.rows, 0);
    throw new UserError(`${dirList.join(', ')}: ${rows} rows make no full batch (batch sizes ${[...new Set(streams.map((s) => s.batchSize * world))].join('/')} across all ranks)`);
  }

  let plan: EpochPlan | null = null;
  const planFor = (epoch: number): EpochPlan => {
    if (plan && plan.epoch === epoch) return plan;
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
    plan = { epoch, order, indexInStream, chunkOrder, cumRows };
    return plan;
  };

  // open files and decoded chunks, both least-recently-used first out
  const readers = new Map<string, Promise<ArrowFileReader>>();
  const MAX_OPEN = 16;
  const fileReader = (file: string): Promise<ArrowFileReader> => {
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
    if (readers.size > MAX_OPEN) {
      const [oldFile, old] = readers.entries().next().value as [string, Promise<ArrowFileReader>];
      readers.delete(oldFile);
      void old.then((x) => x.close()).catch(() => undefined);
    }
    return r;
  };
  const cache = new Map<string, LoadedChunk>();
  let chunksRead = 0;
  let cachedBytes = 0;
  const cacheBudget = opts.cacheBytes ?? 24 << 20;
  const loadChunk = async (s: Stream, epoch: number, c: number, pinned: Set<string>): Promise<LoadedChunk> => {
    const key = `${epoch}:${s.id}:${c}`;
    const hit = cache.get(key);
    if (hit) {
      cache.delete(key);
      cache.set(key, hit);
      return hit;
    }
    const ref = s.chunks[c];
    chunksRead++;
    const batch = await (await fileReader(ref.file)).readChunk(ref.index);
    if (batch.numRows !== ref.rows) throw new UserError(`${ref.file}: chunk ${ref.index} has ${batch.numRows} rows, the manifest says ${ref.rows}; prepare the data again`);
    const perm = Int32Array.from({ length: ref.rows }, (_, i) => i);
    createRng(deriveSeed(seed, epoch, s.id, c, SALT_ROW_ORDER)).shuffle(perm as unknown as number[]);
    const bytes = batch.data.byteLength;
    const loaded: LoadedChunk = { key, bytes, pairs: kind === 'pairs' ? pairChunk(batch) : null, ids: kind === 'pretrain' ? pretrainChunk(batch) : null, perm };
    cache.set(key, loaded);
    cachedBytes += bytes;
    for (const [k, v] of cache) {
      if (cachedBytes <= cacheBudget) break;
      if (pinned.has(k) || k === key) continue;
      cache.delete(k);
      cachedBytes -= v.bytes;
    }
    return loaded;
  };

  let pos: Position = { epoch: 0, batch: 0 };
  const seek = (p: Position): void => {
    check(Number.isInteger(p.epoch) && p.epoch >= 0 && Number.isInteger(p.batch) && p.batch >= 0 && p.batch <= batchesPerEpoch,
      `data position ${JSON.stringify(p)} is outside this dataset (${batchesPerEpoch} batches per epoch)`);
    pos = p.batch === batchesPerEpoch ? { epoch: p.epoch + 1, batch: 0 } : { epoch: p.epoch, batch: p.batch };
  };
  if (opts.position) seek(opts.position);

  /** This rank's rows of batch k: [stream position start, count). */
  const sliceOf = (s: Stream, j: number): [number, number] => {
    const gbs = s.batchSize * world;
    const start = j * gbs;
    const avail = Math.min(gbs, s.rows - start);
    const share = avail === gbs ? s.batchSize : Math.floor(avail / world);
    return [start + rank * share, share];
  };

  const readBatch = async (p: Position): Promise<Batch> => {
    const pl = planFor(p.epoch);
    const s = streams[pl.order[p.batch]];
    const [start, count] = sliceOf(s, pl.indexInStream[p.batch]);
    const cum = pl.cumRows[s.id];
    const ord = pl.chunkOrder[s.id];
    // locate each row: chunk (in shuffled chunk order) and row inside it (through the chunk's permutation)
    const refs: { chunk: number; row: number }[] = [];
    let ci = upperBound(cum, start) - 1;
    for (let q = start; q < start + count; q++) {
      while (q >= cum[ci + 1]) ci++;
      refs.push({ chunk: ord[ci], row: q - cum[ci] });
    }
    const pinned = new Set(refs.map((r) => `${p.epoch}:${s.id}:${r.chunk}`));
    const loaded = new Map<number, LoadedChunk>();
    for (const c of new Set(refs.map((r) => r.chunk))) loaded.set(c, await loadChunk(s, p.epoch, c, pinned));
    const padId = s.manifest.tokenizer.padId;
    const base = { dataset: s.dataset.name, bucket: s.bucket, size: count, position: { ...p } };
    if (kind === 'pretrain') {
      const seqs = refs.map((r) => {
        const ch = loaded.get(r.chunk)!;
        return ch.ids!.get(ch.perm[r.row]);
      });
      return { kind: 'pretrain', ...base, inputIds: padBatch(seqs, padId, padMultiple) };
    }
    const d = s.dataset;
    const first = loaded.get(refs[0].chunk)!;
    const g = groupSizeFor(d.type, first.pairs!.neg.count(first.perm[refs[0].row]), s.groupSize);
    const queries: Int32Array[] = [];
    const passages: ArrayLike<number>[] = [];
    let scores: Float32Array | null = new Float32Array(count * g);
    const pMax = s.manifest.maxLengths.passage ?? 0;
    refs.forEach((r, b) => {
      const ch = loaded.get(r.chunk)!;
      const chunk = ch.pairs!;
      const row = ch.perm[r.row];
      const rng = createRng(deriveSeed(seed, p.epoch, s.id, r.chunk, row, SALT_EXAMPLE));
      queries.push(chunk.query.get(row));
      const pi = rng.int(chunk.pos.count(row));
      let posIds: ArrayLike<number> = chunk.pos.get(row, pi);
      if (shuffleRatio > 0 && chunk.posText) {
        const shuffled = maybeShuffleText(chunk.posText(row, pi), shuffleRatio, rng);
        if (shuffled !== null) posIds = encodeTruncated(opts.tokenizer!, shuffled, pMax);
      }
      passages.push(posIds);
      const negIdx = sampleNegatives(chunk.neg.count(row), g - 1, rng);
      for (const n of negIdx) passages.push(chunk.neg.get(row, n));
      const ps = chunk.posScores(row);
      const ns = chunk.negScores(row);
      if (scores && ps && ns) {
        scores[b * g] = ps[pi];
        negIdx.forEach((n, k) => (scores![b * g + 1 + k] = ns[n]));
      } else scores = null;
    });
    return {
      kind: 'pairs', ...base, type: d.type, noInBatchNeg: d.noInBatchNeg, groupSize: g,
      queries: padBatch(queries, padId, padMultiple), passages: padBatch(passages, padId, padMultiple), teacherScores: scores,
    };
  };

  const next = async (): Promise<Batch> => {
    const p = pos;
    const b = await readBatch(p);
    pos = p.batch + 1 >= batchesPerEpoch ? { epoch: p.epoch + 1, batch: 0 } : { epoch: p.epoch, batch: p.batch + 1 };
    return b;
  };

  return {
    manifests,
    batchesPerEpoch,
    position: () => ({ ...pos }),
    seek,
    next,
    stats: () => ({ chunksRead }),
    async *epoch() {
      const e = pos.epoch;
      while (pos.epoch === e) yield await next();
    },
    async close() {
      cache.clear();
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
