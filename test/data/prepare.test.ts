import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { prepareDataset, prepareOrReuse, encodeTruncated } from '../../src/data/prepare';
import { openDataset, PairBatch } from '../../src/data/reader';
import { bucketOf, BUCKETS, readManifest } from '../../src/data/manifest';
import { loadTokenizer } from '../../src/model/tokenizer';
import { UserError } from '../../src/util/errors';
import { sharedDir } from '../helpers/shared';
import { BERT_DIR, bertTokenizer, FE, readJsonl, rowOf, rowsOf, tmpDir, writeJsonl } from './helpers';

const FINETUNE_INPUTS = [
  path.join(FE, 'example_data/retrieval'),
  path.join(FE, 'example_data/sts'),
  path.join(FE, 'example_data/classification-no_in_batch_neg'),
  path.join(FE, 'example_data/clustering-no_in_batch_neg'),
  path.join(FE, 'toy_finetune_data.jsonl'),
];

const key = (ids: ArrayLike<number>) => Array.from(ids).join(',');

describe('every FlagEmbedding example file prepares and reads back with the right groups', () => {
  const tok = bertTokenizer();
  let out: string;
  beforeAll(async () => {
    out = path.join(tmpDir(), 'ft');
    await prepareDataset(FINETUNE_INPUTS, tok, out, { format: 'finetune', passageMaxLen: 64, progress: false });
  });

  test('manifest: sources with size and sha256, datasets with the per-file semantics', () => {
    const m = readManifest(out);
    expect(m.kind).toBe('finetune');
    expect(m.rows).toBe(60);
    expect(m.maxLengths).toEqual({ query: 32, passage: 64 });
    expect(m.tokenizer.fingerprint).toBe(tok.fingerprint);
    const toy = m.sources.find((s) => s.path.endsWith('toy_finetune_data.jsonl'))!;
    expect(toy).toMatchObject({ size: 4522, sha256: '89c5abd24f15e3ddebbaba43b0840a3f09b7eb15caa1d5c45afd022a3f53c108', rows: 10, buckets: { '0-500': 10 } });
    const msmarco = m.sources.find((s) => s.path.endsWith('msmarco.jsonl'))!;
    expect(msmarco.sha256).toBe('a84cc942163a27a26fb1ceb8f177183b1159ae7e0a4dff2177bb9241062ac237');
    const ds = Object.fromEntries(m.datasets.map((d) => [d.name, d]));
    expect(Object.keys(ds).sort()).toEqual([
      'classification-no_in_batch_neg/AmazonClassification', 'clustering-no_in_batch_neg/arXiv_title', 'flagembedding/toy_finetune_data',
      'retrieval/msmarco', 'retrieval/nli', 'sts/sts',
    ]);
    expect(ds['retrieval/msmarco']).toMatchObject({ type: 'normal', noInBatchNeg: false, hasScores: true, minNeg: 25, rows: 10 });
    expect(ds['retrieval/nli']).toMatchObject({ type: 'only_1neg', hasScores: true, minNeg: 1 });
    expect(ds['sts/sts']).toMatchObject({ type: 'symmetric_sts', noInBatchNeg: false, hasScores: false, minNeg: 28 });
    expect(ds['classification-no_in_batch_neg/AmazonClassification']).toMatchObject({ type: 'symmetric_class', noInBatchNeg: true, minNeg: 4 });
    expect(ds['clustering-no_in_batch_neg/arXiv_title']).toMatchObject({ type: 'symmetric_clustering', noInBatchNeg: true, minNeg: 16 });
    expect(ds['flagembedding/toy_finetune_data']).toMatchObject({ type: null, noInBatchNeg: false, hasScores: false, minNeg: 7 });
    for (const d of m.datasets) {
      const files = d.buckets['0-500'];
      expect(files.reduce((a, f) => a + f.rows, 0)).toBe(10);
      for (const f of files) expect(fs.existsSync(path.join(out, f.file))).toBe(true);
    }
  });

  test('an epoch yields every row once, in groups of one of its positives and G−1 of its negatives, scores following', async () => {
    const reader = await openDataset(out, { seed: 3, batchSize: 4, trainGroupSize: 8, dropLast: false, tokenizer: tok });
    // reference rows keyed by their tokenized query: the passages a group may hold, with their scores
    const m = reader.manifests[0];
    const refs = new Map<string, { dataset: string; pos: Map<string, number | null>; neg: Map<string, number | null> }>();
    for (const s of m.sources) {
      const d = m.datasets.find((x) => x.sources.includes(m.sources.indexOf(s)))!;
      for (const r of readJsonl(s.path)) {
        const passages = (texts: string[], scores?: number[]) => new Map(texts.map((t, i) => [key(tok.encode(t, 64)), scores ? scores[i] : null]));
        refs.set(key(tok.encode(r.query, 32)), { dataset: d.name, pos: passages(r.pos, r.pos_scores), neg: passages(r.neg, r.neg_scores) });
      }
    }
    const seen = new Map<string, number>();
    const groupSizes = new Map<string, Set<number>>();
    const batchSizes = new Map<string, Set<number>>();
    for await (const b of reader.epoch()) {
      const batch = b as PairBatch;
      (groupSizes.get(batch.dataset) ?? groupSizes.set(batch.dataset, new Set()).get(batch.dataset)!).add(batch.groupSize);
      (batchSizes.get(batch.dataset) ?? batchSizes.set(batch.dataset, new Set()).get(batch.dataset)!).add(batch.size);
      const qs = rowsOf(batch.queries);
      const ps = rowsOf(batch.passages);
      expect(ps).toHaveLength(batch.size * batch.groupSize);
      qs.forEach((q, i) => {
        const ref = refs.get(key(q))!;
        expect(ref).toBeDefined();
        expect(ref.dataset).toBe(batch.dataset); // one dataset per batch
        seen.set(key(q), (seen.get(key(q)) ?? 0) + 1);
        const group = ps.slice(i * batch.groupSize, (i + 1) * batch.groupSize).map(key);
        expect(ref.pos.has(group[0])).toBe(true);
        for (const n of group.slice(1)) expect(ref.neg.has(n)).toBe(true);
        // negatives without replacement when there are enough (distinct texts here)
        if (ref.neg.size >= batch.groupSize - 1) expect(new Set(group.slice(1)).size).toBe(batch.groupSize - 1);
        if (batch.teacherScores) {
          expect(batch.teacherScores[i * batch.groupSize]).toBeCloseTo(ref.pos.get(group[0])!, 4);
          group.slice(1).forEach((n, k) => expect(batch.teacherScores![i * batch.groupSize + 1 + k]).toBeCloseTo(ref.neg.get(n)!, 4));
        }
      });
      expect(batch.teacherScores === null).toBe(!batch.dataset.startsWith('retrieval/'));
      expect(batch.noInBatchNeg).toBe(batch.dataset.includes('no_in_batch_neg'));
    }
    expect(seen.size).toBe(60);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(groupSizes.get('retrieval/nli')).toEqual(new Set([2])); // only_1neg
    expect(groupSizes.get('classification-no_in_batch_neg/AmazonClassification')).toEqual(new Set([5])); // min(4 negs + 1, 8)
    expect(groupSizes.get('retrieval/msmarco')).toEqual(new Set([8]));
    // symmetric types get half the batch: 10 rows → 2,2,2,2,2; others 4,4,2
    expect(batchSizes.get('sts/sts')).toEqual(new Set([2]));
    expect(batchSizes.get('retrieval/msmarco')).toEqual(new Set([4, 2]));
    await reader.close();
  });

  test('a different tokenizer is refused', async () => {
    const t5 = loadTokenizer(sharedDir('data/tokenizers/t5-small'));
    await expect(openDataset(out, { seed: 0, batchSize: 4, tokenizer: t5 })).rejects.toThrow(/prepared with a different tokenizer/);
    await expect(openDataset(out, { seed: 0, batchSize: 4, tokenizer: t5 })).rejects.toThrow(UserError);
  });
});

