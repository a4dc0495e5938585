/**
 * `m3 demo` on a reduced setting: the tiny pipeline (2 steps a stage) with a small slice of the demo's
 * NFCorpus dev folder, through the library and through the CLI. results.json has the documented shape,
 * the report is written, and a rerun skips the stages and reuses their evaluations; `--ablations` adds two
 * arms beside the stages, reused the same way.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { useBackend } from '../../src/backend';
import { ablationArms, DemoResults, runDemo } from '../../src/recipes/demo';
import { pipelineStages } from '../../src/recipes/pipeline';
import { disposeModel, hasHeads, loadModel } from '../../src/model/m3';
import { runCli } from '../helpers/cli';

const ROOT = path.resolve(__dirname, '../..');
const MODES = ['dense', 'sparse', 'colbert', 'dense+sparse', 'all'];
let tmp: string;
let evalYaml: string;

/** 6 dev queries, their judged documents and 30 others, from configs/demo/data/nfcorpus-dev. */
function smallBeir(dir: string): string {
  const src = path.join(ROOT, 'configs/demo/data/nfcorpus-dev');
  const qrels = fs.readFileSync(path.join(src, 'qrels/dev.tsv'), 'utf8').trim().split('\n');
  const qids = [...new Set(qrels.slice(1).map((l) => l.split('\t')[0]))].slice(0, 6);
  const rows = qrels.slice(1).filter((l) => qids.includes(l.split('\t')[0]));
  const docs = zlib.gunzipSync(fs.readFileSync(path.join(src, 'corpus.jsonl.gz'))).toString('utf8').trim().split('\n');
  const judged = new Set(rows.map((l) => l.split('\t')[1]));
  const keep = docs.filter((l, i) => judged.has(JSON.parse(l)._id) || i % 120 === 0);
  fs.mkdirSync(path.join(dir, 'qrels'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'corpus.jsonl'), keep.join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'queries.jsonl'), fs.readFileSync(path.join(src, 'queries.jsonl'), 'utf8').split('\n').filter((l) => l && qids.includes(JSON.parse(l)._id)).join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'qrels/dev.tsv'), [qrels[0], ...rows].join('\n') + '\n');
  return dir;
}

