/**
 * `m3 data prepare`: JSONL → tokenized Arrow, split by length bucket, plus manifest.json. Everything is
 * written into a temp dir beside the output and renamed into place, so a failure (bad input, full disk)
 * leaves nothing behind. Inputs are streamed: memory does not grow with the input size. The main thread reads,
 * validates and writes; tokenizing, the bulk of the work, runs in chunks on --workers threads (tokenize-pool),
 * handed back in input order, so the output does not depend on the number of workers.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTokenizer, Tokenizer } from '../model/tokenizer';
import { check, UserError } from '../util/errors';
import { writeDirAtomic, writeFileAtomic } from '../util/fsx';
import { Progress } from '../util/progress';
import { waitForLock } from '../util/run-lock';
import { ArrowFileWriter, ChunkBuilder, openArrowWriter, pairChunkBuilder, PairRow, pretrainChunkBuilder } from './arrow';
import { textCost, TokenizedChunk } from './encode';
import { digestFile, discoverInputs, InputGroup, readLines, stem } from './lines';
import {
  ArrowFileEntry, bucketOf, DatasetEntry, FORMAT_NAME, FORMAT_VERSION, Manifest, MANIFEST_FILE, PrepareSettings, readManifest, SourceEntry,
} from './manifest';
import { DataFormat, DATA_FORMATS, describeInvalid, InvalidReason, isInvalidRecord, PairRecord, parseRecord, TextRecord } from './records';
import { createTokenizePool, TokenizePool, WorkStats } from './tokenize-pool';

export { encodeTruncated } from './encode';

export interface PrepareOptions {
  format: DataFormat;
  /** finetune / pairs (FlagEmbedding defaults 32 / 128). */
  queryMaxLen?: number;
  passageMaxLen?: number;
  /** pretrain block length, special tokens included (default 512). */
  maxLen?: number;
  /** Skip invalid rows (and empty files), counting them by reason, instead of stopping at the first. */
  skipInvalid?: boolean;
  /** Within a directory input, files with fewer rows are merged into one dataset (FlagEmbedding's small_threshold; 0 = off). */
  smallThreshold?: number;
  /** A merged dataset with fewer rows is dropped. */
  dropThreshold?: number;
  /** Keep positive texts (needed for shuffle_ratio augmentation). Default true. */
  keepText?: boolean;
  /**
   * Instruction put before queries (BGE-M3 uses none). Rows' `prompt` fields replace it, and are only used
   * when it is set ("" = use the prompts, no default), as in FlagEmbedding.
   */
  queryInstruction?: string | null;
  /** How instruction and query are joined; "{}{}" = plain concatenation. */
  queryInstructionFormat?: string;
  /** Draw a progress bar on stderr (default true; see util/progress for when it is drawn). */
  progress?: boolean;
  /** Token ids per Arrow record batch (default 256Ki ≈ 1 MiB): the unit a reader loads and seeks to. */
  chunkIds?: number;
  /** Threads that tokenize, the main one included (default: os.availableParallelism()); the output is the same for any number. */
  workers?: number;
  /** Where the tokenizer was loaded from: worker threads load it from there (otherwise from a copy `tok.save()` writes into the temp output dir). */
  tokenizerDir?: string;
  /** About how many characters of text one unit of tokenizing work holds (default 64Ki; tests make it small). */
  workChars?: number;
  /** Start the worker threads at once and wait for them (tests: a small input would be done before one is up). */
  awaitWorkers?: boolean;
  /** Told at the end how the tokenizing was shared out (benchmarks, tests). */
  onWorkStats?: (s: WorkStats) => void;
}

/** Rows flush to a new record batch at this many token ids (~1 MiB) or rows. */
const CHUNK_IDS = 256 * 1024;
const CHUNK_ROWS = 8192;
/** Characters of text per chunk of tokenizing work (~20k tokens, tens of ms: the unit handed to a thread). */
const WORK_CHARS = 64 * 1024;

function resolveWorkers(opts: PrepareOptions): number {
  const n = opts.workers ?? os.availableParallelism();
  check(Number.isInteger(n) && n >= 1, `--workers must be an integer ≥ 1, got ${n}`);
  return n;
}

