import * as path from 'path';
import { prepareDataset } from '../../src/data/prepare';
import { DataBatch, openDataset, PairBatch, ReaderOptions } from '../../src/data/reader';
import { groupSizeFor, maybeShuffleText, sampleNegatives } from '../../src/data/sampling';
import { createRng } from '../../src/util/rng';
import { bertTokenizer, rowsOf, tmpDir, writeJsonl } from './helpers';

const WORDS = 'alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud forest'.split(' ');
function sentence(rng: ReturnType<typeof createRng>, n: number): string {
  return Array.from({ length: n }, () => WORDS[rng.int(WORDS.length)]).join(' ');
}

/** Two files, 90 + 60 rows, teacher scores in the first; tiny chunks so every stream has many. */
async function multiChunkDataset(): Promise<string> {
  const dir = tmpDir();
  const rng = createRng(11);
  const rows = (n: number, scored: boolean, tag: string) => Array.from({ length: n }, (_, i) => {
    const neg = Array.from({ length: 2 + (i % 5) }, () => sentence(rng, 3 + rng.int(20)));
    const pos = [sentence(rng, 30 + rng.int(20)), sentence(rng, 5)];
    return { query: `${tag} ${i} ${sentence(rng, 4)}`, pos, neg, ...(scored ? { pos_scores: pos.map(() => rng.next()), neg_scores: neg.map(() => rng.next()) } : {}) };
  });
  writeJsonl(path.join(dir, 'in', 'a.jsonl'), rows(90, true, 'a'));
  writeJsonl(path.join(dir, 'in', 'b.jsonl'), rows(60, false, 'b'));
  const out = path.join(dir, 'out');
  const m = await prepareDataset([path.join(dir, 'in')], bertTokenizer(), out, { format: 'finetune', passageMaxLen: 48, chunkIds: 800, progress: false });
  expect(m.datasets.map((d) => d.buckets['0-500'][0].chunks.length).every((n) => n >= 6)).toBe(true);
  return out;
}

function snapshot(b: DataBatch): unknown {
  const p = b as PairBatch;
  return {
    dataset: p.dataset, bucket: p.bucket, position: p.position, g: p.groupSize,
    q: Array.from(p.queries.inputIds), qm: Array.from(p.queries.attentionMask), ql: p.queries.length,
    p: Array.from(p.passages.inputIds), pl: p.passages.length, s: p.teacherScores ? Array.from(p.teacherScores) : null,
  };
}

async function readN(dir: string, opts: ReaderOptions, n: number): Promise<{ batches: unknown[]; chunksAfterFirst: number }> {
  const r = await openDataset(dir, opts);
  const batches = [snapshot(await r.next())];
  const chunksAfterFirst = r.stats().chunksRead;
  for (let i = 1; i < n; i++) batches.push(snapshot(await r.next()));
  await r.close();
  return { batches, chunksAfterFirst };
}

