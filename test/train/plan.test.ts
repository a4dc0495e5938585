/**
 * The resource plan: its arithmetic (weights, AdamW, frozen parameters, GradCache, checkpoints kept, tokens
 * per step), `m3 plan` (--json, --probe), the estimate against the measured peak RSS of real runs (tiny on
 * every backend's machine with torch, bench-small), and the refusals before step 1 (memory, disk) and the
 * one-line stop when a step runs out of memory.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { estimatePlan, PlanInput } from '../../src/train/plan';
import { describeTorch } from '../backend/torch/setup';
import { runCli } from '../helpers/cli';
import { ROOT } from '../helpers/fault';

jest.setTimeout(180_000);

const base: PlanInput = {
  stage: 'unified', kind: 'finetune', unified: true,
  model: { vocab: 1000, hidden: 64, layers: 2, heads: 4, ffn: 256, hiddenDropout: false },
  params: 200_000, trainable: 200_000, largestParam: 64_000, finalParams: 200_000,
  shapes: [
    { dataset: 'a', bucket: '0-500', batchSize: 8, groupSize: 4, queryLength: 32, passageLength: 128 },
    { dataset: 'a', bucket: '500-1000', batchSize: 2, groupSize: 4, queryLength: 32, passageLength: 1000 },
  ],
  subBatchSize: 0, maxGradNorm: 1, gradAccum: 1, saveSteps: 10, saveTotalLimit: 2, totalSteps: 100, worldSize: 1, keepsBest: false,
};

describe('estimatePlan', () => {
  test('weights, gradients and AdamW from the parameter counts; frozen parameters need no optimizer state', () => {
    const p = estimatePlan(base);
    expect([p.params, p.trainable_params, p.frozen_params]).toEqual([200_000, 200_000, 0]);
    expect(p.weights_mb).toBe(Math.ceil((4 * 200_000) / 2 ** 20));
    expect(p.optimizer_mb).toBe(Math.ceil((8 * 200_000) / 2 ** 20));
    const frozen = estimatePlan({ ...base, trainable: 10_000 });
    expect(frozen.frozen_params).toBe(190_000);
    expect(frozen.optimizer_mb).toBeLessThan(p.optimizer_mb);
    expect(frozen.checkpoint_mb).toBeLessThan(p.checkpoint_mb);
    expect(p.peak_memory_mb).toBe(p.step_peak_mb + p.checkpoint_write_mb);
  });

  test('the largest batch sets the activations; GradCache sub-batches shrink them; dropout grows them', () => {
    const p = estimatePlan(base);
    expect(p.largest_batch).toMatchObject({ bucket: '500-1000', rows: 2, passage_length: 1000 });
    const gc = estimatePlan({ ...base, subBatchSize: 2 });
    expect(gc.activations_mb).toBeLessThan(p.activations_mb);
    expect(estimatePlan({ ...base, model: { ...base.model, hiddenDropout: true } }).activations_mb).toBeGreaterThan(p.activations_mb);
  });

  test('disk: save_total_limit + 1 checkpoints exist at once, 0 keeps all; tokens per step count every rank and micro-batch', () => {
    const p = estimatePlan(base);
    expect(p.checkpoints_kept).toBe(3);
    expect(p.disk_needed_mb).toBe(Math.ceil((3 * (12 * 200_000) + 4 * 200_000) / 2 ** 20));
    expect(estimatePlan({ ...base, saveTotalLimit: 0 }).checkpoints_kept).toBe(10);
    expect(estimatePlan({ ...base, saveSteps: 0 }).checkpoints_kept).toBe(1);
    expect(estimatePlan({ ...base, saveSteps: 30 }).checkpoints_kept).toBe(3); // 30, 60, 90 and the final one at 100 → 3 at once
    const tokens = estimatePlan(base).tokens_per_step;
    expect(estimatePlan({ ...base, worldSize: 4, gradAccum: 2 }).tokens_per_step).toBe(8 * tokens);
  });
});

const TINY = path.join(ROOT, 'configs/tiny/unified.yaml');
const ENV = { M3_BACKEND: 'torch' };

describeTorch('m3 plan and the guard rails around a run', () => {
  let tmp: string;
  beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-plan-'))));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('m3 plan --json --probe: the keys, a probe of real steps, and nothing written to output_dir', () => {
    const out = path.join(tmp, 'never');
    const r = runCli(['plan', TINY, '--set', `output_dir=${out}`, '--json', '--probe'], { env: ENV });
    expect(r.code).toBe(0);
    const p = JSON.parse(r.stdout);
    for (const k of ['params', 'peak_memory_mb', 'checkpoint_mb', 'disk_needed_mb']) expect(p[k]).toBeGreaterThan(0);
    expect(p.probe.steps).toBe(3);
    expect(p.probe.seconds_per_step).toBeGreaterThan(0);
    expect(p.probe.time_to_max_steps_s).toBeCloseTo(p.probe.seconds_per_step * p.steps, 6);
    expect(fs.existsSync(out)).toBe(false);
  });

  test('the peak estimate is within ±25% of the measured peak RSS (tiny unified with its checkpoints; bench-small steps)', () => {
    const plan = JSON.parse(runCli(['plan', TINY, '--json'], { env: ENV }).stdout);
    const rssFile = path.join(tmp, 'rss');
    const run = spawnSync(process.execPath, ['-r', path.join(ROOT, 'test/helpers/max-rss.js'), path.join(ROOT, 'bin/m3.js'), 'train', TINY, '--set', `output_dir=${tmp}/tiny`],
      { cwd: ROOT, env: { ...process.env, ...ENV, M3_FROM_SRC: '1', M3_PROGRESS: '0', M3_TEST_RSS_FILE: rssFile }, encoding: 'utf8' });
    expect(run.status).toBe(0);
    expect(run.stderr).toMatch(/unified: plan — .* parameters/); // printed before step 1
    const measured = Number(fs.readFileSync(rssFile, 'utf8')) / 1024;
    expect(Math.abs(plan.peak_memory_mb - measured) / measured).toBeLessThan(0.25);
    const bench = spawnSync(process.execPath, [path.join(ROOT, 'bin/bench.js'), 'plan', '--model', 'bench-small', '--json'], { cwd: ROOT, encoding: 'utf8' });
    expect(bench.status).toBe(0);
    const row = JSON.parse(bench.stdout.trim().split('\n').pop()!);
    expect(Math.abs(row.error_pct)).toBeLessThan(25);
  });

  test('refused before step 1 when memory or disk will not do (one line with both numbers), unless --force', () => {
    const args = ['train', TINY, '--set', `output_dir=${tmp}/refused`, '--set', 'train.max_steps=1'];
    const mem = runCli(args, { env: { ...ENV, M3_MEMORY_AVAILABLE_MB: '100' } });
    expect(mem.code).toBe(1);
    const line = mem.stderr.split('\n').filter((l) => l.startsWith('m3: '));
    expect(line).toHaveLength(1);
    expect(line[0]).toMatch(/m3: error: unified: the plan needs about \d+ MB of memory at its peak, but 100 MB are available \(M3_MEMORY_AVAILABLE_MB\); lower data\.batch_size, set train\.sub_batch_size/);
    expect(fs.existsSync(path.join(tmp, 'refused', 'checkpoints'))).toBe(false);
    const disk = runCli(args, { env: { ...ENV, M3_DISK_FREE_MB: '1' } });
    expect(disk.code).toBe(1);
    expect(disk.stderr).toMatch(/m3: error: unified: the run needs about \d+ MB of disk for \d+ checkpoint\(s\) of \d+ MB and the final model, but 1 MB are free \(M3_DISK_FREE_MB\); lower train\.save_total_limit/);
    const forced = runCli([...args, '--force'], { env: { ...ENV, M3_MEMORY_AVAILABLE_MB: '100' } });
    expect(forced.code).toBe(0);
  });

  test('a step that cannot allocate its tensors ends with one line naming the step and the checkpoint state', () => {
    // a 6 GB address-space limit (headroom for V8 and thread arenas) and a batch whose plan says ≈ 14 GB:
    // libtorch's allocation fails in step 1
    const cmd = `ulimit -v 6000000; exec "${process.execPath}" bin/m3.js train configs/demo/unified.yaml --set output_dir=${tmp}/oom --set train.max_steps=2 --set data.batch_size=200 --force`;
    const r = spawnSync('bash', ['-c', cmd], { cwd: ROOT, env: { ...process.env, ...ENV, M3_FROM_SRC: '1', M3_PROGRESS: '0' }, encoding: 'utf8', timeout: 300_000 });
    expect(r.status).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('m3: '));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/m3: error: unified: out of memory in step 1 \(.*\); no checkpoint was written yet; lower data\.batch_size or set train\.sub_batch_size/);
  });
});

describe('a checkpoint that hits a full disk', () => {
  test('removes its temp dir, keeps the previous checkpoints and stops with one line', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-full-'));
    try {
      const out = path.join(tmp, 'run');
      const args = ['train', TINY, '--set', `output_dir=${out}`, '--set', 'train.save_steps=2', '--set', 'train.max_steps=4'];
      expect(runCli(args).code).toBe(0);
      fs.rmSync(path.join(out, 'finished.json')); // as if it had stopped after step 4: --resume continues it
      // files over 12 MB cannot be written: the weights (8 MB) still can, the AdamW moments (16 MB) cannot
      const cmd = `ulimit -f 12000; exec "${process.execPath}" bin/m3.js ${args.map((a) => `'${a}'`).join(' ')} --set train.max_steps=6 --resume`;
      const r = spawnSync('bash', ['-c', cmd], { cwd: ROOT, env: { ...process.env, M3_FROM_SRC: '1', M3_PROGRESS: '0', M3_BACKEND: 'wasm' }, encoding: 'utf8', timeout: 120_000 });
      expect(r.status).toBe(1);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('m3: '));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/m3: error: .*checkpoints\/step-6: disk full \(EFBIG\); nothing was written/);
      const left = fs.readdirSync(path.join(out, 'checkpoints'));
      expect(left.sort()).toEqual(['step-2', 'step-4']);
      expect(fs.existsSync(path.join(out, 'checkpoints', 'step-4', 'state.json'))).toBe(true);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
