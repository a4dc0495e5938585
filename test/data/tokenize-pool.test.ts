/**
 * The tokenizing pool of `m3 data prepare --workers N`: chunks come back in submission order whoever
 * tokenized them, with the ids one thread gives; a failing consumer or worker stops it with that error;
 * worker threads start only past the first chunk's worth of text, and close() stops them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { encodeTruncated, tokenizeChunk } from '../../src/data/encode';
import { createTokenizePool } from '../../src/data/tokenize-pool';
import { loadTokenizer } from '../../src/model/tokenizer';
import { sharedDir } from '../helpers/shared';
import { BERT_DIR, bertTokenizer, tmpDir } from './helpers';

const words = 'the quick brown fox jumps over the lazy dog while a retrieval model encodes passages'.split(' ');
const text = (i: number) => Array.from({ length: 5 + (i % 40) }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(' ');

test('tokenizeChunk: flat ids and offsets, truncated texts as encodeTruncated gives them, 0 = whole without specials', () => {
  const tok = bertTokenizer();
  const texts = [text(1), text(39), '', text(5)];
  const r = tokenizeChunk(tok, texts, [8, 16, 8, 0]);
  const part = (i: number) => Array.from(r.ids.subarray(r.offsets[i], r.offsets[i + 1]));
  expect(part(0)).toEqual(encodeTruncated(tok, texts[0], 8));
  expect(part(1)).toEqual(encodeTruncated(tok, texts[1], 16));
  expect(part(2)).toEqual([tok.clsId, tok.sepId]);
  expect(part(3)).toEqual(tok.tokenize(texts[3]));
  expect(r.offsets[4]).toBe(r.ids.length);
});

describe.each([2, 3])('%i threads', (threads) => {
  test('chunks are consumed in submission order with the ids one thread gives, worker threads doing some of them', async () => {
    const tok = bertTokenizer();
    const pool = createTokenizePool(tok, threads, { tokenizerDir: BERT_DIR, startAfterChars: 0, awaitWorkers: true });
    const seen: number[] = [];
    try {
      for (let c = 0; c < 60; c++) {
        const texts = Array.from({ length: 1 + (c % 5) }, (_, i) => text(c * 5 + i));
        const lens = texts.map((_, i) => (i % 2 ? 0 : 12));
        const want = tokenizeChunk(tok, texts, lens);
        await pool.submit(texts, lens, (r) => {
          seen.push(c);
          expect(Array.from(r.offsets)).toEqual(Array.from(want.offsets));
          expect(Array.from(r.ids)).toEqual(Array.from(want.ids));
        });
      }
      await pool.drain();
    } finally {
      await pool.close();
    }
    expect(seen).toEqual(Array.from({ length: 60 }, (_, c) => c));
    const s = pool.stats();
    expect(s).toMatchObject({ chunks: 60, workers: threads - 1 });
    expect(s.onWorkers).toBeGreaterThan(0);
  });
});

test('a consumer that throws stops the pool with its error; close() still ends the threads', async () => {
  const tok = bertTokenizer();
  const pool = createTokenizePool(tok, 2, { tokenizerDir: BERT_DIR, startAfterChars: 0, awaitWorkers: true });
  const run = async () => {
    for (let c = 0; c < 20; c++) {
      await pool.submit([text(c)], [16], () => {
        if (c === 7) throw new Error('disk full at chunk 7');
      });
    }
    await pool.drain();
  };
  await expect(run()).rejects.toThrow('disk full at chunk 7');
  await pool.close();
});

test('worker threads start past startAfterChars only, and copy the tokenizer when its dir is not given', async () => {
  const tok = bertTokenizer();
  const small = createTokenizePool(tok, 2, { startAfterChars: 1000 });
  await small.submit([text(1)], [16], () => undefined);
  await small.drain();
  await small.close();
  expect(small.stats()).toEqual({ chunks: 1, onWorkers: 0, workers: 0 });

  const copyDir = path.join(tmpDir(), 'tokenizer');
  const copied = createTokenizePool(tok, 2, { copyDir, startAfterChars: 0, awaitWorkers: true });
  try {
    for (let c = 0; c < 10; c++) await copied.submit([text(c), text(c + 1)], [16, 0], () => undefined);
    await copied.drain();
    expect(fs.readdirSync(copyDir)).toContain('tokenizer.json');
  } finally {
    await copied.close();
  }
  expect(copied.stats().workers).toBe(1);
  expect(copied.stats().onWorkers).toBeGreaterThan(0);
  expect(fs.existsSync(copyDir)).toBe(false);
});

test('a worker whose tokenizer differs from the main thread\'s is an error naming the dir', async () => {
  const t5Dir = sharedDir('data/tokenizers/t5-small');
  const pool = createTokenizePool(loadTokenizer(BERT_DIR), 2, { tokenizerDir: t5Dir, startAfterChars: 0, awaitWorkers: true });
  try {
    await expect(pool.submit([text(1)], [16], () => undefined)).rejects.toThrow(`${t5Dir}: the tokenizer changed while preparing`);
  } finally {
    await pool.close();
  }
});
