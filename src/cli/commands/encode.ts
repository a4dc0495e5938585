/** `m3 encode`: JSONL of texts (or input_ids) → JSONL of dense / sparse / colbert outputs, in input order. */
import * as path from 'path';
import type { CommandModule } from 'yargs';
import { check, UserError } from '../../util/errors';
import { writeFileAtomic } from '../../util/fsx';
import { Progress } from '../../util/progress';
import { openModel } from '../../model/m3';
import { encodeIds, OUTPUT_KINDS, OutputKind } from '../../model/inference';
import { jsonObjects, readTextFile } from '../../eval/files';
import { CommonArgs, handler } from '../run';

interface EncodeArgs extends CommonArgs {
  model: string;
  input: string;
  output: string;
  tokenizer?: string;
  field: string;
  return: string;
  maxLength?: number;
  batchSize: number;
  mcls?: boolean;
}

const CHUNK = 4096; // lines sorted and encoded together: bounded memory for any input size

export const encodeCommand: CommandModule<object, EncodeArgs> = {
  command: 'encode',
  describe: 'Encode a JSONL file of texts (or input_ids) into dense / sparse / colbert outputs',
  builder: (y) => y
    .option('model', { type: 'string', demandOption: true, describe: 'model dir (HF / FlagEmbedding / m3 layout) or Hub id org/name[@revision]' })
    .option('input', { type: 'string', demandOption: true, describe: 'JSONL, one object per line with a text field or input_ids' })
    .option('output', { type: 'string', demandOption: true, describe: 'JSONL to write, one line per input line' })
    .option('tokenizer', { type: 'string', describe: 'tokenizer dir or Hub id (default: the model dir)' })
    .option('field', { type: 'string', default: 'text', describe: 'name of the text field' })
    .option('return', { type: 'string', default: 'dense', describe: 'comma list of dense,sparse,colbert' })
    .option('max-length', { type: 'number', describe: 'truncate inputs to this many tokens (default: the model maximum)' })
    .option('batch-size', { type: 'number', default: 32 })
    .option('mcls', { type: 'boolean', describe: 'multiple CLS for long inputs (a CLS every 256 tokens; dense only)' })
    .example('$0 encode --model ./bge-m3 --input docs.jsonl --output emb.jsonl', 'dense vectors of {"text": ...} lines')
    .example('$0 encode --model BAAI/bge-m3 --input docs.jsonl --output emb.jsonl', 'from the Hub, through the Hugging Face cache (HF_HOME, HF_TOKEN, HF_HUB_OFFLINE=1)')
    .example('$0 encode --model ./bge-m3 --input q.jsonl --output q.out.jsonl --return dense,sparse,colbert', 'all three outputs')
    .example('$0 encode --model ./m --input ids.jsonl --output o.jsonl', 'lines may carry {"input_ids": [0, 581, 2]} instead of text') as never,
  handler: handler<EncodeArgs>(async (args) => {
    const outputs = args.return.split(',').map((s) => s.trim()).filter(Boolean);
    for (const o of outputs) check(OUTPUT_KINDS.includes(o as OutputKind), `--return: unknown output '${o}' (choose from ${OUTPUT_KINDS.join(', ')})`);
    check(Number.isInteger(args.batchSize) && args.batchSize > 0, `--batch-size must be a positive integer, got ${args.batchSize}`);
    if (args.maxLength !== undefined) check(Number.isInteger(args.maxLength) && args.maxLength >= 2, `--max-length must be an integer ≥ 2, got ${args.maxLength}`);
    const model = await openModel(args.model, { tokenizer: args.tokenizer });
    const lines = readInputLines(args.input);
    const seqs = lines.map(({ value, line }) => toIds(value, line, args, model.tokenizer));
    const progress = new Progress('encode', seqs.length, 'seq');
    const out: string[] = [];
    for (let s = 0; s < seqs.length; s += CHUNK) {
      const chunk = seqs.slice(s, s + CHUNK);
      const embs = await encodeIds(model, chunk, {
        outputs: outputs as OutputKind[], maxLength: args.maxLength, batchSize: args.batchSize, mcls: args.mcls,
        onBatch: (done) => progress.update(s + done),
      });
      for (const e of embs) {
        out.push(JSON.stringify({
          ...(e.dense ? { dense: Array.from(e.dense) } : {}),
          ...(e.sparse ? { sparse: e.sparse } : {}),
          ...(e.colbert ? { colbert: e.colbert.map((v) => Array.from(v)) } : {}),
        }));
      }
    }
    progress.done();
    writeFileAtomic(path.resolve(args.output), out.join('\n') + (out.length ? '\n' : ''));
  }, { backend: true }),
};

function readInputLines(file: string): { value: Record<string, unknown>; line: string }[] {
  const out = [...jsonObjects(file, readTextFile(file, 'input file'))].map(({ value, where }) => ({ value, line: where }));
  if (out.length === 0) throw new UserError(`${file}: no input lines`);
  return out;
}

function toIds(v: Record<string, unknown>, where: string, args: EncodeArgs, tok: { encode(t: string, n: number): number[] } | null): number[] {
  if (v.input_ids !== undefined) {
    const ids = v.input_ids;
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => Number.isInteger(x))) throw new UserError(`${where}: 'input_ids' must be a non-empty list of integers`);
    return ids as number[];
  }
  const text = v[args.field];
  if (text === undefined) throw new UserError(`${where}: missing field '${args.field}' (or 'input_ids')`);
  if (typeof text !== 'string') throw new UserError(`${where}: field '${args.field}' must be a string`);
  if (!tok) throw new UserError(`${args.model}: no tokenizer files for text input; pass --tokenizer DIR or give input_ids`);
  return tok.encode(text, args.mcls ? 1 << 30 : args.maxLength ?? 1 << 30);
}
