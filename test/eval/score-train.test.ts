/**
 * The scored file trains: the toy fine-tuning data scored by the golden BERT reranker goes through two steps
 * of configs/tiny/unified.yaml with `data.knowledge_distillation: true` under each `loss.kd_loss_type`.
 * The teacher scores must reach the loss: every KD run's first loss differs from the same run without them.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useBackend } from '../../src/backend';
import { scoreTrainingFile } from '../../src/eval/score';
import { disposeModel } from '../../src/model/m3';
import { loadReranker } from '../../src/model/reranker';
import { runStage } from '../../src/recipes/pipeline';
import { loadStageConfig } from '../../src/recipes/stage-config';

const ROOT = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-score-train-'));
beforeAll(() => useBackend('wasm'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function firstLoss(scored: string, name: string, kd: string[]): Promise<number[]> {
  const out = path.join(tmp, name);
  const cfg = loadStageConfig(path.join(ROOT, 'configs/tiny/unified.yaml'), [
    `output_dir=${out}`, `data.train=[${scored}]`, `data.cache_dir=${path.join(tmp, 'cache')}`, 'train.max_steps=2', 'train.save_steps=2', ...kd,
  ]);
  const r = await runStage(cfg, {});
  expect(r.steps).toBe(2);
  const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => 'loss' in m);
  return rows.map((m) => m.loss as number);
}

test('scored toy data trains with knowledge_distillation under kl_div and m3_kd_loss', async () => {
  const scored = path.join(tmp, 'scored.jsonl');
  const r = loadReranker(path.join(__dirname, 'reranker', 'bert'));
  await scoreTrainingFile(r, path.join(ROOT, 'configs/tiny/data/toy_finetune_data.jsonl'), scored, { progress: false });
  disposeModel(r);
  const plain = await firstLoss(scored, 'plain', []);
  for (const type of ['kl_div', 'm3_kd_loss']) {
    const losses = await firstLoss(scored, type, ['data.knowledge_distillation=true', `loss.kd_loss_type=${type}`]);
    expect(losses).toHaveLength(2);
    for (const l of losses) expect(Number.isFinite(l)).toBe(true);
    expect(Math.abs(losses[0] - plain[0])).toBeGreaterThan(1e-4);
  }
}, 180_000);