beforeAll(async () => {
  await useBackend('wasm');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-demo-'));
  smallBeir(path.join(tmp, 'beir'));
  evalYaml = path.join(tmp, 'eval.yaml');
  fs.writeFileSync(evalYaml, `data: beir\nmodes: [${MODES.join(', ')}]\nmax_length: 48\nquery_max_length: 16\nbatch_size: 32\n`);
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function checkShape(r: DemoResults, out: string) {
  expect(r.stages.map((s) => s.name)).toEqual(['untrained', 'retromae', 'pairs', 'unified']);
  for (const s of r.stages) {
    expect(Object.keys(s.modes)).toEqual(MODES);
    for (const m of MODES) for (const k of ['ndcg@10', 'recall@100', 'mrr@10'] as const) {
      const v = s.modes[m as 'all']![k];
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(1);
    }
    expect([s['ndcg@10'], s['recall@100'], s['mrr@10']]).toEqual([s.modes.all!['ndcg@10'], s.modes.all!['recall@100'], s.modes.all!['mrr@10']]);
  }
  expect(r.stages.map((s) => s.fresh_heads)).toEqual([true, true, true, false]);
  expect(r.final_model).toBe(path.join(out, '3-unified', 'final'));
  expect(path.isAbsolute(r.final_model)).toBe(true);
  const onDisk = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
  expect(onDisk.stages).toEqual(r.stages);
  expect(onDisk.final_model).toBe(r.final_model);
}

test('the demo evaluates before training and after each stage, and a rerun reuses everything', async () => {
  const out = path.join(tmp, 'run');
  let printed = '';
  const opts = { pipeline: path.join(ROOT, 'configs/tiny/pipeline.yaml'), evalConfig: evalYaml, outputDir: out, sets: ['train.max_steps=2'], write: (s: string) => { printed += s; } };
  const r = await runDemo(opts);
  checkShape(r, out);
  expect(r.eval.queries).toBe(6);
  const m = loadModel(r.final_model);
  expect(hasHeads(m)).toBe(true);
  disposeModel(m);
  for (const name of ['untrained', 'retromae', 'pairs', 'unified']) expect(printed).toContain(name);
  expect(printed).toContain('nDCG@10 by stage and mode');
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  expect(html).toContain('Loss — stage 3 (unified)');
  expect(html).toContain('ndcg@10 per stage and mode');

  // rerun: finished stages are skipped and their cached evaluations reused (same numbers, no training)
  const mtime = fs.statSync(path.join(out, '3-unified/final')).mtimeMs;
  const again = await runDemo({ ...opts, write: () => undefined });
  expect(again.stages.map((s) => s.modes)).toEqual(r.stages.map((s) => s.modes));
  expect(fs.statSync(path.join(out, '3-unified/final')).mtimeMs).toBe(mtime);
});

test('m3 demo --ablations: two arms in OUT/ablations, evaluated alike, the demo\'s stages untouched; a rerun reuses everything', () => {
  // the first test's run: its stages and evaluations are reused, only the arms train and are evaluated
  const out = path.join(tmp, 'run');
  const pipeline = path.join(ROOT, 'configs/tiny/pipeline.yaml');
  const stageDirs = ['1-retromae', '2-pairs', '3-unified'].map((d) => path.join(out, d));
  const before = stageDirs.map((d) => [fs.readFileSync(path.join(d, 'finished.json'), 'utf8'), fs.statSync(path.join(d, 'final')).mtimeMs]);
  const args = ['demo', '--ablations', '--config', 'configs/tiny/pipeline.yaml', '--eval', evalYaml, '--output-dir', out, '--set', 'train.max_steps=2'];
  const r = runCli(args);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  expect(r.stderr.match(/demo: evaluating/g)).toHaveLength(2);
  expect(r.stdout).toMatch(/nDCG@10 with and without each ablated part\nablation +dense +sparse +colbert +dense\+sparse +all\nretromae: with( +0\.\d{4}){5}\nretromae: without( +0\.\d{4}){5}\nself_distill: with/);
  const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as DemoResults;
  expect(Object.keys(res.ablations!)).toEqual(['retromae', 'self_distill']);
  for (const a of Object.values(res.ablations!)) {
    expect(a.with).toEqual(Object.fromEntries(MODES.map((m) => [m, res.stages[3].modes[m as 'all']!['ndcg@10']])));
    expect(Object.keys(a.without)).toEqual(MODES);
    for (const v of Object.values(a.without)) expect(v >= 0 && v <= 1 && Math.round(v * 1e4) === v * 1e4).toBe(true);
  }
  for (const d of ['no-retromae/2-pairs', 'no-retromae/3-unified', 'no-self-distill/3-unified']) {
    expect(JSON.parse(fs.readFileSync(path.join(out, 'ablations', d, 'finished.json'), 'utf8')).steps).toBe(2);
  }
  expect(fs.existsSync(path.join(out, 'ablations/no-self-distill/2-pairs'))).toBe(false);
  const lastRow = (d: string) => JSON.parse(fs.readFileSync(path.join(out, d, 'metrics.jsonl'), 'utf8').trim().split('\n').pop()!);
  expect(lastRow('3-unified')).toHaveProperty('loss_selfDistill');
  expect(lastRow('ablations/no-self-distill/3-unified')).not.toHaveProperty('loss_selfDistill');
  expect(stageDirs.map((d) => [fs.readFileSync(path.join(d, 'finished.json'), 'utf8'), fs.statSync(path.join(d, 'final')).mtimeMs])).toEqual(before);
  // where each arm starts: stage 1's from-scratch start, and the demo's pairs model with self-distillation off
  const stages = pipelineStages(pipeline, [`output_dir=${out}`]);
  const [noRetromae, noDistill] = ablationArms(pipeline, stages).map((a) => pipelineStages(pipeline, [`output_dir=${path.join(out, 'ablations', a.dir)}`], a.from));
  expect(noRetromae.map((c) => [c.stage, c.model.init, c.model.config, c.model.tokenizer])).toEqual([
    ['pairs', undefined, stages[0].model.config, stages[0].model.tokenizer], ['unified', path.join(out, 'ablations/no-retromae/2-pairs/final'), undefined, stages[2].model.tokenizer]]);
  expect(noDistill.map((c) => c.stage === 'unified' && [c.model.init, c.loss.use_self_distill])).toEqual([[path.join(out, '2-pairs/final'), false]]);
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  expect(html).toMatch(/<h2>Ablations<\/h2>.*<table id="ablations">.*<td rowspan="2">self_distill<\/td>/s);

  const again = runCli(args);
  expect(again.code).toBe(0);
  expect(again.stderr).not.toContain('demo: evaluating');
  expect(again.stderr.match(/already finished; skipping/g)).toHaveLength(6);
  expect(JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')).ablations).toEqual(res.ablations);
});

test('m3 demo on the command line: tables on stdout, results.json and report.html', () => {
  // the run above: its stages are skipped; the changed evaluation settings make every evaluation rerun
  const out = path.join(tmp, 'run');
  const r = runCli(['demo', '--config', 'configs/tiny/pipeline.yaml', '--eval', evalYaml, '--output-dir', out,
    '--set', 'train.max_steps=2', '--eval-set', 'modes=[dense,all]', 'max_queries=3']);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  expect(r.stderr.match(/already finished; skipping/g)).toHaveLength(3);
  expect(r.stderr.match(/demo: evaluating/g)).toHaveLength(4);
  expect(r.stderr.split('\n')[0]).toMatch(/^demo: backend (torch|wasm)\/cpu; about \d+ s on 2 cores /); // 3 stages × 2 steps, 4 evaluations
  expect(r.stdout).toMatch(/== 0\. untrained .*==\nmode +nDCG@10 +Recall@100 +MRR@10\ndense +0\.\d{4}/);
  expect(r.stdout).toContain('== 3. unified ==');
  const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
  expect(res.stages.map((s: { modes: object }) => Object.keys(s.modes))).toEqual(Array(4).fill(['dense', 'all']));
  expect(res.eval.queries).toBe(3);
  expect(fs.existsSync(path.join(out, 'report.html'))).toBe(true);
});

test('m3 demo: a bad evaluation key is one clear line', () => {
  const r = runCli(['demo', '--config', 'configs/tiny/pipeline.yaml', '--eval', evalYaml, '--output-dir', path.join(tmp, 'bad'), '--eval-set', 'modez=[dense]']);
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toMatch(/^m3: error: --eval-set modez: unknown key 'modez' \(did you mean 'modes'\?\)$/);
});

test('the shipped demo configs: from scratch, three stages, an eval set with every mode', () => {
  const stages = pipelineStages(path.join(ROOT, 'configs/demo/pipeline.yaml'), []);
  expect(stages.map((s) => s.stage)).toEqual(['retromae', 'pairs', 'unified']);
  expect(stages[0].model.init).toBeUndefined();
  expect(fs.existsSync(stages[0].model.config!)).toBe(true);
  expect(stages[2].stage === 'unified' && stages[2].loss.use_self_distill).toBe(true);
  expect(stages[2].stage === 'unified' && stages[2].model.sparse_init).toBe('idf'); // torch's init dies on this encoder (README)
  const evalCfg = fs.readFileSync(path.join(ROOT, 'configs/demo/eval.yaml'), 'utf8');
  expect(evalCfg).toMatch(/modes: \[dense, sparse, colbert, dense\+sparse, all\]/);
});
