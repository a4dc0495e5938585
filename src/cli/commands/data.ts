/** `m3 data prepare`: FlagEmbedding JSONL (or raw text) → tokenized Arrow by length bucket + manifest.json. */
import * as os from 'os';
import type { Argv, CommandModule } from 'yargs';
import { resolveModelDir } from '../../model/hub';
import { loadTokenizer } from '../../model/tokenizer';
import { prepareDataset } from '../../data/prepare';
import { DataFormat, DATA_FORMATS } from '../../data/records';
import { CommonArgs, handler, printJson } from '../run';

interface PrepareArgs extends CommonArgs {
  format: DataFormat;
  input: string[];
  model: string;
  output: string;
  queryMaxLen?: number;
  passageMaxLen?: number;
  maxLen?: number;
  skipInvalid?: boolean;
  smallThreshold: number;
  dropThreshold: number;
  text: boolean;
  queryInstruction?: string;
  queryInstructionFormat: string;
  workers: number;
}

const prepareCommand: CommandModule<object, PrepareArgs> = {
  command: 'prepare',
  describe: 'Tokenize JSONL into Arrow files split by length bucket, with manifest.json',
  builder: (y: Argv) => y
    .option('format', { type: 'string', choices: DATA_FORMATS, demandOption: true, describe: 'finetune {query,pos,neg,...} | pairs {query,pos} | pretrain {text}' })
    .option('input', { type: 'string', array: true, demandOption: true, describe: 'JSONL files (.jsonl, .json, .jsonl.gz) or directories of them' })
    .option('model', { type: 'string', demandOption: true, describe: 'model dir, tokenizer-only folder or Hub id org/name[@revision] (gives the tokenizer; from the Hub only its tokenizer files are fetched)' })
    .option('output', { type: 'string', demandOption: true, describe: 'dataset dir to write (replaced atomically)' })
    .option('query-max-len', { type: 'number', describe: 'query tokens incl. specials (default 32)' })
    .option('passage-max-len', { type: 'number', describe: 'passage tokens incl. specials (default 128)' })
    .option('max-len', { type: 'number', describe: 'pretrain block length incl. specials (default 512)' })
    .option('skip-invalid', { type: 'boolean', describe: 'skip invalid rows and report counts by reason, instead of stopping' })
    .option('small-threshold', { type: 'number', default: 0, describe: 'merge files of a directory that have fewer rows into one dataset' })
    .option('drop-threshold', { type: 'number', default: 0, describe: 'drop a merged dataset with fewer rows' })
    .option('text', { type: 'boolean', default: true, describe: 'keep positive texts (needed for shuffle_ratio); --no-text drops them' })
    .option('query-instruction', { type: 'string', describe: 'instruction before queries; rows\' "prompt" fields replace it and are used only when it is given ("" = prompts only)' })
    .option('query-instruction-format', { type: 'string', default: '{}{}', describe: 'how instruction and query are joined' })
    .option('workers', { type: 'number', default: os.availableParallelism(), defaultDescription: 'the number of cores', describe: 'threads that tokenize (the output is the same for any number)' })
    .example('$0 data prepare --format finetune --input train/ --model BAAI/bge-m3 --output data/ft', 'every .jsonl in train/ (a *-no_in_batch_neg dir turns off in-batch negatives); the Hub model\'s tokenizer')
    .example('$0 data prepare --format finetune --input a.jsonl b.jsonl.gz --model ./bge-m3 --output data/ft --query-max-len 64 --passage-max-len 512', 'longer texts')
    .example('$0 data prepare --format pairs --input pairs.jsonl --model ./m --output data/unsup --skip-invalid', 'weakly supervised pairs, skipping bad rows')
    .example('$0 data prepare --format pretrain --input corpus.jsonl.gz --model ./m --output data/rmae --max-len 512', 'RetroMAE blocks from {"text": ...} lines')
    .example('$0 data prepare --format pairs --input pairs/ --model ./m --output data/unsup --workers 4', 'tokenize on 4 threads') as never,
  handler: handler<PrepareArgs>(async (args) => {
    const tokenizerDir = await resolveModelDir(args.model, { files: 'tokenizer' });
    const tok = loadTokenizer(tokenizerDir);
    const m = await prepareDataset(args.input, tok, args.output, {
      format: args.format,
      queryMaxLen: args.queryMaxLen,
      passageMaxLen: args.passageMaxLen,
      maxLen: args.maxLen,
      skipInvalid: args.skipInvalid,
      smallThreshold: args.smallThreshold,
      dropThreshold: args.dropThreshold,
      keepText: args.text,
      queryInstruction: args.queryInstruction ?? null,
      queryInstructionFormat: args.queryInstructionFormat,
      workers: args.workers,
      tokenizerDir,
    });
    printJson({
      output: args.output,
      rows: m.rows,
      tokens: m.tokens,
      skipped: m.skipped,
      datasets: m.datasets.map((d) => ({ name: d.name, rows: d.rows, type: d.type, no_in_batch_neg: d.noInBatchNeg, buckets: Object.fromEntries(Object.entries(d.buckets).map(([b, fs]) => [b, fs.reduce((a, f) => a + f.rows, 0)])) })),
    });
  }),
};

export const dataCommand: CommandModule<object, object> = {
  command: 'data <action>',
  describe: 'Prepare training data (JSONL → tokenized Arrow)',
  builder: (y: Argv) => y
    .command(prepareCommand as never)
    .demandCommand(1, 'name an action: prepare')
    .example('$0 data prepare --format finetune --input train/ --model ./bge-m3 --output data/ft', 'prepare fine-tuning data') as never,
  handler: () => undefined,
};
