/** configs/tiny/pipeline.yaml end to end on wasm: RetroMAE → pairs → unified, each from the previous final. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useBackend } from '../../src/backend';
import { loadModel, hasHeads, disposeModel } from '../../src/model/m3';
import { runPipeline } from '../../src/recipes/pipeline';

beforeAll(() => useBackend('wasm'));

test('the tiny pipeline runs all three stages and skips them on a rerun', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-pipeline-'));
  const file = path.resolve(__dirname, '../../configs/tiny/pipeline.yaml');
  const runs = await runPipeline(file, [`output_dir=${out}`, 'train.max_steps=3']);
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
  const again = await runPipeline(file, [`output_dir=${out}`, 'train.max_steps=3']);
  expect(again.every((r) => r.result === null)).toBe(true);
});
