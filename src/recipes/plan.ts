/**
 * `m3 plan`: a stage's resource plan (src/train/plan.ts) from its config — the model and data are set up
 * exactly as `m3 train` would, then no step is taken — and optionally a probe: a few real steps in a
 * scratch dir, giving seconds per step, the time to max_steps and the peak RSS they reached.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Plan } from '../train/plan';
import { UserError } from '../util/errors';
import { runStage } from './pipeline';
import { StageConfig } from './stage-config';

export interface Probe {
  steps: number;
  seconds_per_step: number;
  time_to_max_steps_s: number;
  /** Peak RSS of this process over set-up and the probe's steps (checkpoint writes excluded). */
  measured_peak_mb: number;
}

export async function planStage(cfg: StageConfig, o: { probeSteps?: number } = {}): Promise<Plan & { probe?: Probe }> {
  const r = await runStage(cfg, { planOnly: true });
  if (!r.plan) throw new UserError(`${cfg.stage}: this stage gives no plan`);
  if (!o.probeSteps) return r.plan;
  return { ...r.plan, probe: await probe(cfg, o.probeSteps, r.plan.steps) };
}

async function probe(cfg: StageConfig, steps: number, total: number): Promise<Probe> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-probe-'));
  try {
    // the same stage in a scratch dir: no evaluation, no periodic checkpoint, stopped after `steps`
    const scratch = { ...cfg, output_dir: dir, train: { ...cfg.train, save_steps: 0 }, eval: { ...cfg.eval, data: undefined } } as StageConfig;
    await runStage(scratch, { stopAfter: steps, force: true, noCheckpoint: true });
    const rows = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step_s?: number });
    const times = rows.map((r) => r.step_s).filter((t): t is number => typeof t === 'number');
    // the first step pays for first allocations; the rest are what a run repeats
    const timed = (times.length > 1 ? times.slice(1) : times).sort((a, b) => a - b);
    const perStep = timed[Math.floor(timed.length / 2)];
    return { steps: times.length, seconds_per_step: perStep, time_to_max_steps_s: perStep * total, measured_peak_mb: Math.round(process.resourceUsage().maxRSS / 1024) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
