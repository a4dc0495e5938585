/**
 * `m3 pipeline`: stages run in order (RetroMAE → pairs → unified in the paper), each initialised from the
 * previous stage's `final` model, each in OUT/<n>-<stage>; completed stages are skipped on a rerun.
 *
 *   output_dir: runs/tiny
 *   stages:
 *     - config: retromae.yaml
 *     - config: pairs.yaml
 *       set: [train.max_steps=20]      # overrides for this stage
 */
import * as path from 'path';
import { runFinetune } from '../finetune/runner';
import { runPretrain } from '../pretrain/runner';
import { isFinished } from '../train/checkpoint';
import { RunOptions, RunResult } from '../train/trainer';
import { loadConfig, readYamlConfig } from '../util/config-file';
import { distEnvFrom } from '../util/dist-env';
import { UserError } from '../util/errors';
import { acquireRunLock } from '../util/run-lock';
import { Infer, Schema } from '../util/schema';
import { stageDataCheck } from './stage-check';
import { loadStageConfig, StageConfig } from './stage-config';

const PIPELINE_SCHEMA = {
  output_dir: { type: 'string' },
  stages: { type: 'list', minItems: 1, of: { type: 'object', fields: {
    config: { type: 'string' },
    set: { type: 'list', of: { type: 'string' }, default: [] },
  } } },
} as const satisfies Schema;

export interface StageRun { name: string; config: StageConfig; result: RunResult | null }

/** A run of the pipeline's later stages only (the demo's ablation arms): stages before `index` are not run. */
export interface StartAt {
  /** The first stage to run (0-based); stage dirs keep their numbers (OUT/<index+1>-<stage>). */
  index: number;
  /** Overrides of that stage in place of `model.init=<previous final>`: where it starts, and what else changes. */
  sets: string[];
}

/**
 * Runs one stage config, holding its output_dir's lock from the start (before the model and data load, so
 * a second writer is refused at once), after a one-line check of its JSONL data (stage-check); under data
 * parallelism rank 0 holds the lock and prints the check for all ranks.
 */
export async function runStage(cfg: StageConfig, opts: Omit<RunOptions, 'outputDir'>): Promise<RunResult> {
  const lead = (distEnvFrom(process.env)?.rank ?? 0) === 0;
  const lock = lead && !opts.planOnly ? acquireRunLock(cfg.output_dir, `${cfg.stage} training`) : null;
  try {
    const summary = lead && !opts.planOnly ? await stageDataCheck(cfg) : null;
    if (summary) process.stderr.write(`${summary}\n`);
    return await (cfg.stage === 'retromae' ? runPretrain(cfg, opts) : runFinetune(cfg, opts));
  } finally {
    lock?.release();
  }
}

/**
 * The pipeline's stage configs, resolved as `runPipeline` runs them: `sets` apply to every stage
 * (`train.max_steps=5`) or, prefixed by a stage's name, to that one (`unified:train.max_steps=5`); each
 * stage writes OUT/<n>-<stage> and starts from the previous stage's `final` (or as `from` says).
 */
export function pipelineStages(file: string, sets: string[], from?: StartAt): StageConfig[] {
  const globalSets = sets.filter((s) => !/^[a-z]+:/.test(s));
  const outSet = globalSets.filter((s) => s.startsWith('output_dir='));
  const p = loadConfig<Infer<typeof PIPELINE_SCHEMA>>(file, PIPELINE_SCHEMA, outSet).config;
  const base = path.dirname(path.resolve(file));
  const configs: StageConfig[] = [];
  let previous: string | null = null;
  if (from && !(from.index >= 0 && from.index < p.stages.length)) throw new UserError(`${file}: no stage ${from.index + 1} to start from (${p.stages.length} stages)`);
  for (const [i, s] of p.stages.entries()) {
    if (from && i < from.index) continue;
    const stageFile = path.resolve(base, s.config);
    const probe = readYamlConfig(stageFile).value;
    const name = String(probe.stage);
    const stageSets = [
      ...s.set,
      ...globalSets.filter((x) => !x.startsWith('output_dir=')),
      ...sets.filter((x) => x.startsWith(`${name}:`)).map((x) => x.slice(name.length + 1)),
      `output_dir=${path.resolve(p.output_dir, `${i + 1}-${name}`)}`,
    ];
    if (i === from?.index) stageSets.push(...from.sets);
    else if (previous) stageSets.push(`model.init=${previous}`);
    const cfg = loadStageConfig(stageFile, stageSets);
    if (previous && cfg.model.init !== previous) throw new UserError(`${stageFile}: could not point model.init at the previous stage`);
    configs.push(cfg);
    previous = path.join(cfg.output_dir, 'final');
  }
  return configs;
}

/**
 * Runs the stages of `pipelineStages(file, sets, opts.from)` in order. `onStage` runs after each stage (the
 * demo evaluates there); `index` is the stage's place in the pipeline.
 */
export async function runPipeline(
  file: string, sets: string[], opts: { resume?: boolean; force?: boolean; from?: StartAt; onStage?: (run: StageRun, index: number) => Promise<void> } = {},
): Promise<StageRun[]> {
  const runs: StageRun[] = [];
  const stages = pipelineStages(file, sets, opts.from);
  // the pipeline's own output_dir (each stage locks its OUT/<n>-<stage> too); rank 0 alone under data parallelism
  const lock = (distEnvFrom(process.env)?.rank ?? 0) === 0 ? acquireRunLock(path.dirname(stages[0].output_dir), 'pipeline') : null;
  try {
    for (const [j, cfg] of stages.entries()) {
      const i = j + (opts.from?.index ?? 0);
      const name = cfg.stage;
      let result: RunResult | null = null;
      if (isFinished(cfg.output_dir)) process.stderr.write(`pipeline: stage ${i + 1} (${name}) already finished; skipping\n`);
      else result = await runStage(cfg, { resume: opts.resume, force: opts.force });
      const run = { name, config: cfg, result };
      runs.push(run);
      await opts.onStage?.(run, i);
      if (result?.stoppedEarly) break;
    }
  } finally {
    lock?.release();
  }
  return runs;
}