describe('reader', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await multiChunkDataset();
  });
  const base: ReaderOptions = { seed: 5, batchSize: 4, trainGroupSize: 4, shuffleRatio: 0.3, tokenizer: bertTokenizer(), cacheBytes: 4096 };

  test('resuming at a saved position gives exactly the batches of an uninterrupted reader, reading only what they need', async () => {
    const r = await openDataset(dir, base);
    const per = r.batchesPerEpoch;
    expect(per).toBe(Math.floor(90 / 4) + Math.floor(60 / 4));
    const all: unknown[] = [];
    for (let i = 0; i < 2 * per + 3; i++) all.push(snapshot(await r.next()));
    expect(r.position()).toEqual({ epoch: 2, batch: 3 });
    const totalChunks = r.manifests[0].datasets.reduce((a, d) => a + d.buckets['0-500'][0].chunks.length, 0);
    await r.close();
    for (const k of [1, 7, per - 1, per, per + 13, 2 * per]) {
      const position = { epoch: Math.floor(k / per), batch: k % per };
      const { batches, chunksAfterFirst } = await readN(dir, { ...base, position }, 3);
      expect(batches).toEqual(all.slice(k, k + 3));
      expect(chunksAfterFirst).toBeLessThanOrEqual(3); // seeks to the batch's own chunks; no replay
      expect(chunksAfterFirst).toBeLessThan(totalChunks / 4);
    }
    // seek on an open reader, too
    const s = await openDataset(dir, base);
    await s.next();
    s.seek({ epoch: 1, batch: 5 });
    expect(snapshot(await s.next())).toEqual(all[per + 5]);
    expect(s.position()).toEqual({ epoch: 1, batch: 6 });
    s.seek({ epoch: 0, batch: per }); // the end of an epoch is the start of the next
    expect(s.position()).toEqual({ epoch: 1, batch: 0 });
    expect(() => s.seek({ epoch: 0, batch: per + 1 })).toThrow(/outside this dataset/);
    await s.close();
  });

  test('seeded shuffling: same seed same order, a new order each epoch and for another seed', async () => {
    const order = async (seed: number, epoch: number) => {
      const r = await openDataset(dir, { ...base, seed, position: { epoch, batch: 0 } });
      const out: string[] = [];
      for await (const b of r.epoch()) out.push(`${b.dataset}:${rowsOf((b as PairBatch).queries).map((q) => q.join(' ')).join('|')}`);
      await r.close();
      return out;
    };
    const e0 = await order(5, 0);
    expect(await order(5, 0)).toEqual(e0);
    const e1 = await order(5, 1);
    expect(e1).not.toEqual(e0);
    expect([...e1].sort()).not.toEqual([...e0].sort()); // rows are regrouped, not just batches reordered
    expect(await order(6, 0)).not.toEqual(e0);
    // the two datasets are interleaved, not read one after the other
    const firstHalf = e0.slice(0, e0.length / 2).map((s) => s.split(':')[0]);
    expect(new Set(firstHalf).size).toBe(2);
  });

  test('sharding: the ranks’ slices of global batch k together are the one-device batch k', async () => {
    const opts = { ...base, shuffleRatio: 0 };
    const one = await openDataset(dir, { ...opts, batchSize: 4 });
    const r0 = await openDataset(dir, { ...opts, batchSize: 2, rank: 0, worldSize: 2 });
    const r1 = await openDataset(dir, { ...opts, batchSize: 2, rank: 1, worldSize: 2 });
    expect(r0.batchesPerEpoch).toBe(one.batchesPerEpoch);
    for (let k = 0; k < one.batchesPerEpoch; k++) {
      const [a, b0, b1] = (await Promise.all([one.next(), r0.next(), r1.next()])) as PairBatch[];
      expect([b0.dataset, b1.dataset]).toEqual([a.dataset, a.dataset]);
      expect([b0.size, b1.size]).toEqual([2, 2]);
      expect([...rowsOf(b0.queries), ...rowsOf(b1.queries)]).toEqual(rowsOf(a.queries));
      expect([...rowsOf(b0.passages), ...rowsOf(b1.passages)]).toEqual(rowsOf(a.passages));
      if (a.teacherScores) expect([...b0.teacherScores!, ...b1.teacherScores!]).toEqual([...a.teacherScores]);
    }
    await Promise.all([one.close(), r0.close(), r1.close()]);
    await expect(openDataset(dir, { ...opts, rank: 2, worldSize: 2 })).rejects.toThrow(/rank must be in \[0, 2\)/);
  });

  test('padding to the longest, or to a multiple of 8', async () => {
    const r = await openDataset(dir, { ...base, padToMultipleOf: 8 });
    for await (const b of r.epoch()) {
      const p = b as PairBatch;
      expect(p.queries.length % 8).toBe(0);
      expect(p.passages.length % 8).toBe(0);
      expect(Math.max(...rowsOf(p.passages).map((x) => x.length))).toBeGreaterThan(p.passages.length - 8);
    }
    await r.close();
    const plain = await openDataset(dir, base);
    const p = (await plain.next()) as PairBatch;
    expect(Math.max(...rowsOf(p.passages).map((x) => x.length))).toBe(p.passages.length);
    await plain.close();
  });

  test('dropLast false keeps each stream’s partial last batch', async () => {
    const r = await openDataset(dir, { ...base, dropLast: false });
    expect(r.batchesPerEpoch).toBe(Math.ceil(90 / 4) + Math.ceil(60 / 4));
    let rows = 0;
    for await (const b of r.epoch()) rows += b.size;
    expect(rows).toBe(150);
    await r.close();
  });

  test('shuffle_ratio 1 re-tokenizes long positives as three shuffled chunks; 0 leaves them as prepared', async () => {
    const tok = bertTokenizer();
    const dir2 = tmpDir();
    const rng = createRng(3);
    const pos = Array.from({ length: 6 }, () => sentence(rng, 30)); // > 100 characters each
    writeJsonl(path.join(dir2, 'a.jsonl'), pos.map((p, i) => ({ query: WORDS[i], pos: [p], neg: ['n'] })));
    const out = path.join(dir2, 'out');
    await prepareDataset([path.join(dir2, 'a.jsonl')], tok, out, { format: 'finetune', passageMaxLen: 512, progress: false });
    const positives = async (ratio: number) => {
      const r = await openDataset(out, { seed: 1, batchSize: 6, trainGroupSize: 1, shuffleRatio: ratio, tokenizer: tok });
      const b = (await r.next()) as PairBatch;
      await r.close();
      return new Map(rowsOf(b.queries).map((q, i) => [tok.idToToken(q[1]), rowsOf(b.passages)[i]]));
    };
    const same = await positives(0);
    const shuffled = await positives(1);
    let changed = 0;
    pos.forEach((p, i) => {
      expect(same.get(WORDS[i])).toEqual(tok.encode(p, 512));
      const chars = Array.from(p);
      const size = Math.floor(chars.length / 3) + 1;
      const parts = [0, 1, 2].map((k) => chars.slice(k * size, (k + 1) * size).join(''));
      const perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]].map((o) => tok.encode(o.map((k) => parts[k]).join(' '), 512).join(','));
      const got = shuffled.get(WORDS[i])!.join(',');
      expect(perms).toContain(got);
      if (got !== perms[0]) changed++;
    });
    expect(changed).toBeGreaterThan(0);
    await expect(openDataset(out, { seed: 1, batchSize: 6, shuffleRatio: 0.5 })).rejects.toThrow(/needs the tokenizer/);
  });
});