describe('prepare semantics', () => {
  const tok = bertTokenizer();

  test('prompts are used only with a query instruction; symmetric_sts passages get them too', async () => {
    const dir = tmpDir();
    const plain = await prepareDataset([path.join(FE, 'example_data/sts')], tok, path.join(dir, 'a'), { format: 'finetune', progress: false });
    const instr = await prepareDataset([path.join(FE, 'example_data/sts')], tok, path.join(dir, 'b'), { format: 'finetune', queryInstruction: '', progress: false });
    expect(instr.tokens).toBeGreaterThan(plain.tokens);
    const row = readJsonl(path.join(FE, 'example_data/sts/sts.jsonl'))[0];
    const r = await openDataset(path.join(dir, 'b'), { seed: 0, batchSize: 2, trainGroupSize: 2 });
    const all: number[][] = [];
    for await (const b of r.epoch()) all.push(...rowsOf((b as PairBatch).queries), ...rowsOf((b as PairBatch).passages));
    await r.close();
    const keys = new Set(all.map(key));
    expect(keys.has(key(tok.encode(row.prompt + row.query, 32)))).toBe(true);
    expect(keys.has(key(tok.encode(row.prompt + row.pos[0], 128)))).toBe(true);
  });

  test('pairs: neg may be absent, pos may be one string; toy_query.json ({query, positive}) prepares', async () => {
    const dir = tmpDir();
    const file = writeJsonl(path.join(dir, 'p.jsonl'), [{ query: 'a b', pos: 'c d' }, { query: 'e', pos: ['f'], neg: [] }, { query: 'g', pos: ['h'], neg: ['i'] }]);
    const m = await prepareDataset([file, path.join(FE, 'toy_evaluation_data/toy_query.json')], tok, path.join(dir, 'out'), { format: 'pairs', progress: false });
    expect(m.rows).toBe(6);
    expect(m.datasets.map((d) => d.minNeg)).toEqual([0, 0]);
    const r = await openDataset(path.join(dir, 'out'), { seed: 1, batchSize: 3 });
    let rows = 0;
    for await (const b of r.epoch()) {
      const pb = b as PairBatch;
      expect(pb.groupSize).toBe(1);
      expect(pb.passages.batch).toBe(pb.size);
      rows += b.size;
    }
    expect(rows).toBe(6);
    await r.close();
    // G > 1 needs negatives in every row
    await expect(openDataset(path.join(dir, 'out'), { seed: 1, batchSize: 3, trainGroupSize: 2 })).rejects.toThrow(/without negatives/);
  });

  test('pretrain: {text} (and toy_corpus.json {content}) packed into [CLS] … [SEP] blocks of ≤ max-len', async () => {
    const dir = tmpDir();
    const m = await prepareDataset([path.join(FE, 'toy_pretrain_data.jsonl'), path.join(FE, 'toy_evaluation_data/toy_corpus.json')], tok, path.join(dir, 'pt'), { format: 'pretrain', maxLen: 64, progress: false });
    expect(m.kind).toBe('pretrain');
    expect(m.maxLengths).toEqual({ max: 64 });
    const texts = readJsonl(path.join(FE, 'toy_pretrain_data.jsonl')).map((r) => r.text as string);
    const expected = texts.flatMap((t) => tok.tokenize(t));
    const r = await openDataset(path.join(dir, 'pt'), { seed: 0, batchSize: 1, dropLast: false });
    const blocks = new Map<string, number[][]>();
    for await (const b of r.epoch()) {
      if (b.kind !== 'pretrain') throw new Error('expected pretrain batches');
      const ids = rowOf(b.inputIds, 0);
      expect(ids.length).toBeLessThanOrEqual(64);
      expect(ids[0]).toBe(tok.clsId);
      expect(ids[ids.length - 1]).toBe(tok.sepId);
      (blocks.get(b.dataset) ?? blocks.set(b.dataset, []).get(b.dataset)!).push(ids.slice(1, -1));
    }
    await r.close();
    // the blocks hold every token once: same multiset as the texts' tokens
    const got = blocks.get('flagembedding/toy_pretrain_data')!.flat().sort((a, b) => a - b);
    expect(got).toEqual([...expected].sort((a, b) => a - b));
    expect(blocks.get('toy_evaluation_data/toy_corpus')!.flat().length).toBeGreaterThan(10);
  });

  test('length buckets over the longest text of a group; per-bucket files and counts', async () => {
    expect(BUCKETS).toEqual(['0-500', '500-1000', '1000-2000', '2000-3000', '3000-4000', '4000-5000', '5000-6000', '6000-7000', '7000-inf']);
    expect([bucketOf(3), bucketOf(500), bucketOf(501), bucketOf(1999), bucketOf(7000), bucketOf(8192)]).toEqual(['0-500', '0-500', '500-1000', '1000-2000', '6000-7000', '7000-inf']);
    const dir = tmpDir();
    const long = (n: number) => Array.from({ length: n }, (_, i) => `word${i % 50}`).join(' ');
    const file = writeJsonl(path.join(dir, 'len.jsonl'), [
      { query: 'q1', pos: ['short'], neg: ['short'] },
      { query: 'q2', pos: ['short'], neg: [long(300)] }, // ~600 tokens → 500-1000
      { query: 'q3', pos: [long(800)], neg: ['x'] }, // 1600 tokens, truncated at 1500 → 1000-2000
      { query: 'q4', pos: ['y'], neg: ['z'] },
    ]);
    const m = await prepareDataset([file], tok, path.join(dir, 'out'), { format: 'finetune', passageMaxLen: 1500, progress: false });
    expect(m.sources[0].buckets).toEqual({ '0-500': 2, '500-1000': 1, '1000-2000': 1 });
    expect(Object.keys(m.datasets[0].buckets).sort()).toEqual(['0-500', '1000-2000', '500-1000']);
    // a batch-size table by bucket: every batch comes from one bucket, sized by the table
    const r = await openDataset(path.join(dir, 'out'), { seed: 0, batchSize: { '0-500': 2, '500-1000': 1, '1000-2000': 1 }, trainGroupSize: 2 });
    const got: [string, number, number][] = [];
    for await (const b of r.epoch()) got.push([b.bucket, b.size, (b as PairBatch).passages.length]);
    await r.close();
    expect(got.sort()).toEqual([['0-500', 2, 3], ['1000-2000', 1, 1500], ['500-1000', 1, expect.any(Number)]].sort() as never);
    expect(got.find((g) => g[0] === '500-1000')![2]).toBeGreaterThan(500);
  });

  test('small_threshold merges small files of a directory; drop_threshold drops the merged set; a small standalone file is skipped', async () => {
    const dir = tmpDir();
    const sub = path.join(dir, 'mixed');
    const row = (i: number) => ({ query: `q${i}`, pos: [`p${i}`], neg: [`n${i}`] });
    writeJsonl(path.join(sub, 'a.jsonl'), [0, 1, 2].map(row));
    writeJsonl(path.join(sub, 'b.jsonl'), [{ ...row(3), batch_size: 2 }, row(4)]);
    writeJsonl(path.join(sub, 'big.jsonl'), [5, 6, 7, 8, 9, 10].map(row));
    const lone = writeJsonl(path.join(dir, 'lone.jsonl'), [row(11)]);
    const m = await prepareDataset([sub, lone], tok, path.join(dir, 'out'), { format: 'finetune', smallThreshold: 5, progress: false });
    expect(m.datasets.map((d) => [d.name, d.rows, d.sources.length, d.batchSize])).toEqual([
      ['mixed/big', 6, 1, null],
      ['mixed/small-merged', 5, 2, 2],
    ]);
    expect(m.rows).toBe(11);
    const dropped = await prepareDataset([sub], tok, path.join(dir, 'out2'), { format: 'finetune', smallThreshold: 5, dropThreshold: 6, progress: false });
    expect(dropped.datasets.map((d) => d.name)).toEqual(['mixed/big']);
    expect(fs.readdirSync(path.join(dir, 'out2/data'))).toHaveLength(1);
  });

  test('inputs may be .jsonl.gz', async () => {
    const dir = tmpDir();
    const src = fs.readFileSync(path.join(FE, 'toy_finetune_data.jsonl'));
    fs.writeFileSync(path.join(dir, 'toy.jsonl.gz'), zlib.gzipSync(src));
    const m = await prepareDataset([path.join(dir, 'toy.jsonl.gz')], tok, path.join(dir, 'out'), { format: 'finetune', progress: false });
    expect(m.rows).toBe(10);
    expect(m.datasets[0].name).toBe(`${path.basename(dir)}/toy`);
    expect(m.sources[0].size).toBe(fs.statSync(path.join(dir, 'toy.jsonl.gz')).size);
  });

  test('encodeTruncated equals encode on NFCorpus documents (bert and t5)', () => {
    const lines = zlib.gunzipSync(fs.readFileSync(sharedDir('data/retrieval/nfcorpus/corpus.jsonl.gz'))).toString('utf8').split('\n');
    const texts = lines.slice(0, 150).filter((l) => l.trim()).map((l) => JSON.parse(l).text as string);
    for (const t of [tok, loadTokenizer(sharedDir('data/tokenizers/t5-small'))]) {
      for (const max of [8, 32, 128]) {
        for (const text of texts) expect(encodeTruncated(t, text, max)).toEqual(t.encode(text, max));
      }
    }
  });
});