function resolveLengths(opts: PrepareOptions): Manifest['maxLengths'] {
  check(DATA_FORMATS.includes(opts.format), `--format must be one of ${DATA_FORMATS.join(', ')}, got '${opts.format}'`);
  const want = (v: number | undefined, d: number, flag: string, min: number) => {
    const x = v ?? d;
    check(Number.isInteger(x) && x >= min, `${flag} must be an integer ≥ ${min}, got ${x}`);
    return x;
  };
  if (opts.format === 'pretrain') return { max: want(opts.maxLen, 512, '--max-len', 3) };
  return { query: want(opts.queryMaxLen, 32, '--query-max-len', 3), passage: want(opts.passageMaxLen, 128, '--passage-max-len', 3) };
}

function resolveSettings(opts: PrepareOptions): PrepareSettings {
  const s: PrepareSettings = {
    smallThreshold: opts.smallThreshold ?? 0,
    dropThreshold: opts.dropThreshold ?? 0,
    keepText: opts.keepText ?? true,
    queryInstruction: opts.queryInstruction ?? null,
    queryInstructionFormat: opts.queryInstructionFormat ?? '{}{}',
  };
  check(Number.isInteger(s.smallThreshold) && s.smallThreshold >= 0, `--small-threshold must be an integer ≥ 0, got ${s.smallThreshold}`);
  check(Number.isInteger(s.dropThreshold) && s.dropThreshold >= 0, `--drop-threshold must be an integer ≥ 0, got ${s.dropThreshold}`);
  check((s.queryInstructionFormat.match(/\{\}/g) ?? []).length === 2, `--query-instruction-format needs two {} (instruction, query), got '${s.queryInstructionFormat}'`);
  return s;
}

function applyInstruction(format: string, instruction: string, text: string): string {
  let i = 0;
  return format.replace(/\{\}/g, () => (i++ === 0 ? instruction : text));
}

const NO_IN_BATCH_NEG = 'no_in_batch_neg';

interface SourceResult {
  index: number;
  entry: SourceEntry;
  files: Record<string, ArrowFileEntry>;
  first: PairRecord | null;
  hasScores: boolean;
  minNeg: number;
  tokens: number;
}

interface Context {
  tok: Tokenizer;
  pool: TokenizePool;
  workChars: number;
  format: DataFormat;
  lengths: Manifest['maxLengths'];
  settings: PrepareSettings;
  skipInvalid: boolean;
  chunkIds: number;
  tmp: string;
  onBytes: (n: number) => void;
}

/**
 * Tokenizes one input file into one Arrow file per length bucket under tmp/data/. Lines are read and
 * validated here, in order (the first bad line stops it, naming file:line); their texts go to the pool in
 * chunks, and each chunk's ids come back here in order to be bucketed and written.
 */
async function prepareSource(file: string, index: number, ctx: Context): Promise<SourceResult> {
  const { lines, digest } = readLines(file, ctx.onBytes);
  const isPairs = ctx.format !== 'pretrain';
  const withText = isPairs && ctx.settings.keepText;
  const out = openBucketFiles(file, index, ctx, withText);
  const packer = blockPacker(ctx.tok, ctx.lengths.max ?? 0, (row) => out.write(bucketOf(row.length), row, row.length));
  const skipped: Partial<Record<InvalidReason, number>> = {};
  let seen = 0;
  let first: PairRecord | null = null;
  let hasScores = true;
  let minNeg = Infinity;
  // the chunk being filled: texts to tokenize, their max lengths, the pair records they belong to
  let texts: string[] = [];
  let maxLengths: number[] = [];
  let records: PairRecord[] = [];
  let cost = 0;
  const add = (text: string, maxLength: number) => {
    texts.push(text);
    maxLengths.push(maxLength);
    cost += textCost(text, maxLength);
  };
  const submit = async () => {
    if (!texts.length) return;
    const [chunkTexts, chunkLengths, chunkRecords] = [texts, maxLengths, records];
    texts = [];
    maxLengths = [];
    records = [];
    cost = 0;
    await ctx.pool.submit(chunkTexts, chunkLengths, (r) => {
      if (isPairs) writePairRows(chunkRecords, chunkTexts, r, withText, out);
      else for (let i = 0; i < chunkTexts.length; i++) packer.pack(r.ids.subarray(r.offsets[i], r.offsets[i + 1]));
    });
  };
  try {
    for await (const { lineNo, text } of lines) {
      seen++;
      const rec = parseRecord(text, ctx.format);
      if (isInvalidRecord(rec)) {
        if (!ctx.skipInvalid) throw new UserError(describeInvalid(`${file}:${lineNo}`, rec));
        skipped[rec.reason] = (skipped[rec.reason] ?? 0) + 1;
        continue;
      }
      if (!isPairs) add((rec as TextRecord).text, 0);
      else {
        const r = rec as PairRecord;
        if (!first) first = r;
        if (r.posScores === null) hasScores = false;
        minNeg = Math.min(minNeg, r.neg.length);
        pairTexts(r, ctx, add);
        records.push(r);
      }
      if (cost >= ctx.workChars) await submit();
    }
    await submit();
    await ctx.pool.drain();
    if (!isPairs) packer.flush();
    if (seen === 0) {
      if (!ctx.skipInvalid) throw new UserError(`${file}:1: empty file (no JSON lines)`);
      skipped.empty_file = (skipped.empty_file ?? 0) + 1;
    }
  } finally {
    await out.close();
  }
  const { size, sha256 } = digest();
  const { files, buckets, rows, tokens } = out.summary();
  return {
    index,
    entry: { path: path.resolve(file), size, sha256, rows, skipped, buckets },
    files,
    first,
    hasScores: hasScores && rows > 0,
    minNeg: minNeg === Infinity ? 0 : minNeg,
    tokens,
  };
}

