/** `m3 report RUN_DIR`: a self-contained HTML page of a run's training curves and evaluation results. */
import type { CommandModule } from 'yargs';
import { writeReport } from '../../eval/report';
import { CommonArgs, handler } from '../run';

interface ReportArgs extends CommonArgs { runDir: string; output?: string }

export const reportCommand: CommandModule<object, ReportArgs> = {
  command: 'report <run-dir>',
  describe: 'Write a self-contained HTML report (loss, lr, throughput, evaluation charts) of a training run',
  builder: (y) => y
    .positional('run-dir', { type: 'string', demandOption: true, describe: 'a pipeline output dir (stage dirs with metrics.jsonl, results.json) or one stage\'s' })
    .option('output', { type: 'string', describe: 'HTML file to write (default: RUN_DIR/report.html)' })
    .example('$0 report runs/demo', 'writes runs/demo/report.html')
    .example('$0 report runs/tiny/unified --output unified.html', 'one stage') as never,
  handler: handler<ReportArgs>((args) => {
    process.stdout.write(writeReport(args.runDir, args.output) + '\n');
  }),
};