describe('prepareOrReuse', () => {
  test('reuses while sources, tokenizer and lengths match; prepares again when one changes', async () => {
    const dir = tmpDir();
    const cache = path.join(dir, 'cache');
    const file = writeJsonl(path.join(dir, 'in', 'train.jsonl'), readJsonl(path.join(FE, 'toy_finetune_data.jsonl')));
    const a = await prepareOrReuse([file], BERT_DIR, { format: 'finetune', progress: false }, cache);
    expect(a.reused).toBe(false);
    expect(a.manifest.rows).toBe(10);
    const b = await prepareOrReuse([file], BERT_DIR, { format: 'finetune', progress: false }, cache);
    expect(b).toMatchObject({ reused: true, dir: a.dir });
    expect(b.manifest.createdAt).toBe(a.manifest.createdAt);
    const c = await prepareOrReuse([file], BERT_DIR, { format: 'finetune', passageMaxLen: 64, progress: false }, cache);
    expect(c.reused).toBe(false);
    expect(c.dir).not.toBe(a.dir);
    const tiny = sharedDir('data/models/lightning-ir-tiny-bert');
    const d = await prepareOrReuse([file], tiny, { format: 'finetune', progress: false }, cache);
    expect(d.reused).toBe(false);
    expect(d.manifest.tokenizer.fingerprint).toBe(loadTokenizer(tiny).fingerprint);
    fs.appendFileSync(file, JSON.stringify({ query: 'new', pos: ['row'], neg: ['here'] }) + '\n');
    const e = await prepareOrReuse([file], BERT_DIR, { format: 'finetune', progress: false }, cache);
    expect(e.reused).toBe(false);
    expect(e.manifest.rows).toBe(11);
    expect((await prepareOrReuse([file], BERT_DIR, { format: 'finetune', progress: false }, cache)).reused).toBe(true);
  });
});
