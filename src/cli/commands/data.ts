/**
 * `m3 data prepare`: FlagEmbedding JSONL (or raw text) → tokenized Arrow by length bucket + manifest.json;
 * `m3 data check`: what in the JSONL would hurt or stop training, before it starts.
 */
import * as os from 'os';
import type { Argv, CommandModule } from 'yargs';
import { resolveModelDir } from '../../model/hub';
import { loadTokenizer } from '../../model/tokenizer';
import { prepareDataset } from '../../data/prepare';
import { checkJson, checkTrainingData, formatCheck } from '../../data/check';
import { DataFormat, DATA_FORMATS } from '../../data/records';
import { loadBeirQueries } from '../../eval/data';
import { UserError } from '../../util/errors';
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

interface CheckArgs extends CommonArgs {
  input: string[];
  format?: DataFormat;
  groupSize?: number;
  tokenizer?: string;
  maxLength?: number;
  queryMaxLength?: number;
  eval?: string;
  evalSplit: string;
  skipInvalid?: boolean;
  examples: number;
  json?: boolean;
}

const checkCommand: CommandModule<object, CheckArgs> = {
  command: 'check',
  describe: 'Check training JSONL before training: duplicates, false negatives, empty or over-long texts, short groups, score lengths, leakage',
  builder: (y: Argv) => y
    .option('input', { type: 'string', array: true, demandOption: true, describe: 'JSONL files (.jsonl, .json, .jsonl.gz) or directories of them' })
    .option('format', { type: 'string', choices: DATA_FORMATS, describe: 'finetune | pairs | pretrain (default: from the first line: query+neg, query, text)' })
    .option('group-size', { type: 'number', describe: 'train_group_size for the short-group check (default 8; 1 for pairs); a row\'s train_group_size column wins' })
    .option('tokenizer', { type: 'string', describe: 'model dir, tokenizer folder or Hub id: count texts over --max-length tokens' })
    .option('max-length', { type: 'number', describe: 'passage max length in tokens, specials included (with --tokenizer)' })
    .option('query-max-length', { type: 'number', describe: 'query max length in tokens (default: --max-length)' })
    .option('eval', { type: 'string', describe: 'BEIR folder: count training queries and positives that are evaluation queries (leakage)' })
    .option('eval-split', { type: 'string', default: 'dev', describe: 'the evaluation split: qrels/<split>.tsv names its queries' })
    .option('skip-invalid', { type: 'boolean', describe: 'invalid lines are skipped in training (data.skip_invalid): warnings, not errors' })
    .option('examples', { type: 'number', default: 3, describe: 'examples shown per check' })
    .option('json', { type: 'boolean', describe: 'print one JSON object: the counts, examples and errors' })
    .implies('tokenizer', 'max-length')
    .implies('max-length', 'tokenizer')
    .implies('query-max-length', 'tokenizer')
    .example('$0 data check --input train.jsonl', 'counts and examples on stdout; exit 1 only when training would fail')
    .example('$0 data check --input train.jsonl --tokenizer ./bge-m3 --query-max-length 512 --max-length 8192', 'also the texts training truncates')
    .example('$0 data check --input train/ --eval ./nfcorpus --eval-split test --json', 'leakage into the test queries, as JSON')
    .epilogue('Exit code 1 when training would fail: lines the trainer refuses (malformed JSON, missing or mistyped fields, '
      + 'score arrays of the wrong length; not with --skip-invalid), rows without negatives where a group needs them, no rows. '
      + 'Near-duplicates compare text after NFKC, lower-casing, and turning every run of non-letters/digits into one space.') as never,
  handler: handler<CheckArgs>(async (args) => {
    if (args.examples !== undefined && !(Number.isInteger(args.examples) && args.examples >= 0)) throw new UserError(`--examples must be an integer ≥ 0, got ${args.examples}`);
    const c = await checkTrainingData(args.input, {
      format: args.format,
      groupSize: args.groupSize,
      tokenizer: args.tokenizer ? loadTokenizer(await resolveModelDir(args.tokenizer, { files: 'tokenizer' })) : undefined,
      maxLength: args.maxLength,
      queryMaxLength: args.queryMaxLength,
      evalQueries: args.eval ? loadBeirQueries(args.eval, args.evalSplit) : undefined,
      skipInvalid: args.skipInvalid,
      examples: args.examples,
    });
    if (args.json) printJson(checkJson(c));
    else process.stdout.write(formatCheck(c));
    if (c.errors.length) throw new UserError(`training would fail: ${c.errors[0]}${c.errors.length > 1 ? ` (and ${c.errors.length - 1} more, see the report)` : ''}`);
  }),
};

export const dataCommand: CommandModule<object, object> = {
  command: 'data <action>',
  describe: 'Prepare training data (JSONL → tokenized Arrow), or check it before training',
  builder: (y: Argv) => y
    .command(prepareCommand as never)
    .command(checkCommand as never)
    .demandCommand(1, 'name an action: prepare, check')
    .example('$0 data prepare --format finetune --input train/ --model ./bge-m3 --output data/ft', 'prepare fine-tuning data')
    .example('$0 data check --input train.jsonl --eval ./nfcorpus', 'check it first') as never,
  handler: () => undefined,
};