describe('sampling', () => {
  test('negatives without replacement when there are enough', () => {
    const rng = createRng(1);
    for (let t = 0; t < 50; t++) {
      const s = sampleNegatives(10, 7, rng);
      expect(new Set(s).size).toBe(7);
      expect(s.every((i) => i >= 0 && i < 10)).toBe(true);
    }
    expect(sampleNegatives(5, 0, rng)).toEqual([]);
    expect(() => sampleNegatives(0, 3, rng)).toThrow(RangeError);
  });

  test('too few negatives: the index list is replicated, each index at most ceil(k/n) times', () => {
    const rng = createRng(2);
    for (let t = 0; t < 50; t++) {
      const s = sampleNegatives(3, 7, rng);
      expect(s).toHaveLength(7);
      const counts = [0, 1, 2].map((i) => s.filter((x) => x === i).length);
      expect(Math.max(...counts)).toBeLessThanOrEqual(3);
      expect(Math.min(...counts)).toBeGreaterThanOrEqual(1); // 7 of 9 slots: every index appears
    }
  });

  test('positives and negatives are drawn uniformly (rough check)', () => {
    const rng = createRng(3);
    const counts = new Array(4).fill(0);
    for (let t = 0; t < 4000; t++) counts[sampleNegatives(4, 1, rng)[0]]++;
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(120);
  });

  test('text shuffle: only texts over 100 characters, three chunks of len/3+1', () => {
    const rng = createRng(4);
    expect(maybeShuffleText('short text', 1, rng)).toBeNull();
    expect(maybeShuffleText('x'.repeat(200), 0, rng)).toBeNull();
    const text = Array.from({ length: 101 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');
    const out = maybeShuffleText(text, 1, rng)!;
    const parts = out.split(' ');
    expect(parts.map((p) => p.length).sort()).toEqual([33, 34, 34]);
    expect([...parts].sort()).toEqual([text.slice(0, 34), text.slice(34, 68), text.slice(68)].sort());
  });

  test('group size by type', () => {
    expect(groupSizeFor('only_1neg', 5, 8)).toBe(2);
    expect(groupSizeFor('symmetric_class', 4, 8)).toBe(5);
    expect(groupSizeFor('symmetric_class', 20, 8)).toBe(8);
    expect(groupSizeFor('normal', 1, 8)).toBe(8);
    expect(groupSizeFor(null, 1, 4)).toBe(4);
  });
});
