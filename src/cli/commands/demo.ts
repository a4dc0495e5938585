/** `m3 demo` (= `npm start`): the demo pipeline with an evaluation before training and after each stage. */
import * as path from 'path';
import type { CommandModule } from 'yargs';
import { runDemo } from '../../recipes/demo';
import { packageRoot } from '../../util/package-root';
import { CommonArgs, handler } from '../run';

interface DemoArgs extends CommonArgs { config: string; eval?: string; outputDir: string; set?: string[]; evalSet?: string[]; ablations: boolean }

const DEMO_DIR = path.join(packageRoot(), 'configs', 'demo');

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe: 'Train a small M3 model from scratch on NFCorpus (RetroMAE → pairs → unified), evaluating every stage',
  builder: (y) => y
    .option('config', { type: 'string', default: path.relative(process.cwd(), path.join(DEMO_DIR, 'pipeline.yaml')) || 'pipeline.yaml', describe: 'pipeline YAML' })
    .option('eval', { type: 'string', describe: 'YAML with the eval section\'s keys (default: eval.yaml beside the pipeline)' })
    .option('output-dir', { type: 'string', default: 'runs/demo', describe: 'where stages, results.json and report.html go' })
    .option('set', { type: 'string', array: true, describe: 'override a stage key: --set train.max_steps=10, --set unified:train.max_steps=5' })
    .option('eval-set', { type: 'string', array: true, describe: 'override an evaluation key: --eval-set max_queries=50' })
    .option('ablations', { type: 'boolean', default: false, describe: 'also train and evaluate, with the same budget, into OUT/ablations: without RetroMAE (the later stages from the untrained model) and without self-distillation (the last stage again)' })
    .example('$0 demo', 'the full demo into runs/demo (a rerun skips finished stages)')
    .example('$0 demo --set train.max_steps=2 --eval-set max_queries=20 --output-dir runs/demo-quick', 'a quick look')
    .example('$0 demo --ablations', 'the demo (reused when finished), then what RetroMAE and self-distillation each add') as never,
  handler: handler<DemoArgs>(async (args) => {
    await runDemo({
      pipeline: args.config,
      evalConfig: args.eval ?? path.join(path.dirname(path.resolve(args.config)), 'eval.yaml'),
      outputDir: args.outputDir,
      sets: args.set,
      evalSets: args.evalSet,
      ablations: args.ablations,
    });
  }, { backend: true }),
};
