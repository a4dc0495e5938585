/**
 * Runs every golden case (../shared/golden, $M3_GOLDEN_DIR or --dir) on one backend and device, outside
 * jest: the device bundle's `golden` launcher runs it where there is no jest and no repo. One line per
 * case (`--json`: exactly one JSON object per case: {case, kind, backend, device, ok, error?, seconds});
 * exit code 1 when any case failed.
 *
 *   node -r ./bin/register.js scripts/golden-run.ts --backend wasm
 *   OUT/golden --backend torch --device cuda --json
 */
import * as path from 'path';
import yargs from 'yargs';
import { Device, useBackend } from '../src/backend';
import { GOLDEN_DIR, KindRunner, listCases } from '../test/golden/common';

// The same dispatch as test/golden.test.ts: on case.json's `kind`, never on the folder name.
const RUNNERS: Record<string, () => KindRunner> = {
  encoder: () => require('../test/golden/encoder').runEncoderCase,
  m3_loss: () => require('../test/golden/m3_loss').runM3LossCase,
  retromae: () => require('../test/golden/retromae').runRetroMAECase,
  train_step: () => require('../test/golden/train_step').runTrainStepCase,
};

export interface CaseResult {
  case: string;
  kind: string;
  backend: string;
  device: Device;
  ok: boolean;
  error?: string;
  seconds: number;
}

export async function main(argv: string[]): Promise<void> {
  const args = await yargs(argv)
    .scriptName('golden')
    .usage('$0 [--backend B] [--device D] [--dir DIR] [--json]\n\nRuns every golden case on one backend; exit code 1 when any fails.')
    .option('backend', { type: 'string', default: process.env.M3_BACKEND ?? 'auto', describe: 'auto|torch|wasm|cpu' })
    .option('device', { type: 'string', choices: ['cpu', 'cuda'], default: process.env.M3_DEVICE ?? 'cpu', describe: 'device for the torch backend' })
    .option('dir', { type: 'string', default: GOLDEN_DIR, describe: 'golden cases ($M3_GOLDEN_DIR, else ../shared/golden)' })
    .option('json', { type: 'boolean', describe: 'one JSON object per case on stdout, nothing else' })
    .strict()
    .fail((msg, err) => {
      if (err) throw err;
      fail(msg);
    })
    .help()
    .parseAsync();
  const device = args.device as Device;
  let cases;
  let backend: string;
  try {
    cases = listCases(path.resolve(args.dir));
    backend = await useBackend(args.backend, device);
  } catch (e) {
    return fail((e as Error).message.split('\n')[0]);
  }
  const results: CaseResult[] = [];
  for (const c of cases) {
    const started = performance.now();
    const result: CaseResult = { case: c.name, kind: c.spec.kind, backend, device, ok: true, seconds: 0 };
    try {
      const runner = RUNNERS[c.spec.kind];
      if (!runner) throw new Error(`no runner for kind '${c.spec.kind}'`);
      await runner()(c);
    } catch (e) {
      result.ok = false;
      result.error = (e as Error).message.split('\n')[0];
    }
    result.seconds = Number(((performance.now() - started) / 1000).toFixed(3));
    results.push(result);
    if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else process.stdout.write(`${result.ok ? 'ok  ' : 'FAIL'}  ${c.name} (${c.spec.kind}) ${result.seconds.toFixed(1)} s${result.error ? `: ${result.error}` : ''}\n`);
  }
  const failed = results.filter((r) => !r.ok).length;
  if (!args.json) process.stdout.write(`golden: ${results.length - failed} of ${results.length} cases passed on ${backend}/${device}\n`);
  if (failed > 0 || results.length === 0) process.exitCode = 1;
}

function fail(msg: string): never {
  process.stderr.write(`golden: error: ${msg}\n`);
  process.exit(1);
}

if (require.main === module) void main(process.argv.slice(2));
