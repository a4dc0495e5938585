/**
 * `m3 eval` end to end on tiny models: the CLI's table, JSON and run files against an independent
 * brute-force evaluation built from encodeTexts and scores.ts (every document scored, the hybrid
 * reranking applied by hand), for the dense-only tiny BERT and for a tiny model with M3 heads.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { cli } from '../../src/cli/main';
import { evaluateBeir } from '../../src/eval/beir';
import { loadBeir } from '../../src/eval/data';
import { evaluateRun, Run } from '../../src/eval/metrics';
import { Mode } from '../../src/model/scores';
import { readRunTrec } from '../../src/eval/trec';
import { encodeTexts, Embedding } from '../../src/model/inference';
import { loadModel, M3Model } from '../../src/model/m3';
import { colbertScore, denseScore, lexicalScore } from '../../src/model/scores';
import { saveTinyModelWithHeads, TINY_BERT, writeToyBeir } from './fixtures';

let tmp: string;
let beirDir: string;
let headsDir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-eval-'));
  beirDir = writeToyBeir(path.join(tmp, 'toy'));
  headsDir = await saveTinyModelWithHeads(path.join(tmp, 'tiny-m3'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs the CLI in-process; returns exit code, stdout and stderr. */
async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await cli([...args, '--backend', 'cpu']).parseAsync();
    return { code: Number(process.exitCode ?? 0), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = before;
  }
}

/** Every mode by brute force: all documents scored with scores.ts, ties to the lower corpus index. */
async function referenceRuns(model: M3Model, modes: Mode[], topK: number, weights: number[], maxLength: number): Promise<Partial<Record<Mode, Run>>> {
  const ds = loadBeir(beirDir, 'dev');
  const outputs = modes.every((m) => m === 'dense') ? ['dense' as const] : ['dense' as const, 'sparse' as const, 'colbert' as const];
  const q: Embedding[] = await encodeTexts(model, ds.queryTexts, { outputs, maxLength });
  const d: Embedding[] = await encodeTexts(model, ds.corpus.texts, { outputs, maxLength });
  const top = (cands: number[], score: (i: number) => number) =>
    cands.map((i) => ({ i, s: score(i) })).sort((a, b) => b.s - a.s || a.i - b.i).slice(0, topK);
  const all = d.map((_, i) => i);
  const runs: Partial<Record<Mode, Run>> = {};
  for (const mode of modes) {
    const run: Run = new Map();
    ds.queryIds.forEach((qid, qi) => {
      const dense = (i: number) => denseScore(q[qi].dense!, d[i].dense!);
      const sparse = (i: number) => lexicalScore(q[qi].sparse!, d[i].sparse!);
      const colbert = (i: number) => colbertScore(q[qi].colbert!, d[i].colbert!);
      const denseTop = () => top(all, dense).map((x) => x.i);
      const union = () => [...new Set([...denseTop(), ...top(all.filter((i) => sparse(i) > 0), sparse).map((x) => x.i)])];
      const hits =
        mode === 'dense' ? top(all, dense)
        : mode === 'sparse' ? top(all.filter((i) => sparse(i) > 0), sparse)
        : mode === 'colbert' ? top(denseTop(), colbert)
        : mode === 'dense+sparse' ? top(union(), (i) => weights[0] * dense(i) + weights[1] * sparse(i))
        : top(union(), (i) => weights[0] * dense(i) + weights[1] * sparse(i) + weights[2] * colbert(i));
      run.set(qid, hits.map((h) => ({ docId: ds.corpus.ids[h.i], score: h.s })));
    });
    runs[mode] = run;
  }
  return runs;
}

