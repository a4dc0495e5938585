/**
 * Exact resume: N steps, a stop, resume to N+M gives the weights of N+M steps in one run; a finished run
 * is left alone; --resume without a checkpoint starts fresh. On the tiny unified config (dropout on).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useBackend } from '../../src/backend';
import { listCheckpoints } from '../../src/train/checkpoint';
import { runStage } from '../../src/recipes/pipeline';
import { loadStageConfig } from '../../src/recipes/stage-config';
import { readSafetensors } from '../../src/model/weights/safetensors';

const config = path.resolve(__dirname, '../../configs/tiny/unified.yaml');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-resume-'));
const cfgFor = (out: string, extra: string[] = []) => loadStageConfig(config, [`output_dir=${out}`, 'train.max_steps=5', 'train.save_steps=2', 'train.save_total_limit=0', ...extra]);

beforeAll(() => useBackend('wasm'));

describe('resume', () => {
  test('stop after 3 steps + resume = 5 steps in one run (≤ 1e-6)', async () => {
    const straight = path.join(tmp, 'straight');
    const r1 = await runStage(cfgFor(straight), {});
    expect(r1.steps).toBe(5);

    const broken = path.join(tmp, 'broken');
    const r2 = await runStage(cfgFor(broken), { stopAfter: 3 });
    expect(r2).toMatchObject({ steps: 3, stoppedEarly: true });
    expect(fs.existsSync(path.join(broken, 'final'))).toBe(false);
    expect(listCheckpoints(broken).map((c) => c.step)).toEqual([2, 3]);
    const r3 = await runStage(cfgFor(broken), { resume: true });
    expect(r3.steps).toBe(5);

    const a = readSafetensors(path.join(straight, 'final/model.safetensors'));
    const b = readSafetensors(path.join(broken, 'final/model.safetensors'));
    let maxDiff = 0;
    for (const [k, t] of a) {
      const u = b.get(k)!.data;
      for (let i = 0; i < t.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(t.data[i] - u[i]));
    }
    expect(maxDiff).toBeLessThanOrEqual(1e-6);
    // metrics: one row per step, the stopped run's rows after the checkpoint replaced
    const steps = fs.readFileSync(path.join(broken, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
    expect(steps).toEqual([1, 2, 3, 4, 5]);

    // a finished run: --resume leaves final/ as it is
    const before = fs.statSync(path.join(broken, 'final/model.safetensors')).mtimeMs;
    const r4 = await runStage(cfgFor(broken), { resume: true });
    expect(r4.alreadyFinished).toBe(true);
    expect(fs.statSync(path.join(broken, 'final/model.safetensors')).mtimeMs).toBe(before);
  });

  test('--resume without a checkpoint starts fresh', async () => {
    const out = path.join(tmp, 'fresh');
    const r = await runStage(cfgFor(out, ['train.max_steps=1']), { resume: true });
    expect(r.steps).toBe(1);
    expect(fs.existsSync(path.join(out, 'final/model.safetensors'))).toBe(true);
  });
});