/**
 * A pair record's texts to tokenize, in order: the query, its positives, its negatives. The query
 * instruction follows FlagEmbedding: a row's `prompt` replaces it, and is used only when an instruction is
 * set; symmetric_sts / symmetric_clustering passages are the same kind of text as queries and get it too.
 */
function pairTexts(r: PairRecord, ctx: Context, add: (text: string, maxLength: number) => void): void {
  const { queryInstruction, queryInstructionFormat } = ctx.settings;
  const instruction = queryInstruction === null ? null : r.prompt ?? queryInstruction;
  const withInstr = (t: string) => (instruction === null ? t : applyInstruction(queryInstructionFormat, instruction, t));
  const symmetricPassages = r.type === 'symmetric_sts' || r.type === 'symmetric_clustering';
  const passage = ctx.lengths.passage ?? 0;
  add(withInstr(r.query), ctx.lengths.query ?? 0);
  for (const p of r.pos) add(symmetricPassages ? withInstr(p) : p, passage);
  for (const p of r.neg) add(symmetricPassages ? withInstr(p) : p, passage);
}

/** Writes a chunk's pair rows from its ids (texts: what pairTexts gave, in the same order), each to its length bucket. */
function writePairRows(records: PairRecord[], texts: string[], r: TokenizedChunk, withText: boolean, out: { write(bucket: string, row: unknown, nIds: number): void }): void {
  let k = 0;
  const next = () => r.ids.subarray(r.offsets[k], r.offsets[++k]);
  for (const rec of records) {
    const first = k;
    const query = next();
    const pos = rec.pos.map(next);
    const neg = rec.neg.map(next);
    let longest = 0;
    for (let i = first; i < k; i++) longest = Math.max(longest, r.offsets[i + 1] - r.offsets[i]);
    const row: PairRow = {
      query, pos, neg, posScores: rec.posScores, negScores: rec.negScores, posText: withText ? texts.slice(first + 1, first + 1 + pos.length) : undefined,
    };
    out.write(bucketOf(longest), row, r.offsets[k] - r.offsets[first]);
  }
}

/**
 * Pretrain packing (RetroMAE's preprocessing packs sentences the same way): texts' tokens are cut into blocks
 * of maxLen minus the special tokens, short texts and tails share blocks, every block is [CLS] … [SEP].
 */
function blockPacker(tok: Tokenizer, maxLen: number, write: (row: Int32Array) => void): { pack(ids: Int32Array): void; flush(): void } {
  const nSpecial = (tok.clsId >= 0 ? 1 : 0) + (tok.sepId >= 0 ? 1 : 0);
  const block = maxLen - nSpecial;
  let pending: number[] = [];
  const writeBlock = (ids: ArrayLike<number>) => {
    const row = new Int32Array(ids.length + nSpecial);
    let k = 0;
    if (tok.clsId >= 0) row[k++] = tok.clsId;
    row.set(ids as never, k);
    k += ids.length;
    if (tok.sepId >= 0) row[k++] = tok.sepId;
    write(row);
  };
  return {
    pack(ids) {
      if (ids.length === 0) return;
      if (pending.length + ids.length <= block) {
        for (let i = 0; i < ids.length; i++) pending.push(ids[i]);
        return;
      }
      if (pending.length) writeBlock(pending);
      pending = [];
      let s = 0;
      for (; ids.length - s > block; s += block) writeBlock(ids.subarray(s, s + block));
      pending = Array.from(ids.subarray(s));
    },
    flush() {
      if (pending.length) writeBlock(pending);
    },
  };
}

