/**
 * Tokenizing in parallel for `m3 data prepare --workers N`: N threads tokenize chunks of texts — the main
 * thread and N − 1 worker threads (tokenize-worker.ts) — and every chunk's result is handed to its
 * callback on the main thread in the order the chunks were submitted, so what gets written (row order,
 * buckets, packing) is exactly what one thread writes.
 *
 * Why the main thread tokenizes too: it has to read, parse and write anyway (a few per cent of the work),
 * and one thread fewer is one V8 heap and one tokenizer fewer in memory. A chunk goes to a worker with
 * room (DEPTH chunks queued each, so a worker never waits while the main thread is busy with a chunk of
 * its own); when every worker is full, or none is up yet, the main thread tokenizes it. Worker threads
 * start once the chunks submitted hold more than `startAfterChars` characters (small inputs never pay for
 * them) and load the tokenizer from its dir, or from a copy `tok.save()` writes (removed by close()); a
 * worker whose tokenizer has another fingerprint is an error. Memory stays bounded: at most DEPTH chunks
 * per worker thread plus two are submitted and not yet handed over.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import type { Tokenizer } from '../model/tokenizer';
import { UserError } from '../util/errors';
import { TokenizedChunk, tokenizeChunk } from './encode';
import type { ChunkRequest, WorkerInit, WorkerReply } from './tokenize-worker';

/** Chunks queued per worker thread. */
const DEPTH = 2;

export interface TokenizePool {
  /**
   * Tokenizes texts[i] to maxLengths[i] (0: whole, no specials); `consume` gets the result once every
   * earlier chunk's `consume` has run. Resolves when the next chunk may be submitted; rejects with the
   * error of a `consume` or of a worker.
   */
  submit(texts: string[], maxLengths: number[], consume: (r: TokenizedChunk) => void): Promise<void>;
  /** Waits until every submitted chunk has been consumed. */
  drain(): Promise<void>;
  /** Stops the worker threads (and removes the tokenizer copy); safe to call after a failure. */
  close(): Promise<void>;
  stats(): WorkStats;
}

export interface WorkStats {
  /** Chunks tokenized in all, and by worker threads. */
  chunks: number;
  onWorkers: number;
  /** Worker threads started. */
  workers: number;
}

interface Pending {
  consume: (r: TokenizedChunk) => void;
  result: TokenizedChunk | null;
  error: Error | null;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  inFlight: number;
}

/** How to start a worker: the compiled .js beside this file (dist/), or from source through swc's require hook. */
function workerEntry(): { code: string; evalCode: boolean } {
  const js = path.join(__dirname, 'tokenize-worker.js');
  if (path.extname(__filename) === '.js' && fs.existsSync(js)) return { code: js, evalCode: false };
  const register = path.resolve(__dirname, '../../bin/register.js');
  const ts = path.join(__dirname, 'tokenize-worker.ts');
  return { code: `require(${JSON.stringify(register)});\nrequire(${JSON.stringify(ts)});\n`, evalCode: true };
}

export interface PoolOptions {
  /** Where `tok` was loaded from, if known. */
  tokenizerDir?: string;
  /** Otherwise workers load a copy written here (prepare: inside its temp output dir, so a crash leaves none behind). */
  copyDir?: string;
  /** Worker threads start once the chunks submitted hold more characters than this. */
  startAfterChars: number;
  /** Start the worker threads at the first chunk and wait until they are up (tests: small inputs would end before). */
  awaitWorkers?: boolean;
}

