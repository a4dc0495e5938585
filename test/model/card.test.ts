/**
 * Model cards (README.md): the Hub's YAML front matter parsed back with the `yaml` package, the body's
 * training, data and evaluation sections, base_model only for a Hub id (or a Hugging Face cache snapshot),
 * the training record carried from a stage's starting dir, and a stage that evaluates: its final and best
 * models' cards hold their evaluations. The pipeline's cards and an export's: test/recipes/pipeline.test.ts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseCard } from '../helpers/card';
import { useBackend } from '../../src/backend';
import { runStage } from '../../src/recipes/pipeline';
import { loadStageConfig } from '../../src/recipes/stage-config';
import { writeToyBeir } from '../eval/fixtures';
import { extendRecord, hubIdOf, modelCard, RECORD_FILE, TrainingRecord } from '../../src/model/card';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-card-'));
const model = { config: { model_type: 'xlm-roberta', hidden_size: 1024, num_hidden_layers: 24, max_position_embeddings: 8194 }, colbertDim: 1024 };
const stage = (name: string, evalMetrics: Record<string, number> | null = null) => ({
  stage: name, steps: 100, data: [{ file: 'train.jsonl', sha256: 'ab'.repeat(32), rows: 1000 }], settings: { loss: { temperature: 0.02 } }, eval: evalMetrics,
});

test('hubIdOf: org/name (and @revision), cache snapshots; never a local path', () => {
  expect(hubIdOf('BAAI/bge-m3')).toBe('BAAI/bge-m3');
  expect(hubIdOf('BAAI/bge-m3@5617a9f61b028005a4858fdac845db406aefb181')).toBe('BAAI/bge-m3');
  expect(hubIdOf('/home/me/.cache/huggingface/hub/models--BAAI--bge-m3/snapshots/5617a9f6')).toBe('BAAI/bge-m3');
  expect(hubIdOf('/data/hf/datasets--org--my.data/snapshots/abc/train.jsonl', 'datasets')).toBe('org/my.data');
  expect(hubIdOf('/data/hf/datasets--org--my.data/snapshots/abc/train.jsonl')).toBeNull();
  expect(hubIdOf('/abs/runs/final')).toBeNull();
  expect(hubIdOf('./runs/final')).toBeNull();
  expect(hubIdOf('bge-m3')).toBeNull();
  fs.mkdirSync(path.join(tmp, 'org', 'name'), { recursive: true });
  const cwd = process.cwd();
  try {
    process.chdir(tmp);
    expect(hubIdOf('org/name')).toBeNull(); // an existing relative dir is a path
  } finally {
    process.chdir(cwd);
  }
});

test('front matter: the Hub fields; body: stages, data hashes, settings, evaluation table, loading in four libraries', () => {
  const rec: TrainingRecord = {
    base_model: 'BAAI/bge-m3', license: 'apache-2.0', datasets: ['org/pairs'],
    stages: [{ ...stage('pairs'), from: 'BAAI/bge-m3' }, { ...stage('unified', { 'eval/dense/ndcg@10': 0.51234, 'eval/dense/recall@100': 0.7, 'eval/all/ndcg@10': 0.55 }), from: 'stage 1 (pairs)' }],
  };
  const { front, body } = parseCard(modelCard(rec, model));
  expect(front).toEqual({
    library_name: 'sentence-transformers', pipeline_tag: 'sentence-similarity',
    tags: ['m3-train', 'sentence-transformers', 'safetensors', 'feature-extraction', 'sentence-similarity', 'bge-m3', 'colbert', 'sparse'],
    base_model: 'BAAI/bge-m3', datasets: ['org/pairs'], license: 'apache-2.0',
  });
  expect(body).toContain('| 1 | pairs | 100 | BAAI/bge-m3 |');
  expect(body).toContain('| 2 | unified | 100 | stage 1 (pairs) |');
  expect(body).toContain(`| train.jsonl | 1000 | \`${'ab'.repeat(32)}\` |`);
  expect(body).toContain('loss:\n  temperature: 0.02');
  expect(body).toContain('| mode | ndcg@10 | recall@100 |\n|---|---|---|\n| dense | 0.5123 | 0.7000 |\n| all | 0.5500 |  |');
  for (const lib of ['### m3-train', 'npx m3 encode --model path/to/model', 'BGEM3FlagModel("path/to/model"', 'SentenceTransformer("path/to/model")', "pipeline('feature-extraction'"]) expect(body).toContain(lib);

  // a RetroMAE-only model without heads, from scratch, no license: feature-extraction, no base_model / license / datasets
  const bare = parseCard(modelCard({ base_model: null, license: null, datasets: [], stages: [{ ...stage('retromae'), from: null }] }, { ...model, colbertDim: null }));
  expect(bare.front).toEqual({ library_name: 'sentence-transformers', pipeline_tag: 'feature-extraction', tags: ['m3-train', 'sentence-transformers', 'safetensors', 'feature-extraction'] });
  expect(bare.body).toContain('| 1 | retromae | 100 | random initialisation |');
  expect(bare.body).toContain('FlagModel("path/to/model", pooling_method="cls")');
  expect(bare.body).not.toContain('## Evaluation');

  // an ONNX export: transformers.js
  const onnx = parseCard(modelCard(rec, model, { files: ['onnx/model.onnx'] }));
  expect(onnx.front).toMatchObject({ library_name: 'transformers.js', pipeline_tag: 'feature-extraction', base_model: 'BAAI/bge-m3', license: 'apache-2.0' });
  expect(onnx.front.tags).toContain('onnx');
  expect(onnx.body).toContain('`onnx/model.onnx`');
  expect(onnx.body).toContain('SentenceTransformer("path/to/onnx-export", backend="onnx")');
});

test('extendRecord: base_model from a Hub id, carried on from a dir with a record, never a plain local path', () => {
  const s = stage('unified');
  expect(extendRecord('BAAI/bge-m3@main', s, {})).toMatchObject({ base_model: 'BAAI/bge-m3', stages: [{ from: 'BAAI/bge-m3' }] });
  expect(extendRecord(undefined, s, { license: 'mit' })).toMatchObject({ base_model: null, license: 'mit', stages: [{ from: null }] });
  const local = path.join(tmp, 'my-model');
  fs.mkdirSync(local);
  expect(extendRecord(local, s, {})).toMatchObject({ base_model: null, stages: [{ from: 'my-model' }] });
  // a previous stage's dir: its stages, base model, license and datasets carry on; a new license wins
  fs.writeFileSync(path.join(local, RECORD_FILE), JSON.stringify(extendRecord('BAAI/bge-m3', stage('pairs'), { license: 'mit', datasets: ['a/b'] })));
  const next = extendRecord(local, s, { license: 'apache-2.0', datasets: ['a/b', 'c/d'] });
  expect(next).toMatchObject({ base_model: 'BAAI/bge-m3', license: 'apache-2.0', datasets: ['a/b', 'c/d'] });
  expect(next.stages.map((x) => [x.stage, x.from])).toEqual([['pairs', 'BAAI/bge-m3'], ['unified', 'stage 1 (pairs)']]);
  // an unreadable record starts anew rather than failing the save
  fs.writeFileSync(path.join(local, RECORD_FILE), '{ not json');
  expect(extendRecord(local, s, {}).stages.length).toBe(1);
});

test('a stage with evaluation: final/ and best/ cards hold the evaluation their model got, as metrics.jsonl logged it', async () => {
  await useBackend('wasm');
  const out = path.join(tmp, 'evaluated');
  const cfg = loadStageConfig(path.resolve(__dirname, '../../configs/tiny/unified.yaml'), [`output_dir=${out}`, 'train.max_steps=2', 'train.save_steps=0',
    `eval.data=${writeToyBeir(path.join(tmp, 'beir'))}`, 'eval.steps=1', 'eval.modes=[dense, all]', 'model.license=mit']);
  await runStage(cfg, {});
  const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
  const evals = rows.filter((r) => 'eval/dense/ndcg@10' in r);
  expect(evals.map((r) => r.step)).toEqual([1, 2]);
  const table = (r: Record<string, number>) => ['dense', 'all'].map((m) => `| ${m} | ${['ndcg@10', 'recall@100', 'mrr@10'].map((k) => r[`eval/${m}/${k}`].toFixed(4)).join(' | ')} |`);
  const final = parseCard(fs.readFileSync(path.join(out, 'final/README.md'), 'utf8'));
  expect(final.front).toMatchObject({ license: 'mit', pipeline_tag: 'sentence-similarity' });
  for (const line of table(evals[1])) expect(final.body).toContain(line);
  const record = JSON.parse(fs.readFileSync(path.join(out, 'final', RECORD_FILE), 'utf8')) as TrainingRecord;
  expect(record.stages[0].eval).toEqual(Object.fromEntries(Object.entries(evals[1]).filter(([k]) => k.startsWith('eval/'))));
  // best/ is the model of the first evaluation with the highest score (eval.metric of mode all)
  const bestStep = evals.reduce((b, r) => (r['eval/all/ndcg@10'] > b['eval/all/ndcg@10'] ? r : b)).step;
  const best = parseCard(fs.readFileSync(path.join(out, 'best/README.md'), 'utf8'));
  expect(best.body).toContain(`| 1 | unified | ${bestStep} | random initialisation |`);
  for (const line of table(evals[bestStep - 1])) expect(best.body).toContain(line);
});