test('tiny BERT (no heads): dense only; table, JSON and run file agree with brute force', async () => {
  const json = path.join(tmp, 'dense.json');
  const runFile = path.join(tmp, 'dense.trec');
  const r = await runCli(['eval', '--model', TINY_BERT, '--data', beirDir, '--json', json, '--run-file', runFile, '--top-k', '5']);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  expect(r.stdout.split('\n')[0]).toMatch(/^mode\s+nDCG@10\s+Recall@100\s+MRR@10$/);
  expect(r.stdout).toMatch(/^dense\s+\d\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}$/m);
  const results = JSON.parse(fs.readFileSync(json, 'utf8'));
  expect(Object.keys(results)).toEqual(['dense']);

  const model = loadModel(TINY_BERT);
  const ref = (await referenceRuns(model, ['dense'], 5, [1, 0.3, 1], 512)).dense!;
  const qrels = loadBeir(beirDir, 'dev').qrels;
  const want = evaluateRun(qrels, ref).mean;
  for (const k of ['ndcg@10', 'recall@100', 'mrr@10'] as const) expect(results.dense[k]).toBeCloseTo(want[k], 10);
  // the run file: 5 documents per query, the reference's documents, full-precision scores
  const run = readRunTrec(runFile);
  for (const [qid, docs] of ref) {
    expect(run.get(qid)!.map((x) => x.docId)).toEqual(docs.map((x) => x.docId));
    run.get(qid)!.forEach((x, i) => expect(x.score).toBeCloseTo(docs[i].score, 6));
  }
  expect(fs.readFileSync(runFile, 'utf8').split('\n')[0]).toMatch(/^query_id_1 Q0 \S+ 1 -?\d\.\d{8,}(e-?\d+)? m3-dense$/);
});

test('modes that need heads fail with one line on a model without them', async () => {
  const r = await runCli(['eval', '--model', TINY_BERT, '--data', beirDir, '--modes', 'dense,sparse']);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/m3: error: .*lightning-ir-tiny-bert: has no M3 heads .* mode sparse cannot run; use --modes dense/);
  const bad = await runCli(['eval', '--model', TINY_BERT, '--data', beirDir, '--modes', 'dense,bm25']);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toMatch(/unknown evaluation mode 'bm25'/);
});

test('tiny model with heads: all five modes equal the brute-force protocol; one run file per mode', async () => {
  const json = path.join(tmp, 'all.json');
  const runFile = path.join(tmp, 'runs', 'toy.trec');
  const weights = [0.5, 3, 1]; // a heavy sparse weight: documents only the sparse list found make the top 3
  // top-k 3 < 20 documents, so the dense ∪ sparse union is a real choice
  const r = await runCli(['eval', '--model', headsDir, '--data', beirDir, '--json', json, '--run-file', runFile, '--top-k', '3', '--weights', weights.join(',')]);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  const modes: Mode[] = ['dense', 'sparse', 'colbert', 'dense+sparse', 'all'];
  const results = JSON.parse(fs.readFileSync(json, 'utf8'));
  expect(Object.keys(results)).toEqual(modes); // default: every mode when the model has heads
  const model = loadModel(headsDir);
  const ref = await referenceRuns(model, modes, 3, weights, 512);
  const qrels = loadBeir(beirDir, 'dev').qrels;
  for (const mode of modes) {
    const file = path.join(tmp, 'runs', `toy.${mode}.trec`);
    const run = readRunTrec(file);
    for (const [qid, docs] of ref[mode]!) expect(run.get(qid)!.map((x) => x.docId)).toEqual(docs.map((x) => x.docId));
    expect(fs.readFileSync(file, 'utf8')).toContain(` m3-${mode}\n`);
    const want = evaluateRun(qrels, ref[mode]!).mean;
    for (const k of ['ndcg@10', 'recall@100', 'mrr@10'] as const) expect(results[mode][k]).toBeCloseTo(want[k], 10);
  }
  expect(fs.existsSync(runFile)).toBe(false); // several modes: only the per-mode files
});

test('evaluateBeir as a library: a loaded dataset can be reused, max queries and lengths apply', async () => {
  const model = loadModel(headsDir);
  const ds = loadBeir(beirDir, 'dev', { maxQueries: 1 });
  const res = await evaluateBeir(model, ds, { modes: ['sparse', 'all'], maxLength: 8, queryMaxLength: 6, progress: false });
  expect(Object.keys(res)).toEqual(['sparse', 'all']);
  for (const m of Object.values(res)) for (const v of Object.values(m)) expect(v).toBeGreaterThanOrEqual(0);
  const again = await evaluateBeir(model, ds, { modes: ['sparse', 'all'], maxLength: 8, queryMaxLength: 6, progress: false });
  expect(again).toEqual(res);
  await expect(evaluateBeir(model, beirDir, { split: 'test' })).rejects.toThrow(/no qrels for split 'test'/);
  await expect(evaluateBeir(model, ds, { topK: 0 })).rejects.toThrow(/top-k must be an integer ≥ 1/);
});
