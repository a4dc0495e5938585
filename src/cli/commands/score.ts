/** `m3 score`: teacher scores (pos_scores / neg_scores) for training data from a cross-encoder reranker. */
import * as path from 'path';
import type { CommandModule } from 'yargs';
import { check } from '../../util/errors';
import { openReranker } from '../../model/reranker';
import { DEFAULT_RERANK_MAX_LENGTH, scoreTrainingFile } from '../../eval/score';
import { CommonArgs, handler } from '../run';

interface ScoreArgs extends CommonArgs {
  model: string;
  tokenizer?: string;
  input: string;
  output: string;
  maxLength: number;
  batchSize: number;
}

export const scoreCommand: CommandModule<object, ScoreArgs> = {
  command: 'score',
  describe: 'Add reranker teacher scores (pos_scores / neg_scores) to training data, as FlagEmbedding\'s add_reranker_score.py',
  builder: (y) => y
    .option('model', { type: 'string', demandOption: true, describe: 'cross-encoder dir or Hub id (org/name[@revision]): BertForSequenceClassification or XLMRobertaForSequenceClassification with one label (bge-reranker-base / large / v2-m3)' })
    .option('tokenizer', { type: 'string', describe: 'tokenizer dir or Hub id (default: the model\'s)' })
    .option('input', { type: 'string', demandOption: true, describe: 'training JSONL (.jsonl or .jsonl.gz): {"query": str, "pos": [str], "neg": [str], ...}' })
    .option('output', { type: 'string', demandOption: true, describe: 'JSONL to write: the input lines with pos_scores / neg_scores (raw logits) in the order of pos / neg' })
    .option('max-length', { type: 'number', default: DEFAULT_RERANK_MAX_LENGTH, describe: 'tokens per (query, passage) pair, specials included; the query is cut to 3/4 of it first (capped by the model)' })
    .option('batch-size', { type: 'number', default: 32, describe: 'pairs per forward pass' })
    .example('$0 score --model ./bge-reranker-v2-m3 --input train_minedHN.jsonl --output train_scored.jsonl', 'teacher scores for data.knowledge_distillation')
    .example('$0 score --model BAAI/bge-reranker-v2-m3 --input train.jsonl --output scored.jsonl', 'a Hub id: fetched into the Hugging Face cache')
    .example('$0 score --model ./bge-reranker-base --input train.jsonl --output scored.jsonl --max-length 256 --batch-size 64', 'shorter pairs, bigger batches')
    .example('$0 score --model ./bge-reranker-v2-m3 --input train.jsonl --output scored.jsonl   # again after a crash', 'continues where the killed run stopped') as never,
  handler: handler<ScoreArgs>(async (args) => {
    check(Number.isInteger(args.maxLength) && args.maxLength >= 1, `--max-length must be a positive integer, got ${args.maxLength}`);
    check(Number.isInteger(args.batchSize) && args.batchSize >= 1, `--batch-size must be a positive integer, got ${args.batchSize}`);
    const reranker = await openReranker(args.model, { tokenizer: args.tokenizer });
    const output = path.resolve(args.output);
    const s = await scoreTrainingFile(reranker, args.input, output, { maxLength: args.maxLength, batchSize: args.batchSize });
    process.stderr.write(`scored ${s.pairs} pairs of ${s.examples} examples${s.resumed ? ` (${s.resumed} examples from the interrupted run kept)` : ''} → ${output}\n`);
  }, { backend: true }),
};
