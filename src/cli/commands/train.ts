/**
 * `m3 train CONFIG` (one stage) and `m3 pipeline CONFIG` (stages in order); with --nproc-per-node either one
 * starts data-parallel workers instead (../launch.ts).
 */
import type { Argv, CommandModule } from 'yargs';
import { pipelineStages, runPipeline, runStage } from '../../recipes/pipeline';
import { loadStageConfig } from '../../recipes/stage-config';
import { LaunchArgs, launchOptions, withLauncher } from '../launch';
import { currentGroup } from '../../backend/dist';
import { CommonArgs, handler } from '../run';

/** The run's result line on stdout, from rank 0 only under data parallelism (one result per run, as torchrun collects stdout). */
function printResult(value: unknown): void {
  if ((currentGroup()?.rank ?? 0) === 0) process.stdout.write(JSON.stringify(value) + '\n');
}

interface TrainArgs extends CommonArgs, LaunchArgs { config: string; resume?: boolean; set?: string[]; force?: boolean }

const torchrun = (command: string) => `torchrun works too: torchrun --redirects 2 --tee 2 --nproc_per_node 2 --no_python npx m3 ${command} CONFIG `
  + "(torch 1.13's torchrun crashes in its own error handler without the two redirect flags)";

const common = (y: Argv, command: string) => launchOptions(y
  .positional('config', { type: 'string', describe: 'YAML config', demandOption: true })
  .option('resume', { type: 'boolean', describe: 'continue from the newest checkpoint (a finished run is left as it is)' })
  .option('force', { type: 'boolean', describe: 'run even when the plan says memory or disk will not suffice' })
  .option('set', { type: 'string', array: true, describe: 'override a config key: --set train.max_steps=100' })
  .group(['resume', 'set', 'force'], 'Options:'))
  .epilogue(torchrun(command));

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train <config>',
  describe: 'Run one training stage (retromae, pairs or unified) from a YAML config',
  builder: (y) => common(y, 'train')
    .example('$0 train configs/tiny/unified.yaml', 'unified fine-tuning on the shipped toy data')
    .example('$0 train configs/tiny/unified.yaml --set output_dir=runs/u --set train.max_steps=50', 'override keys')
    .example('$0 train my-unified.yaml --set model.init=BAAI/bge-m3', 'fine-tune a Hub model (fetched into the Hugging Face cache)')
    .example('$0 train configs/tiny/unified.yaml --resume', 'continue after a crash or Ctrl-C')
    .example('$0 train configs/tiny/unified.yaml --set train.report_to=tensorboard', 'also TensorBoard event files: tensorboard --logdir OUTPUT_DIR/runs')
    .example('$0 train configs/tiny/unified.yaml --nproc-per-node 2', 'data-parallel: 2 workers on this machine')
    .example('$0 train CONFIG --nproc-per-node 4 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1', 'two nodes (on the second: --node-rank 1)'),
  handler: withLauncher<TrainArgs>((args) => loadStageConfig(args.config, args.set ?? []), handler<TrainArgs>(async (args) => {
    const cfg = loadStageConfig(args.config, args.set ?? []);
    const r = await runStage(cfg, { resume: args.resume, force: args.force });
    printResult({ stage: cfg.stage, steps: r.steps, final: r.stoppedEarly ? null : r.finalDir, stopped_early: r.stoppedEarly });
  }, { backend: true })),
};

export const pipelineCommand: CommandModule<object, TrainArgs> = {
  command: 'pipeline <config>',
  describe: 'Run stages in order, each starting from the previous stage\'s final model',
  builder: (y) => common(y, 'pipeline')
    .example('$0 pipeline configs/tiny/pipeline.yaml', 'RetroMAE → pairs → unified on toy data')
    .example('$0 pipeline configs/tiny/pipeline.yaml --set train.max_steps=2', 'a key for every stage')
    .example('$0 pipeline configs/tiny/pipeline.yaml --set unified:train.max_steps=9', 'a key for one stage')
    .example('$0 pipeline configs/tiny/pipeline.yaml --nproc-per-node 2', 'data-parallel: 2 workers on this machine')
    .example('$0 pipeline CONFIG --nproc-per-node 4 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1', 'two nodes (on the second: --node-rank 1)'),
  handler: withLauncher<TrainArgs>((args) => pipelineStages(args.config, args.set ?? []), handler<TrainArgs>(async (args) => {
    const runs = await runPipeline(args.config, args.set ?? [], { resume: args.resume, force: args.force });
    printResult(runs.map((r) => ({ stage: r.name, output_dir: r.config.output_dir, steps: r.result?.steps ?? null, skipped: r.result === null })));
  }, { backend: true })),
};