/**
 * A source's rows, one Arrow file per length bucket (created at the bucket's first row), cut into chunks of
 * about ctx.chunkIds token ids: the unit a reader loads and seeks to.
 */
function openBucketFiles(file: string, index: number, ctx: Context, withText: boolean) {
  const newChunk = () => (ctx.format !== 'pretrain' ? pairChunkBuilder(withText) : pretrainChunkBuilder()) as ChunkBuilder<never>;
  const slots = new Map<string, { w: ArrowFileWriter; b: ChunkBuilder<never>; entry: ArrowFileEntry }>();
  let tokens = 0;
  return {
    write(bucket: string, row: unknown, nIds: number): void {
      let slot = slots.get(bucket);
      if (!slot) {
        const rel = `data/${String(index).padStart(4, '0')}-${safeName(stem(file))}_len-${bucket}.arrow`;
        const w = openArrowWriter(path.join(ctx.tmp, rel));
        slot = { w, b: newChunk(), entry: { file: rel, source: index, rows: 0, chunks: w.chunks } };
        slots.set(bucket, slot);
      }
      slot.b.append(row as never);
      slot.entry.rows++;
      tokens += nIds;
      if (slot.b.ids >= ctx.chunkIds || slot.b.rows >= CHUNK_ROWS) {
        slot.w.write(slot.b.finish());
        slot.b = newChunk();
      }
    },
    /** Writes every bucket's last, partial chunk and closes the files (also after a failure: no handle left open). */
    async close(): Promise<void> {
      for (const slot of slots.values()) {
        if (slot.b.rows) slot.w.write(slot.b.finish());
        await slot.w.close();
      }
    },
    summary(): { files: Record<string, ArrowFileEntry>; buckets: Record<string, number>; rows: number; tokens: number } {
      const files: Record<string, ArrowFileEntry> = {};
      const buckets: Record<string, number> = {};
      let rows = 0;
      for (const [bucket, slot] of slots) {
        files[bucket] = slot.entry;
        buckets[bucket] = slot.entry.rows;
        rows += slot.entry.rows;
      }
      return { files, buckets, rows, tokens };
    },
  };
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80) || 'data';
}

function hasSuffixFlag(name: string): boolean {
  return name.endsWith(NO_IN_BATCH_NEG);
}

/**
 * Turns per-file results into datasets as FlagEmbedding's AbsEmbedderSameDatasetTrainDataset.__init__ does: a
 * file is a dataset; a directory's files under small_threshold rows are merged into one (batch size: the
 * smallest of theirs), dropped if it has under drop_threshold rows; a small standalone file is skipped.
 */
