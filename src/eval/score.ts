/**
 * Teacher scores from a cross-encoder reranker, as FlagEmbedding's `scripts/add_reranker_score.py` makes them
 * with FlagReranker.compute_score (no `normalize`: raw logits): every (query, pos) and (query, neg) pair of a
 * training JSONL is scored and the file is written back with `pos_scores` / `neg_scores` in the order of
 * `pos` / `neg` (existing scores replaced, every other field kept in its place).
 *
 * Resumable: lines are scored in chunks (pairs sorted by length inside a chunk, so batches pad little) and
 * each finished chunk is appended to `.OUT.score-<key>.partial` beside OUT and synced; a rerun with the same
 * model and max length keeps the lines of that file that still match the input and continues after them
 * (`<key>` hashes the settings, so a rerun with others starts afresh). At the end the file is renamed onto OUT,
 * so OUT is never half-written. One writer per OUT (a lock beside it).
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { readLines } from '../data/lines';
import { describeInvalid, isInvalidRecord, recordOf } from '../data/records';
import { maxInputLength } from '../model/config';
import { FramedPair, framePair, minPairLength, Reranker, rerankerLogits } from '../model/reranker';
import { padBatch } from '../model/tokenizer';
import { UserError } from '../util/errors';
import { ensureWritableDir, faultPoint } from '../util/fsx';
import { Progress } from '../util/progress';
import { tryLock } from '../util/run-lock';

export const DEFAULT_RERANK_MAX_LENGTH = 512;

export interface ScoreOptions {
  /** Tokens per pair, specials included (default 512, capped by the model's positions); the query gets ¾. */
  maxLength?: number;
  /** Pairs per forward pass (default 32). */
  batchSize?: number;
  /** A progress bar on stderr (default true). */
  progress?: boolean;
}

/** max_length capped by the model's positions; too small to hold a ¾ query and a passage token is an error. */
export function rerankMaxLength(r: Reranker, maxLength = DEFAULT_RERANK_MAX_LENGTH): number {
  if (!Number.isInteger(maxLength) || maxLength < 1) throw new UserError(`max length must be a positive integer, got ${maxLength}`);
  const n = Math.min(maxLength, maxInputLength(r.config));
  const min = minPairLength(r);
  if (n < min) throw new UserError(`max length ${n} leaves no room for the passage after a ¾-length query and the special tokens (at least ${min})`);
  return n;
}

function checkBatchSize(b: number): number {
  if (!Number.isInteger(b) || b < 1) throw new UserError(`batch size must be a positive integer, got ${b}`);
  return b;
}

/** Logits of framed pairs, longest first in batches (little padding), returned in input order. */
async function scoreFramed(r: Reranker, framed: readonly FramedPair[], batchSize: number, onBatch?: (pairs: number) => void): Promise<Float32Array> {
  const out = new Float32Array(framed.length);
  const order = framed.map((_, i) => i).sort((a, b) => framed[b].ids.length - framed[a].ids.length || a - b);
  for (let start = 0; start < order.length; start += batchSize) {
    const idx = order.slice(start, start + batchSize);
    const b = padBatch(idx.map((i) => framed[i].ids), r.config.padTokenId);
    const types = r.config.family === 'bert' ? padBatch(idx.map((i) => framed[i].types), 0).inputIds : undefined;
    const t = rerankerLogits(r, b, types);
    const logits = await t.data();
    t.dispose();
    idx.forEach((i, row) => (out[i] = logits[row]));
    onBatch?.(idx.length);
  }
  return out;
}

/**
 * FlagReranker.compute_score(pairs) without `normalize`: one raw logit per [query, passage] pair, the query
 * cut to ¾ of maxLength and the passage truncated so the framed pair fits maxLength.
 */
export async function scorePairs(r: Reranker, pairs: readonly (readonly [string, string])[], opts: ScoreOptions = {}): Promise<number[]> {
  const maxLength = rerankMaxLength(r, opts.maxLength);
  const batchSize = checkBatchSize(opts.batchSize ?? 32);
  const tok = r.tokenizer!;
  const framed = pairs.map(([q, p]) => framePair(r, tok.tokenize(q), tok.tokenize(p), maxLength));
  const bar = opts.progress === false ? null : new Progress('score', framed.length, 'pair');
  let done = 0;
  const logits = await scoreFramed(r, framed, batchSize, (n) => bar?.update((done += n)));
  bar?.done();
  return Array.from(logits);
}

