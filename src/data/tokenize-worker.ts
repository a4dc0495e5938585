/**
 * A worker thread of `m3 data prepare` (started by tokenize-pool): loads the tokenizer from the dir it is
 * given, says which one it got (its fingerprint, which the main thread checks), then tokenizes each chunk it
 * is sent and posts the ids back as transferred buffers. It reads and writes no files: parsing, ordering
 * and writing stay on the main thread.
 */
import { parentPort, workerData } from 'worker_threads';
import { loadTokenizer, Tokenizer } from '../model/tokenizer';
import { tokenizeChunk } from './encode';

export interface WorkerInit {
  tokenizerDir: string;
}

export interface ChunkRequest {
  id: number;
  texts: string[];
  maxLengths: Int32Array;
}

export type WorkerReply =
  | { type: 'ready'; fingerprint: string }
  | { type: 'failed'; message: string }
  | { type: 'done'; id: number; ids: Int32Array; offsets: Int32Array }
  | { type: 'error'; id: number; message: string; stack: string };

function serve(): void {
  const port = parentPort!;
  const post = (m: WorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
  let tok: Tokenizer;
  try {
    tok = loadTokenizer((workerData as WorkerInit).tokenizerDir);
  } catch (e) {
    post({ type: 'failed', message: (e as Error).message });
    return;
  }
  port.on('message', (req: ChunkRequest) => {
    try {
      const { ids, offsets } = tokenizeChunk(tok, req.texts, req.maxLengths);
      post({ type: 'done', id: req.id, ids, offsets }, [ids.buffer as ArrayBuffer, offsets.buffer as ArrayBuffer]);
    } catch (e) {
      post({ type: 'error', id: req.id, message: (e as Error).message, stack: String((e as Error).stack) });
    }
  });
  post({ type: 'ready', fingerprint: tok.fingerprint });
}

if (parentPort && workerData && typeof (workerData as WorkerInit).tokenizerDir === 'string') serve();
