/** `m3 mine`: hard negatives for FlagEmbedding-format training data, by dense retrieval (hn_mine semantics). */
import * as path from 'path';
import type { CommandModule } from 'yargs';
import { check } from '../../util/errors';
import { writeFileAtomic } from '../../util/fsx';
import { openModel } from '../../model/m3';
import { maxInputLength } from '../../model/config';
import { DEFAULT_MAX_LENGTH } from '../../eval/beir';
import { mineHardNegatives, parseRange, readCandidatePool, readTrainingJsonl } from '../../eval/mine';
import { CommonArgs, handler } from '../run';

interface MineArgs extends CommonArgs {
  model: string;
  tokenizer?: string;
  input: string;
  corpus?: string;
  output?: string;
  range: string;
  negatives: number;
  maxLength: number;
  queryMaxLength?: number;
  batchSize: number;
  seed: number;
}

/** train.jsonl → train_minedHN.jsonl (FlagEmbedding's naming in its examples). */
export function defaultMinedPath(input: string): string {
  const ext = path.extname(input);
  return `${ext ? input.slice(0, -ext.length) : input}_minedHN${ext || '.jsonl'}`;
}

export const mineCommand: CommandModule<object, MineArgs> = {
  command: 'mine',
  describe: 'Mine hard negatives for {"query","pos","neg"} training data with a model (FlagEmbedding hn_mine semantics)',
  builder: (y) => y
    .option('model', { type: 'string', demandOption: true, describe: 'model dir or Hub id org/name[@revision], used for dense retrieval' })
    .option('tokenizer', { type: 'string', describe: 'tokenizer dir or Hub id (default: the model dir)' })
    .option('input', { type: 'string', demandOption: true, describe: 'training JSONL: {"query": str, "pos": [str], "neg"?: [str], ...}' })
    .option('corpus', { type: 'string', describe: 'candidate pool, JSONL of {"text": str} (default: every pos and neg text of --input)' })
    .option('output', { type: 'string', describe: 'JSONL to write (default: INPUT_minedHN.jsonl)' })
    .option('range', { type: 'string', default: '2-200', describe: 'START-END slice of each query\'s ranking to sample from, 0-based as hn_mine: 2-200 = ranks 3..200' })
    .option('negatives', { type: 'number', default: 15, describe: 'negatives per query' })
    .option('max-length', { type: 'number', default: DEFAULT_MAX_LENGTH, describe: 'passage truncation in tokens' })
    .option('query-max-length', { type: 'number', describe: 'query truncation in tokens (default: --max-length)' })
    .option('batch-size', { type: 'number', default: 32, describe: 'texts per encoder batch' })
    .option('seed', { type: 'number', default: 42, describe: 'seed of the random draws (same seed, same output)' })
    .example('$0 mine --model BAAI/bge-m3 --input train.jsonl --corpus corpus.jsonl --range 2-200 --negatives 15', 'writes train_minedHN.jsonl')
    .example('$0 mine --model ./m --input train.jsonl --range 10-210 --negatives 7 --output mined.jsonl', 'pool = the texts of train.jsonl') as never,
  handler: handler<MineArgs>(async (args) => {
    const range = parseRange(args.range);
    check(Number.isInteger(args.negatives) && args.negatives >= 1, `--negatives must be a positive integer, got ${args.negatives}`);
    check(Number.isInteger(args.seed), `--seed must be an integer, got ${args.seed}`);
    for (const [name, v] of [['--max-length', args.maxLength], ['--query-max-length', args.queryMaxLength]] as const) {
      if (v !== undefined) check(Number.isInteger(v) && v >= 2, `${name} must be an integer ≥ 2, got ${v}`);
    }
    check(Number.isInteger(args.batchSize) && args.batchSize >= 1, `--batch-size must be a positive integer, got ${args.batchSize}`);
    const examples = readTrainingJsonl(args.input);
    const pool = args.corpus ? readCandidatePool(args.corpus) : null;
    const model = await openModel(args.model, { tokenizer: args.tokenizer, requireTokenizer: true });
    const limit = maxInputLength(model.config);
    const maxLength = Math.min(args.maxLength, limit);
    const { rows, stats } = await mineHardNegatives(model, examples, pool, {
      range, negatives: args.negatives, seed: args.seed, maxLength, queryMaxLength: Math.min(args.queryMaxLength ?? maxLength, limit), batchSize: args.batchSize,
    });
    const output = path.resolve(args.output ?? defaultMinedPath(args.input));
    writeFileAtomic(output, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    process.stderr.write(`mined ${stats.examples} examples against a pool of ${stats.pool} texts: ${stats.fromRange} negatives from ranks ${range[0] + 1}-${range[1]}, ` +
      `${stats.filled} drawn at random to fill up${stats.short ? `, ${stats.short} examples short of ${args.negatives} (pool too small)` : ''} → ${output}\n`);
  }, { backend: true }),
};
