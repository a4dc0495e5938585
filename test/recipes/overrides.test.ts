/**
 * Per-stage config.json overrides (`model.hidden_dropout_prob`, ...): validated like every key, used for
 * training, recorded in the stage's saved config.json and so inherited by the next stage unless it
 * overrides them too; `model.init=null` clears a written starting point (the demo's from-scratch ablation).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useBackend } from '../../src/backend';
import { loadOrInitModel } from '../../src/model/m3';
import { runStage } from '../../src/recipes/pipeline';
import { loadStageConfig } from '../../src/recipes/stage-config';

const tiny = path.resolve(__dirname, '../../configs/tiny');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-overrides-'));
const savedConfig = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'final/config.json'), 'utf8'));

beforeAll(() => useBackend('wasm'));

test('a mistyped or out-of-range override is an error naming the key', () => {
  const f = path.join(tiny, 'pairs.yaml');
  expect(() => loadStageConfig(f, ['model.hidden_dropout_prb=0'])).toThrow(`--set model.hidden_dropout_prb: unknown key 'model.hidden_dropout_prb' (did you mean 'model.hidden_dropout_prob'?)`);
  expect(() => loadStageConfig(f, ['model.attention_probs_dropout_prob=1.5'])).toThrow(`--set model.attention_probs_dropout_prob: key 'model.attention_probs_dropout_prob' must be ≤ 1, got 1.5`);
  expect(() => loadStageConfig(f, ['model.init=x', 'model.initializer_range=0.1'])).toThrow(/key 'model.initializer_range' has no effect in stage 'pairs'/);
});

test('model.init=null removes a written starting point, so a from-scratch model.config may replace it', () => {
  const f = path.resolve(tiny, '../paper/stage2-pairs.yaml'); // writes model.init
  const config = path.join(tiny, 'model/config.json');
  const cfg = loadStageConfig(f, ['model.init=null', `model.config=${config}`, `model.tokenizer=${path.join(tiny, 'tokenizer')}`]);
  expect([cfg.model.init, cfg.model.config]).toEqual([undefined, config]);
  expect(() => loadStageConfig(f, [`model.config=${config}`])).toThrow(/key 'model.config' has no effect/);
});

test('the stage trains with the override, saves it, and the next stage inherits it', async () => {
  const one = path.join(tmp, 'one');
  const cfg = loadStageConfig(path.join(tiny, 'retromae.yaml'), [`output_dir=${one}`, 'train.max_steps=1', 'model.hidden_dropout_prob=0', 'model.layer_norm_eps=1e-6']);
  const m = loadOrInitModel(cfg.model, 1, one);
  expect([m.config.hiddenDropout, m.config.attentionDropout, m.config.layerNormEps]).toEqual([0, 0.1, 1e-6]);
  await runStage(cfg, {});
  expect(savedConfig(one)).toMatchObject({ hidden_dropout_prob: 0, attention_probs_dropout_prob: 0.1, layer_norm_eps: 1e-6 });

  const two = path.join(tmp, 'two');
  const inherit = loadStageConfig(path.join(tiny, 'pairs.yaml'), [`output_dir=${two}`, 'train.max_steps=1', `model.init=${path.join(one, 'final')}`, 'model.attention_probs_dropout_prob=0']);
  await runStage(inherit, {});
  expect(savedConfig(two)).toMatchObject({ hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, layer_norm_eps: 1e-6 });
});
