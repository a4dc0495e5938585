/** `m3 train CONFIG` (one stage) and `m3 pipeline CONFIG` (stages in order). */
import type { Argv, CommandModule } from 'yargs';
import { runPipeline, runStage } from '../../recipes/pipeline';
import { loadStageConfig } from '../../recipes/stage-config';
import { CommonArgs, handler } from '../run';

interface TrainArgs extends CommonArgs { config: string; resume?: boolean; set?: string[] }

const common = (y: Argv) => y
  .positional('config', { type: 'string', describe: 'YAML config', demandOption: true })
  .option('resume', { type: 'boolean', describe: 'continue from the newest checkpoint (a finished run is left as it is)' })
  .option('set', { type: 'string', array: true, describe: 'override a config key: --set train.max_steps=100' });

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train <config>',
  describe: 'Run one training stage (retromae, pairs or unified) from a YAML config',
  builder: (y) => common(y)
    .example('$0 train configs/tiny/unified.yaml', 'unified fine-tuning on the shipped toy data')
    .example('$0 train configs/tiny/unified.yaml --set output_dir=runs/u --set train.max_steps=50', 'override keys')
    .example('$0 train configs/tiny/unified.yaml --resume', 'continue after a crash or Ctrl-C'),
  handler: handler<TrainArgs>(async (args) => {
    const cfg = loadStageConfig(args.config, args.set ?? []);
    const r = await runStage(cfg, { resume: args.resume });
    process.stdout.write(JSON.stringify({ stage: cfg.stage, steps: r.steps, final: r.stoppedEarly ? null : r.finalDir, stopped_early: r.stoppedEarly }) + '\n');
  }, { backend: true }),
};

export const pipelineCommand: CommandModule<object, TrainArgs> = {
  command: 'pipeline <config>',
  describe: 'Run stages in order, each starting from the previous stage\'s final model',
  builder: (y) => common(y)
    .example('$0 pipeline configs/tiny/pipeline.yaml', 'RetroMAE → pairs → unified on toy data')
    .example('$0 pipeline configs/tiny/pipeline.yaml --set train.max_steps=2', 'a key for every stage')
    .example('$0 pipeline configs/tiny/pipeline.yaml --set unified:train.max_steps=9', 'a key for one stage'),
  handler: handler<TrainArgs>(async (args) => {
    const runs = await runPipeline(args.config, args.set ?? [], { resume: args.resume });
    process.stdout.write(JSON.stringify(runs.map((r) => ({ stage: r.name, output_dir: r.config.output_dir, steps: r.result?.steps ?? null, skipped: r.result === null }))) + '\n');
  }, { backend: true }),
};