interface Example {
  value: Record<string, unknown>;
  query: string;
  texts: string[];
  /** Where `pos` ends in `texts` (pos first, then neg). */
  posCount: number;
}

/** One input line as a training example; stale teacher scores are not validated (they are replaced). */
function parseExample(text: string | null, where: string): Example {
  if (text === null) throw new UserError(`${where}: line is not valid UTF-8`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${where}: invalid JSON (${(e as Error).message})`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new UserError(`${where}: expected a JSON object`);
  const obj = value as Record<string, unknown>;
  const r = recordOf({ ...obj, pos_scores: undefined, neg_scores: undefined }, 'pairs');
  if (isInvalidRecord(r)) throw new UserError(describeInvalid(where, r));
  return { value: obj, query: r.query, texts: [...r.pos, ...r.neg], posCount: r.pos.length };
}

/** The line written back: scores replace existing ones in place, or follow the other fields. */
function scoredRow(ex: Example, scores: ArrayLike<number>): Record<string, unknown> {
  const all = Array.from(scores);
  const row: Record<string, unknown> = { ...ex.value };
  row.pos_scores = all.slice(0, ex.posCount);
  if ('neg' in ex.value || 'neg_scores' in ex.value) row.neg_scores = all.slice(ex.posCount);
  return row;
}

/** The line without its teacher scores, for comparing a partial output line with its input line. */
const withoutScores = (v: Record<string, unknown>): string => JSON.stringify({ ...v, pos_scores: undefined, neg_scores: undefined });

/** Whether a line of the partial output is the scored form of this input line. */
function matches(partialText: string | null, ex: Example): boolean {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(partialText ?? '');
  } catch {
    return false;
  }
  if (!v || typeof v !== 'object' || withoutScores(v) !== withoutScores(ex.value)) return false;
  const finite = (s: unknown, n: number) => Array.isArray(s) && s.length === n && s.every((x) => typeof x === 'number' && Number.isFinite(x));
  return finite(v.pos_scores, ex.posCount) && (!('neg_scores' in v) || finite(v.neg_scores, ex.texts.length - ex.posCount));
}

/** Settings a partial output depends on: the model (dir, files, config, tokenizer) and the max length. */
function settingsKey(r: Reranker, maxLength: number): string {
  const dir = path.resolve(r.source);
  let files: unknown[] = [];
  try {
    files = fs.readdirSync(dir).sort().map((n) => {
      const st = fs.statSync(path.join(dir, n));
      return st.isFile() ? [n, st.size, st.mtimeMs] : [n];
    });
  } catch {
    /* not a dir we can list (a source named otherwise): the config and tokenizer still key it */
  }
  const h = createHash('sha256').update(JSON.stringify({ dir, files, config: r.config.raw, tokenizer: r.tokenizer!.fingerprint, maxLength }));
  return h.digest('hex').slice(0, 12);
}

export interface ScoreFileStats {
  examples: number;
  pairs: number;
  /** Examples found already scored in a partial output of an interrupted run, and not scored again. */
  resumed: number;
}

/** Pairs per chunk written to the partial output: batches of the same chunk are sorted by length together. */
const chunkPairs = (batchSize: number) => batchSize * 64;

/**
 * Scores every (query, pos) and (query, neg) pair of a training JSONL (plain or .gz) and writes the file
 * with `pos_scores` / `neg_scores` to `output` (see the header for resuming).
 */
export async function scoreTrainingFile(r: Reranker, input: string, output: string, opts: ScoreOptions = {}): Promise<ScoreFileStats> {
  const maxLength = rerankMaxLength(r, opts.maxLength);
  const batchSize = checkBatchSize(opts.batchSize ?? 32);
  if (!fs.existsSync(input) || !fs.statSync(input).isFile()) throw new UserError(`${input}: input file does not exist`);
  if (output.endsWith('.gz')) throw new UserError(`${output}: the output is written uncompressed; name it .jsonl`);
  const dir = path.dirname(path.resolve(output));
  const base = path.basename(output);
  ensureWritableDir(dir);
  if (fs.existsSync(output) && !fs.statSync(output).isFile()) throw new UserError(`${output}: exists and is not a file`);
  const got = tryLock(path.join(dir, `.${base}.m3-lock`), { label: output });
  if (!('lock' in got)) throw new UserError(`${output} is being written by PID ${got.holder.pid} on ${got.holder.host} (${got.holder.command}); wait for it to finish or stop it`);
  try {
    const partial = path.join(dir, `.${base}.score-${settingsKey(r, maxLength)}.partial`);
    // pass 1: validate every line, count pairs, and find how many leading lines the partial output already holds
    const { kept, keptBytes, examples, pairs, pairsKept } = await survey(input, partial);
    if (examples === 0) throw new UserError(`${input}: no examples`);
    for (const n of fs.readdirSync(dir)) {
      if (n.startsWith(`.${base}.score-`) && n.endsWith('.partial') && path.join(dir, n) !== partial) {
        process.stderr.write(`${output}: discarding the partial output of a run with another model or max length (${n})\n`);
        fs.rmSync(path.join(dir, n), { force: true });
      }
    }
    if (fs.existsSync(partial)) {
      fs.truncateSync(partial, keptBytes);
      if (kept > 0) process.stderr.write(`${output}: resuming after ${kept} of ${examples} examples already scored (${path.basename(partial)})\n`);
    }
    // pass 2: score the rest in chunks, appending each to the partial output
    const fd = fs.openSync(partial, 'a');
    try {
      const bar = opts.progress === false ? null : new Progress('score', pairs, 'pair');
      let done = pairsKept;
      let chunk: Example[] = [];
      let chunkSize = 0;
      const flush = async () => {
        const tok = r.tokenizer!;
        const framed: FramedPair[] = [];
        for (const ex of chunk) {
          const q = tok.tokenize(ex.query);
          for (const t of ex.texts) framed.push(framePair(r, q, tok.tokenize(t), maxLength));
        }
        const logits = await scoreFramed(r, framed, batchSize, (n) => bar?.update((done += n)));
        let at = 0;
        const text = chunk.map((ex) => JSON.stringify(scoredRow(ex, logits.subarray(at, (at += ex.texts.length))))).join('\n') + '\n';
        const buf = Buffer.from(text, 'utf8');
        for (let off = 0; off < buf.length;) off += fs.writeSync(fd, buf, off, buf.length - off);
        fs.fsyncSync(fd);
        faultPoint('chunk-written', output);
        chunk = [];
        chunkSize = 0;
      };
      let i = 0;
      for await (const { lineNo, text } of readLines(input).lines) {
        if (i++ < kept) continue;
        const ex = parseExample(text, `${input}:${lineNo}`);
        chunk.push(ex);
        chunkSize += ex.texts.length;
        if (chunkSize >= chunkPairs(batchSize)) await flush();
      }
      if (chunk.length) await flush();
      bar?.done();
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(partial, output);
    return { examples, pairs, resumed: kept };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw new UserError(`${output}: disk full (${code}); the partial output is kept for a rerun`);
    throw e;
  } finally {
    got.lock.release();
  }
}

/**
 * Validates the input (one line naming file:line for the first bad one), counts examples and pairs, and
 * walks the partial output beside it: the leading lines that are this input's lines scored are kept.
 */
async function survey(input: string, partial: string): Promise<{ kept: number; keptBytes: number; examples: number; pairs: number; pairsKept: number }> {
  let previous: AsyncGenerator<{ text: string | null }> | null = null;
  let complete = 0; // lines of the partial file that end in a newline (a killed write may leave half a line)
  if (fs.existsSync(partial)) {
    for await (const chunk of fs.createReadStream(partial, { highWaterMark: 1 << 20 })) {
      for (const b of chunk as Buffer) if (b === 0x0a) complete++;
    }
    previous = readLines(partial).lines;
  }
  let kept = 0;
  let keptBytes = 0;
  let matching = previous !== null;
  let examples = 0;
  let pairs = 0;
  let pairsKept = 0;
  for await (const { lineNo, text } of readLines(input).lines) {
    const ex = parseExample(text, `${input}:${lineNo}`);
    examples++;
    pairs += ex.texts.length;
    if (matching) {
      const next = kept < complete ? await previous!.next() : null;
      if (next && !next.done && matches(next.value.text, ex)) {
        kept++;
        keptBytes += Buffer.byteLength(next.value.text!, 'utf8') + 1;
        pairsKept += ex.texts.length;
      } else {
        matching = false;
      }
    }
  }
  await previous?.return(undefined);
  return { kept, keptBytes, examples, pairs, pairsKept };
}
