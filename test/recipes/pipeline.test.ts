/** configs/tiny/pipeline.yaml end to end on wasm: RetroMAE → pairs → unified, each from the previous final. */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useBackend } from '../../src/backend';
import { loadModel, hasHeads, disposeModel } from '../../src/model/m3';
import { runPipeline } from '../../src/recipes/pipeline';
import { exportOnnx } from '../../src/model/export';
import { parseCard } from '../helpers/card';

beforeAll(() => useBackend('wasm'));

test('the tiny pipeline runs all three stages and skips them on a rerun', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-pipeline-'));
  const file = path.resolve(__dirname, '../../configs/tiny/pipeline.yaml');
  const runs = await runPipeline(file, [`output_dir=${out}`, 'train.max_steps=3', 'retromae:model.license=apache-2.0']);
  expect(runs.map((r) => [r.name, r.result?.steps])).toEqual([['retromae', 3], ['pairs', 3], ['unified', 3]]);
  expect(runs[1].config.model.init).toBe(path.join(out, '1-retromae', 'final'));
  expect(runs[2].config.model.init).toBe(path.join(out, '2-pairs', 'final'));
  expect(fs.existsSync(path.join(out, '1-retromae/final/retromae_decoder.safetensors'))).toBe(true);
  const final = loadModel(path.join(out, '3-unified/final'));
  expect(hasHeads(final)).toBe(true);
  disposeModel(final);
  for (const r of runs) {
    const rows = fs.readFileSync(path.join(r.config.output_dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.map((x) => x.step)).toEqual([1, 2, 3]);
    for (const x of rows) expect(Number.isFinite(x.loss)).toBe(true);
  }
  const again = await runPipeline(file, [`output_dir=${out}`, 'train.max_steps=3', 'retromae:model.license=apache-2.0']);
  expect(again.every((r) => r.result === null)).toBe(true);

  // model cards: the last final describes the whole pipeline; the license given to stage 1 carries on
  const card = (dir: string) => parseCard(fs.readFileSync(path.join(dir, 'README.md'), 'utf8'));
  const first = card(path.join(out, '1-retromae/final'));
  expect(first.front).toMatchObject({ library_name: 'sentence-transformers', pipeline_tag: 'feature-extraction', license: 'apache-2.0' });
  const last = card(path.join(out, '3-unified/final'));
  expect(last.front).toMatchObject({ library_name: 'sentence-transformers', pipeline_tag: 'sentence-similarity', license: 'apache-2.0' });
  expect(last.front).not.toHaveProperty('base_model'); // from scratch: no base model, and a local dir is never one
  expect(last.body).toContain('| 1 | retromae | 3 | random initialisation |\n| 2 | pairs | 3 | stage 1 (retromae) |\n| 3 | unified | 3 | stage 2 (pairs) |');
  const sha = (f: string) => createHash('sha256').update(fs.readFileSync(path.resolve(path.dirname(file), f))).digest('hex');
  for (const f of ['data/toy_pretrain_text.jsonl', 'data/toy_pretrain_data.jsonl', 'data/toy_pairs.jsonl', 'data/toy_finetune_data.jsonl']) expect(last.body).toContain(`| ${path.basename(f)} | `);
  expect(last.body).toContain(`\`${sha('data/toy_finetune_data.jsonl')}\``);
  expect(last.body).toContain('use_self_distill: true');
  // its ONNX export carries the card and the record on
  const onnx = path.join(out, 'onnx');
  await exportOnnx(path.join(out, '3-unified/final'), onnx);
  const exported = card(onnx);
  expect(exported.front).toMatchObject({ library_name: 'transformers.js', pipeline_tag: 'feature-extraction', license: 'apache-2.0' });
  expect(exported.body).toContain('| 3 | unified | 3 | stage 2 (pairs) |');
  expect(fs.readFileSync(path.join(onnx, 'm3_training.json'), 'utf8')).toBe(fs.readFileSync(path.join(out, '3-unified/final/m3_training.json'), 'utf8'));
});