function assignDatasets(groups: InputGroup[], results: SourceResult[][], settings: PrepareSettings, tmp: string, log: (s: string) => void): DatasetEntry[] {
  const datasets: DatasetEntry[] = [];
  const names = new Set<string>();
  const uniqueName = (n: string) => {
    let name = n;
    for (let i = 2; names.has(name); i++) name = `${n}#${i}`;
    names.add(name);
    return name;
  };
  const makeDataset = (name: string, members: SourceResult[], noInBatchNeg: boolean): DatasetEntry => {
    const buckets: Record<string, ArrowFileEntry[]> = {};
    for (const m of members) for (const [b, f] of Object.entries(m.files)) (buckets[b] ??= []).push(f);
    const firsts = members.map((m) => m.first).filter((f): f is PairRecord => !!f);
    const sizes = firsts.map((f) => f.batchSize).filter((b): b is number => b !== null);
    return {
      name: uniqueName(name),
      sources: members.map((m) => m.index),
      type: firsts[0]?.type ?? null,
      noInBatchNeg,
      batchSize: sizes.length ? Math.min(...sizes) : null,
      trainGroupSize: firsts[0]?.trainGroupSize ?? null,
      hasScores: members.every((m) => m.hasScores),
      minNeg: Math.min(...members.map((m) => m.minNeg)),
      rows: members.reduce((a, m) => a + m.entry.rows, 0),
      buckets,
    };
  };
  const drop = (r: SourceResult, why: string) => {
    for (const f of Object.values(r.files)) fs.rmSync(path.join(tmp, f.file), { force: true });
    log(`${r.entry.path}: ${why}`);
  };
  groups.forEach((g, gi) => {
    const rs = results[gi];
    const dirName = path.basename(path.resolve(g.isDir ? g.input : path.dirname(g.input)));
    const small: SourceResult[] = [];
    for (const r of rs) {
      if (r.entry.rows === 0) continue;
      const fileStem = stem(r.entry.path);
      const flag = hasSuffixFlag(dirName) || hasSuffixFlag(fileStem);
      if (settings.smallThreshold > 0 && r.entry.rows < settings.smallThreshold) {
        if (g.isDir) small.push(r);
        else drop(r, `${r.entry.rows} rows < small_threshold ${settings.smallThreshold}: skipped`);
        continue;
      }
      datasets.push(makeDataset(`${dirName}/${fileStem}`, [r], flag));
    }
    if (small.length) {
      const rows = small.reduce((a, r) => a + r.entry.rows, 0);
      if (rows < settings.dropThreshold) small.forEach((r) => drop(r, `merged small files have ${rows} rows < drop_threshold ${settings.dropThreshold}: dropped`));
      else datasets.push(makeDataset(`${dirName}/small-merged`, small, hasSuffixFlag(dirName)));
    }
  });
  return datasets;
}

