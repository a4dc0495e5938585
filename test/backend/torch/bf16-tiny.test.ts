/**
 * bf16 autocast (train.bf16) on the CPU through the real stages of configs/tiny: every matrix product of a
 * unified step and of a RetroMAE step takes bf16 inputs (linear layers, attention products, the tied MLM
 * output layer, the ColBERT and sparse heads, the scores), as under torch.autocast, recorded by the addon's
 * GEMM recorder (recordGemms: libtorch's operator hook, so products made inside ATen or by any native file
 * count too); and 50 unified steps in bf16 follow float32's loss.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { setBf16Autocast, useBackend } from '../../../src/backend';
import { linear } from '../../../src/backend/ops';
import { addon } from '../../../src/backend/torch/addon';
import { runStage } from '../../../src/recipes/pipeline';
import { loadStageConfig } from '../../../src/recipes/stage-config';
import { describeTorch } from './setup';

const TINY = path.resolve(__dirname, '../../../configs/tiny');
let tmp: string;

/** Runs configs/tiny/<stage>.yaml for `steps` steps; returns its per-step losses (metrics.jsonl). */
async function runTiny(stage: 'unified' | 'retromae', steps: number, bf16: boolean, tag: string): Promise<number[]> {
  const out = path.join(tmp, `${stage}-${tag}`);
  const cfg = loadStageConfig(path.join(TINY, `${stage}.yaml`), [
    `output_dir=${out}`, `data.cache_dir=${path.join(tmp, 'cache')}`, `train.max_steps=${steps}`, `train.bf16=${bf16}`, 'train.save_steps=0', 'train.log_steps=1',
  ]);
  await runStage(cfg, { noCheckpoint: true, force: true });
  return fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss as number);
}

/** The GEMMs `run` dispatches, as "op dtype,dtype,...". */
async function gemmsOf(run: () => unknown): Promise<string[]> {
  addon().recordGemms(true);
  let records: { op: string; dtypes: string[] }[] = [];
  try {
    await run();
  } finally {
    records = addon().recordGemms(false) ?? [];
  }
  return records.map((r) => `${r.op} ${r.dtypes.join(',')}`);
}

describeTorch('bf16 autocast on the CPU, configs/tiny', () => {
  beforeAll(async () => {
    await useBackend('torch');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-bf16-tiny-'));
  });
  afterAll(() => {
    setBf16Autocast(false);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('the recorder sees a float32 GEMM as float32 and a bf16 one as bf16', async () => {
    const [x, w, b] = [tf.randomNormal([6, 8], 0, 1, 'float32', 1), tf.randomNormal([5, 8], 0, 1, 'float32', 2), tf.randomNormal([5], 0, 1, 'float32', 3)];
    const fp32 = await gemmsOf(() => tf.dispose(linear(x, w, b)));
    setBf16Autocast(true);
    const bf16 = await gemmsOf(() => tf.dispose(linear(x, w, b)));
    setBf16Autocast(false);
    expect(fp32).toEqual(['aten::addmm Float,Float,Float']);
    expect(bf16).toEqual(['aten::addmm BFloat16,BFloat16,BFloat16']);
    expect(addon().recordGemms(false)).toEqual([]); // off: nothing recorded since
    tf.dispose([x, w, b]);
  });

  test('one unified step and one RetroMAE step run every GEMM with bf16 inputs', async () => {
    for (const stage of ['unified', 'retromae'] as const) {
      const gemms = await gemmsOf(() => runTiny(stage, 1, true, 'gemms'));
      const ops = new Set(gemms.map((g) => g.split(' ')[0]));
      // linear layers (addmm, and mm in their backward), attention and score products (bmm / matmul)
      for (const op of ['aten::addmm', 'aten::mm', 'aten::bmm']) expect(ops).toContain(op);
      expect(gemms.filter((g) => !/^\S+ BFloat16(,BFloat16)*$/.test(g))).toEqual([]);
    }
  }, 120_000);

  test('50 unified steps in bf16: last-10 mean loss within 2% of float32, every step within 5%', async () => {
    const fp32 = await runTiny('unified', 50, false, 'fp32');
    const bf16 = await runTiny('unified', 50, true, 'bf16');
    expect(fp32).toHaveLength(50);
    expect(bf16).toHaveLength(50);
    const mean = (xs: number[]) => xs.reduce((a, v) => a + v, 0) / xs.length;
    expect(mean(fp32.slice(-10))).toBeLessThan(mean(fp32.slice(0, 10))); // it learns: the comparison covers moving weights
    expect(Math.abs(mean(bf16.slice(-10)) - mean(fp32.slice(-10)))).toBeLessThanOrEqual(0.02 * mean(fp32.slice(-10)));
    const worst = Math.max(...fp32.map((v, i) => Math.abs(bf16[i] - v) / Math.abs(v)));
    expect(worst).toBeLessThanOrEqual(0.05);
    expect(bf16.some((v, i) => v !== fp32[i])).toBe(true); // bf16 really ran
  }, 240_000);
});
