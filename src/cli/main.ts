/** The `m3` command line: thin yargs commands over the library API. */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { infoCommand } from './commands/info';
import { encodeCommand } from './commands/encode';
import { pipelineCommand, trainCommand } from './commands/train';
import { evalCommand } from './commands/eval';
import { mineCommand } from './commands/mine';
import { scoreCommand } from './commands/score';
import { dataCommand } from './commands/data';
import { demoCommand } from './commands/demo';
import { reportCommand } from './commands/report';
import { planCommand } from './commands/plan';
import { exportCommand } from './commands/export';

export function cli(argv: string[]) {
  return yargs(argv)
    .scriptName('m3')
    .usage('$0 <command> [options]\n\nTrain and run M3 embedding models (dense, sparse and ColBERT retrieval from one encoder).')
    .option('backend', { type: 'string', describe: 'compute backend: auto|torch|wasm|tensorflow|cpu (env M3_BACKEND)', global: true })
    .option('device', { type: 'string', choices: ['cpu', 'cuda'], describe: 'device for the torch backend (env M3_DEVICE)', global: true })
    .option('debug', { type: 'boolean', describe: 'print stack traces of errors', global: true })
    .command(infoCommand as never)
    .command(encodeCommand as never)
    .command(trainCommand as never)
    .command(pipelineCommand as never)
    .command(planCommand as never)
    .command(evalCommand as never)
    .command(exportCommand as never)
    .command(mineCommand as never)
    .command(scoreCommand as never)
    .command(dataCommand as never)
    .command(demoCommand as never)
    .command(reportCommand as never)
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .recommendCommands()
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`m3: error: ${msg}\n(run "m3 --help" for usage)\n`);
      process.exit(2);
    })
    .help()
    .wrap(Math.min(110, process.stdout.columns || 110));
}

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  await cli(argv).parseAsync();
}