/** Prepares `inputs` into `output` (replaced atomically) and returns the manifest written there. */
export async function prepareDataset(inputs: string[], tok: Tokenizer, output: string, opts: PrepareOptions): Promise<Manifest> {
  const lengths = resolveLengths(opts);
  const settings = resolveSettings(opts);
  const workers = resolveWorkers(opts);
  const groups = discoverInputs(inputs);
  const allFiles = groups.flatMap((g) => g.files);
  const totalBytes = allFiles.reduce((a, f) => a + fs.statSync(f).size, 0);
  const progress = opts.progress === false ? null : new Progress('prepare', Math.ceil(totalBytes / 1024), 'KiB');
  let bytes = 0;
  const log = (s: string) => process.stderr.write(`m3 data prepare: ${s}\n`);
  let manifest: Manifest | null = null;
  const workChars = opts.workChars ?? WORK_CHARS;
  check(Number.isInteger(workChars) && workChars >= 1, `workChars must be an integer ≥ 1, got ${workChars}`);
  let work: WorkStats | null = null;
  const fill = async (tmp: string) => {
    fs.mkdirSync(path.join(tmp, 'data'));
    // threads pay off from the second chunk of work on; a tokenizer copy for them goes in the temp dir, gone before the rename
    const pool = createTokenizePool(tok, workers, {
      tokenizerDir: opts.tokenizerDir, copyDir: path.join(tmp, '.tokenizer'), startAfterChars: workChars, awaitWorkers: opts.awaitWorkers,
    });
    const ctx: Context = {
      tok, pool, workChars, format: opts.format, lengths, settings, skipInvalid: !!opts.skipInvalid, chunkIds: opts.chunkIds ?? CHUNK_IDS, tmp,
      onBytes: (n) => {
        bytes += n;
        progress?.update(Math.floor(bytes / 1024));
      },
    };
    const results: SourceResult[][] = [];
    try {
      let index = 0;
      for (const g of groups) {
        const rs: SourceResult[] = [];
        for (const f of g.files) rs.push(await prepareSource(f, index++, ctx));
        results.push(rs);
      }
    } finally {
      await pool.close();
      work = pool.stats();
    }
    const flat = results.flat();
    const datasets = assignDatasets(groups, results, settings, tmp, log);
    const skipped: Partial<Record<InvalidReason, number>> = {};
    for (const r of flat) for (const [k, v] of Object.entries(r.entry.skipped)) skipped[k as InvalidReason] = (skipped[k as InvalidReason] ?? 0) + (v ?? 0);
    const rows = datasets.reduce((a, d) => a + d.rows, 0);
    if (rows === 0) throw new UserError(`${inputs.join(', ')}: no rows to write${Object.keys(skipped).length ? ` (all skipped: ${formatCounts(skipped)})` : ''}`);
    manifest = {
      format: FORMAT_NAME,
      formatVersion: FORMAT_VERSION,
      kind: opts.format,
      createdAt: new Date().toISOString(),
      rows,
      tokenizer: { fingerprint: tok.fingerprint, vocabSize: tok.vocabSize, clsId: tok.clsId, sepId: tok.sepId, padId: tok.padId },
      maxLengths: lengths,
      options: settings,
      sources: flat.map((r) => r.entry),
      datasets,
      skipped,
      tokens: flat.reduce((a, r) => a + r.tokens, 0),
    };
    writeFileAtomic(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  };
  await writeDirAtomic(output, fill);
  opts.onWorkStats?.(work!);
  progress?.update(Math.ceil(totalBytes / 1024));
  progress?.done(`${manifest!.rows} rows`);
  if (Object.keys(manifest!.skipped).length) log(`skipped invalid input: ${formatCounts(manifest!.skipped)}`);
  return manifest!;
}

export function formatCounts(c: Partial<Record<string, number>>): string {
  return Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ');
}

/** How long `prepareOrReuse` waits for another process preparing the same cache entry. */
const PREPARE_WAIT_MS = 30 * 60_000;

/**
 * For stage configs that point at raw JSONL: prepares into `cacheDir`, or reuses what is there when its
 * manifest has the same sources (by content hash and name), tokenizer fingerprint, max lengths and settings.
 * Two processes wanting the same entry at once prepare it once: the second waits on the entry's lock
 * (`.<entry>.lock` beside it, see util/run-lock), then reuses what the first wrote.
 */
export async function prepareOrReuse(
  inputs: string[], tokenizerDir: string, opts: PrepareOptions, cacheDir: string,
): Promise<{ dir: string; manifest: Manifest; reused: boolean }> {
  const tok = loadTokenizer(tokenizerDir);
  const lengths = resolveLengths(opts);
  const settings = resolveSettings(opts);
  resolveWorkers(opts);
  const groups = discoverInputs(inputs);
  const sources: { name: string; sha256: string }[] = [];
  for (const g of groups) {
    for (const f of g.files) sources.push({ name: sourceName(g, f), sha256: (await digestFile(f)).sha256 });
  }
  const key = createHash('sha256')
    .update(JSON.stringify({ v: FORMAT_VERSION, format: opts.format, fp: tok.fingerprint, lengths, settings, skip: !!opts.skipInvalid, sources }))
    .digest('hex');
  const dir = path.join(cacheDir, `${opts.format}-${key.slice(0, 16)}`);
  const reusable = (): Manifest | null => {
    if (!fs.existsSync(path.join(dir, MANIFEST_FILE))) return null;
    try {
      const m = readManifest(dir);
      const same =
        m.kind === opts.format &&
        m.tokenizer.fingerprint === tok.fingerprint &&
        JSON.stringify(m.maxLengths) === JSON.stringify(lengths) &&
        JSON.stringify(m.options) === JSON.stringify(settings) &&
        m.sources.length === sources.length &&
        m.sources.every((s, i) => s.sha256 === sources[i].sha256);
      return same ? m : null;
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      return null;
    }
  };
  const found = reusable();
  if (found) return { dir, manifest: found, reused: true };
  // one process prepares an entry; another one wanting it at the same time waits, then reuses it
  const lock = await waitForLock(path.join(cacheDir, `.${path.basename(dir)}.lock`), {
    label: `data: ${dir}`, what: 'data preparation', timeoutMs: PREPARE_WAIT_MS,
    waiting: (h) => `data: waiting for PID ${h.pid}${h.host === os.hostname() ? '' : ` on ${h.host}`}, which is preparing ${dir}`,
  });
  try {
    const ready = reusable();
    if (ready) return { dir, manifest: ready, reused: true };
    const manifest = await prepareDataset(inputs, tok, dir, { tokenizerDir, ...opts });
    return { dir, manifest, reused: false };
  } finally {
    lock.release();
  }
}

function sourceName(g: InputGroup, f: string): string {
  const dir = path.basename(path.resolve(g.isDir ? g.input : path.dirname(g.input)));
  return `${g.isDir ? 'dir' : 'file'}:${dir}/${path.basename(f)}`;
}
