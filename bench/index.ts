/**
 * Benchmarks (`npm run bench -- NAME [--json] [--backend B]`): numbers that matter live here, not in
 * timed tests. Each prints a table on stderr-free stdout, or JSON lines with --json.
 */
import yargs from 'yargs';

const BENCHES: Record<string, () => Promise<{ run(args: Record<string, unknown>): Promise<void> }>> = {
  encode: async () => import('./encode'),
  data: async () => import('./data'),
  train: async () => import('./train'),
  eval: async () => import('./eval'),
  plan: async () => import('./plan'),
  dist: async () => import('./dist'),
  overhead: async () => import('./overhead'),
  nccl: async () => import('./nccl'),
};

export async function main(argv: string[]): Promise<void> {
  const args = await yargs(argv)
    .scriptName('npm run bench --')
    .command('$0 <name>', 'run a benchmark', (y) => y.positional('name', { choices: Object.keys(BENCHES), type: 'string' }))
    .option('json', { type: 'boolean', describe: 'one JSON object per measurement on stdout' })
    .option('backend', { type: 'string', describe: 'only this backend (default: every available one; encode also takes pytorch, onnxruntime, onnxruntime-fp32, onnxruntime-int8)' })
    .option('model', { type: 'string', describe: 'train: bench-small (default), demo-small, bge-m3, bge-m3-structure, bge-m3-gpu or long-bucket; plan: one case (bench-small, bge-m3, demo-retromae, demo-pairs, demo-unified)' })
    .option('steps', { type: 'number', describe: 'train: timed steps (≥ 5; long-bucket ≥ 1)' })
    .option('baseline', { type: 'boolean', default: true, describe: 'train, encode: also run the PyTorch baseline (--no-baseline to skip)' })
    .option('device', { type: 'string', choices: ['cpu', 'cuda'], describe: 'train, nccl: the torch backend\'s device (default cpu)' })
    .option('bf16', { type: 'boolean', describe: 'train: bf16 autocast (torch backend; PyTorch under torch.autocast too)' })
    .option('shape', { type: 'string', describe: 'train: JSON overriding fields of the --model point, e.g. \'{"layers":2}\'' })
    .option('child', { type: 'boolean', hidden: true })
    .example('npm run bench -- encode', 'encoding throughput per backend, next to PyTorch inference and onnxruntime')
    .example('npm run bench -- data', 'prepare tokens/s and batch-read rows/s')
    .example('npm run bench -- train --json', 'bench-small step time per backend and the PyTorch baseline')
    .example('npm run bench -- train --backend torch --model bge-m3-structure --json', 'what a step of bge-m3\'s structure costs the host: TF.js kernels, addon and ATen calls, host ms')
    .example('npm run bench -- dist', 'all_reduce bandwidth, 2 processes, m3 (gloo) next to torch.distributed')
    .example('npm run bench -- train --device cuda --bf16 --model bge-m3-gpu', 'the GPU headline next to PyTorch: tokens/s and peak memory ratios')
    .example('npm run bench -- nccl --device cuda', 'world-size-1 NCCL process group smoke test')
    .example('npm run bench -- plan', 'the resource plan\'s peak memory next to the measured peak RSS')
    .strict()
    .help()
    .parseAsync();
  const bench = await BENCHES[args.name as string]();
  await bench.run(args);
}
