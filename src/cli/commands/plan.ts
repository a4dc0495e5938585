/** `m3 plan CONFIG`: what a stage will need (memory, disk, tokens per step) before running it; `--probe` times a few real steps. */
import type { CommandModule } from 'yargs';
import { planStage } from '../../recipes/plan';
import { loadStageConfig } from '../../recipes/stage-config';
import { formatPlan } from '../../train/plan';
import { CommonArgs, handler, printJson } from '../run';

interface PlanArgs extends CommonArgs { config: string; set?: string[]; json?: boolean; probe?: boolean; probeSteps: number }

export const planCommand: CommandModule<object, PlanArgs> = {
  command: 'plan <config>',
  describe: 'Show the resources a training stage needs (parameters, memory, disk, tokens per step) before running it',
  builder: (y) => y
    .positional('config', { type: 'string', describe: 'stage YAML config (as for m3 train)', demandOption: true })
    .option('set', { type: 'string', array: true, describe: 'override a config key, as for m3 train' })
    .option('json', { type: 'boolean', describe: 'print exactly one JSON object on stdout' })
    .option('probe', { type: 'boolean', describe: 'also run a few real steps (in a scratch dir) for seconds per step, time to max_steps and the peak they reach' })
    .option('probe-steps', { type: 'number', default: 3, describe: 'steps the probe runs' })
    .example('$0 plan configs/tiny/unified.yaml', 'memory and disk of the toy unified stage')
    .example('$0 plan configs/paper/stage3.yaml --set data.batch_size=4 --json', '{"params": ..., "peak_memory_mb": ..., ...}')
    .example('$0 plan configs/demo/unified.yaml --probe', 'with seconds per step from 3 real steps') as never,
  handler: handler<PlanArgs>(async (args) => {
    const cfg = loadStageConfig(args.config, args.set ?? []);
    const plan = await planStage(cfg, { probeSteps: args.probe ? Math.max(2, Math.floor(args.probeSteps)) : 0 });
    if (args.json) return printJson(plan);
    process.stdout.write(formatPlan(plan) + '\n');
    if (plan.probe) {
      const p = plan.probe;
      const eta = p.time_to_max_steps_s >= 3600 ? `${(p.time_to_max_steps_s / 3600).toFixed(1)} h` : `${(p.time_to_max_steps_s / 60).toFixed(1)} min`;
      process.stdout.write(`  probe: ${p.seconds_per_step.toFixed(2)} s per step over ${p.steps} steps → ${eta} for ${plan.steps} steps; peak RSS reached ${p.measured_peak_mb} MB\n`);
    }
  }, { backend: true }),
};