/** `threads` tokenizing threads in all, the main one included. */
export function createTokenizePool(tok: Tokenizer, threads: number, opts: PoolOptions): TokenizePool {
  const { tokenizerDir, startAfterChars } = opts;
  const queue: Pending[] = [];
  const inWorker = new Map<number, { pending: Pending; slot: Slot }>();
  const slots: Slot[] = [];
  let nextId = 0;
  let submitted = 0;
  let chars = 0;
  let onWorkers = 0;
  let started = false;
  let workersStarted = 0;
  let closing = false;
  let copied: string | null = null;
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  const nudge = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const fail = (e: Error) => {
    failure ??= e;
    nudge();
  };
  const waitForNews = () => new Promise<void>((resolve) => (wake = resolve));

  const onReply = (slot: Slot, m: WorkerReply) => {
    if (m.type === 'ready') {
      if (m.fingerprint !== tok.fingerprint) {
        fail(new UserError(`${tokenizerDir ?? 'tokenizer'}: the tokenizer changed while preparing (fingerprint ${tok.fingerprint.slice(0, 12)}… in the main thread, ${m.fingerprint.slice(0, 12)}… in a worker)`));
        return;
      }
      slot.ready = true;
    } else if (m.type === 'failed') {
      fail(new UserError(`tokenizer worker: ${m.message}`));
    } else {
      const job = inWorker.get(m.id);
      if (!job) return;
      inWorker.delete(m.id);
      job.slot.inFlight--;
      if (m.type === 'done') job.pending.result = { ids: m.ids, offsets: m.offsets };
      else {
        const e = new Error(`tokenizer worker: ${m.message}`);
        e.stack = m.stack;
        job.pending.error = e;
      }
    }
    nudge();
  };

  const start = () => {
    started = true;
    let dir = tokenizerDir;
    if (!dir) {
      copied = opts.copyDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'm3-tokenizer-'));
      tok.save(copied);
      dir = copied;
    }
    const { code, evalCode } = workerEntry();
    const init: WorkerInit = { tokenizerDir: dir };
    for (let i = 0; i < threads - 1; i++) {
      const worker = new Worker(code, { eval: evalCode, workerData: init });
      const slot: Slot = { worker, ready: false, inFlight: 0 };
      worker.on('message', (m: WorkerReply) => onReply(slot, m));
      worker.on('error', (e) => fail(new Error(`tokenizer worker: ${e.message}`)));
      worker.on('exit', (c) => {
        if (!closing) fail(new Error(`tokenizer worker exited (code ${c})`));
      });
      slots.push(slot);
      workersStarted++;
    }
  };

  /** A ready worker with room, the least busy first; null: the main thread takes the chunk. */
  const pick = (): Slot | null => {
    let best: Slot | null = null;
    for (const s of slots) if (s.ready && s.inFlight < DEPTH && (!best || s.inFlight < best.inFlight)) best = s;
    return best;
  };

  const handOver = () => {
    while (queue.length && (queue[0].result || queue[0].error)) {
      const p = queue.shift()!;
      if (p.error) throw p.error;
      p.consume(p.result!);
    }
  };

  /** Consumes in order until at most `keep` chunks are outstanding. */
  const settle = async (keep: number) => {
    for (;;) {
      if (failure) throw failure;
      handOver();
      if (queue.length <= keep) return;
      await waitForNews();
    }
  };

  /** Chunks submitted and not yet handed over, at most (the reorder buffer's bound). */
  const queued = (threads - 1) * DEPTH + 2;

  return {
    async submit(texts, maxLengths, consume) {
      if (failure) throw failure;
      const pending: Pending = { consume, result: null, error: null };
      queue.push(pending);
      submitted++;
      for (const t of texts) chars += t.length;
      if (!started && threads > 1 && (chars > startAfterChars || opts.awaitWorkers)) {
        start();
        while (opts.awaitWorkers && !failure && slots.some((w) => !w.ready)) await waitForNews();
      }
      const slot = pick();
      if (slot) {
        const id = nextId++;
        inWorker.set(id, { pending, slot });
        slot.inFlight++;
        onWorkers++;
        const req: ChunkRequest = { id, texts, maxLengths: Int32Array.from(maxLengths) };
        slot.worker.postMessage(req);
      } else {
        pending.result = tokenizeChunk(tok, texts, maxLengths);
      }
      // let the workers' replies in (they arrive as events, which a busy main thread would not see)
      if (started) await new Promise<void>((resolve) => setImmediate(resolve));
      await settle(queued - 1);
    },
    async drain() {
      await settle(0);
    },
    async close() {
      closing = true;
      await Promise.all(slots.map((s) => s.worker.terminate()));
      slots.length = 0;
      if (copied) fs.rmSync(copied, { recursive: true, force: true });
      copied = null;
    },
    stats: () => ({ chunks: submitted, onWorkers, workers: workersStarted }),
  };
}
