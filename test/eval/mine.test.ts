/**
 * Hard-negative mining on the toy data with the tiny BERT: negatives come from the requested slice of the
 * dense ranking (checked against brute force), never a positive or the query, seeded, with FlagEmbedding
 * rows written atomically by `m3 mine`.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { cli } from '../../src/cli/main';
import { defaultMinedPath } from '../../src/cli/commands/mine';
import { mineHardNegatives, parseRange, readTrainingJsonl, TrainingExample } from '../../src/eval/mine';
import { encodeTexts } from '../../src/model/inference';
import { loadModel, M3Model } from '../../src/model/m3';
import { denseScore } from '../../src/model/scores';
import { UserError } from '../../src/util/errors';
import { TINY_BERT, toyDocs, toyQueries } from './fixtures';

let tmp: string;
let model: M3Model;
const docs = toyDocs().map(([, t]) => t);
const pool = [...new Set(docs)]; // nine of the ten "foo …" documents are one text
const [q1, q2] = toyQueries().map(([, t]) => t);
const opts = { negatives: 3, seed: 1, maxLength: 32, queryMaxLength: 32, progress: false };

function examples(): TrainingExample[] {
  const rows = [
    { query: q1, pos: [docs[0]], neg: [docs[1]], neg_scores: [0.5], type: 'normal' },
    { query: q2, pos: [docs[5], docs[9]], prompt: 'Represent this: ' },
  ];
  const file = path.join(tmp, 'train.jsonl');
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return readTrainingJsonl(file);
}

/** The pool ranked by dense score for a query (ties to the earlier pool text), as texts. */
async function ranking(query: string, texts: string[]): Promise<string[]> {
  const [qv] = await encodeTexts(model, [query], { maxLength: 32 });
  const dv = await encodeTexts(model, texts, { maxLength: 32 });
  return texts.map((t, i) => ({ t, i, s: denseScore(qv.dense!, dv[i].dense!) })).sort((a, b) => b.s - a.s || a.i - b.i).map((x) => x.t);
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-mine-'));
  model = loadModel(TINY_BERT);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('negatives are drawn from the 0-based [start, end) slice of the dense ranking, minus positives and the query', async () => {
  const ex = examples();
  const { rows, stats } = await mineHardNegatives(model, ex, [...docs, q1], { ...opts, range: [1, 8] }); // the query itself is in the pool
  expect(stats).toMatchObject({ examples: 2, pool: pool.length + 1, fromRange: 6, filled: 0, short: 0 });
  for (let i = 0; i < 2; i++) {
    const slice = (await ranking(ex[i].query, [...pool, q1])).slice(1, 8);
    const allowed = slice.filter((t) => !ex[i].pos.includes(t) && t !== ex[i].query);
    const neg = rows[i].neg as string[];
    expect(neg).toHaveLength(3);
    expect(new Set(neg).size).toBe(3);
    for (const t of neg) expect(allowed).toContain(t);
  }
  expect(rows[0].neg).not.toContain(q1);
  // other fields kept in place, stale teacher scores of the replaced negatives dropped
  expect(Object.keys(rows[0])).toEqual(['query', 'pos', 'neg', 'type']);
  expect(rows[1]).toMatchObject({ prompt: 'Represent this: ', pos: [docs[5], docs[9]] });
});

test('few candidates: all of them in rank order, then random fill-ins that are not positives', async () => {
  const ex = examples();
  const { rows, stats } = await mineHardNegatives(model, ex, docs, { ...opts, negatives: 4, range: [2, 4] });
  for (let i = 0; i < 2; i++) {
    const ranked = (await ranking(ex[i].query, pool)).slice(2, 4).filter((t) => !ex[i].pos.includes(t));
    const neg = rows[i].neg as string[];
    expect(neg.slice(0, ranked.length)).toEqual(ranked);
    expect(neg).toHaveLength(4);
    expect(new Set(neg).size).toBe(4);
    for (const t of neg) expect(ex[i].pos).not.toContain(t);
  }
  expect(stats.filled).toBe(8 - stats.fromRange);
});

test('the pool defaults to the texts of the input; seeds make draws repeatable', async () => {
  const ex = examples();
  const a = await mineHardNegatives(model, ex, null, { ...opts, negatives: 1, range: [0, 10] });
  expect(a.stats.pool).toBe(4); // docs 0, 1, 5, 9
  expect([docs[1], docs[5], docs[9]]).toContain((a.rows[0].neg as string[])[0]); // not its own positive
  expect([docs[0], docs[1]]).toContain((a.rows[1].neg as string[])[0]);
  const wide = { ...opts, negatives: 2, range: [0, 12] as [number, number] };
  const s1 = await mineHardNegatives(model, ex, docs, { ...wide, seed: 5 });
  expect((await mineHardNegatives(model, ex, docs, { ...wide, seed: 5 })).rows).toEqual(s1.rows);
  const seeds = await Promise.all([6, 7, 8, 9].map((seed) => mineHardNegatives(model, ex, docs, { ...wide, seed })));
  expect(seeds.some((s) => JSON.stringify(s.rows) !== JSON.stringify(s1.rows))).toBe(true);
});

test('m3 mine writes FlagEmbedding JSONL; bad input names file:line', async () => {
  examples();
  const corpus = path.join(tmp, 'corpus.jsonl');
  fs.writeFileSync(corpus, docs.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const input = path.join(tmp, 'train.jsonl');
  const errs: string[] = [];
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((s) => (errs.push(String(s)), true));
  try {
    process.exitCode = 0;
    await cli(['mine', '--model', TINY_BERT, '--input', input, '--corpus', corpus, '--range', '2-10', '--negatives', '3', '--backend', 'cpu']).parseAsync();
    expect(process.exitCode).toBe(0);
    const out = defaultMinedPath(input);
    expect(out).toBe(path.join(tmp, 'train_minedHN.jsonl'));
    const lines = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l.neg).toHaveLength(3);
    expect(errs.join('')).toMatch(new RegExp(`mined 2 examples against a pool of ${pool.length} texts: 6 negatives from ranks 3-10`));

    fs.writeFileSync(input, `${JSON.stringify({ query: 'a', pos: ['b'] })}\n${JSON.stringify({ query: 'c', pos: [] })}\n`);
    await cli(['mine', '--model', TINY_BERT, '--input', input, '--output', path.join(tmp, 'x.jsonl'), '--backend', 'cpu']).parseAsync();
    expect(process.exitCode).toBe(1);
    expect(errs.join('')).toMatch(/train\.jsonl:2: pos: is empty; every query needs at least one positive/);
    expect(fs.existsSync(path.join(tmp, 'x.jsonl'))).toBe(false);
  } finally {
    spy.mockRestore();
    process.exitCode = 0;
  }
});

test("m3 mine reads training JSONL as m3 data prepare does: the old 'positive' key is accepted", () => {
  const input = path.join(tmp, 'positive.jsonl');
  fs.writeFileSync(input, `${JSON.stringify({ query: 'a', positive: ['b', 'c'] })}\n`);
  const [ex] = readTrainingJsonl(input);
  expect([ex.query, ex.pos, ex.neg]).toEqual(['a', ['b', 'c'], []]);
  fs.writeFileSync(input, `${JSON.stringify({ query: 'a', pos: ['b'], neg: [3] })}\n`);
  expect(() => readTrainingJsonl(input)).toThrow(`${input}:1: neg[0]: expected a string, got a number`);
});

test('range parsing', () => {
  expect(parseRange('2-200')).toEqual([2, 200]);
  expect(parseRange(' 0 - 5 ')).toEqual([0, 5]);
  expect(() => parseRange('200-2')).toThrow(UserError);
  expect(() => parseRange('2:200')).toThrow(/START-END/);
});
