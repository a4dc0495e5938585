import * as fs from 'fs';
import * as path from 'path';
import yargs from 'yargs';
import { dataCommand } from '../../src/cli/commands/data';
import { readManifest } from '../../src/data/manifest';
import { BERT_DIR, FE, tmpDir, writeJsonl } from './helpers';

/** Runs `m3 <argv>` with only the data command registered; captures stdout, stderr and the exit code. */
async function m3(argv: string[]): Promise<{ out: string; err: string; code: number }> {
  let out = '';
  let err = '';
  const so = jest.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  const se = jest.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  const logs = jest.spyOn(console, 'log').mockImplementation((...a) => void (out += a.join(' ') + '\n'));
  const errs = jest.spyOn(console, 'error').mockImplementation((...a) => void (err += a.join(' ') + '\n'));
  process.exitCode = 0;
  let code = 0;
  try {
    await yargs(argv).scriptName('m3').command(dataCommand as never).demandCommand(1).strict().exitProcess(false)
      .fail((msg, e) => {
        if (e) throw e;
        err += msg;
        code = 2;
      })
      .help().parseAsync();
  } finally {
    so.mockRestore();
    se.mockRestore();
    logs.mockRestore();
    errs.mockRestore();
  }
  code = code || Number(process.exitCode ?? 0);
  process.exitCode = 0;
  return { out, err, code };
}

describe('m3 data prepare', () => {
  test('prepares, prints a JSON summary on stdout, writes the manifest', async () => {
    const out = path.join(tmpDir(), 'ds');
    const r = await m3(['data', 'prepare', '--format', 'finetune', '--input', path.join(FE, 'toy_finetune_data.jsonl'), path.join(FE, 'example_data/retrieval'),
      '--model', BERT_DIR, '--output', out, '--query-max-len', '16', '--passage-max-len', '64']);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.out);
    expect(summary).toMatchObject({ output: out, rows: 30 });
    expect(summary.datasets.map((d: { name: string }) => d.name)).toEqual(['flagembedding/toy_finetune_data', 'retrieval/msmarco', 'retrieval/nli']);
    expect(readManifest(out).maxLengths).toEqual({ query: 16, passage: 64 });
  });

  test('bad input: one line on stderr naming file:line and field, exit 1, no output', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(file, '{"query": "a", "pos": ["b"], "neg": []}\n{"query": "a", "pos": [], "neg": []}\n');
    const out = path.join(dir, 'ds');
    const r = await m3(['data', 'prepare', '--format', 'finetune', '--input', file, '--model', BERT_DIR, '--output', out]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`m3: error: ${file}:2: pos: is empty; every query needs at least one positive\n`);
    expect(r.out).toBe('');
    expect(fs.existsSync(out)).toBe(false);
    const s = await m3(['data', 'prepare', '--format', 'finetune', '--input', file, '--model', BERT_DIR, '--output', out, '--skip-invalid']);
    expect(s.code).toBe(0);
    expect(s.err).toContain('skipped invalid input: empty_pos 1');
    expect(JSON.parse(s.out)).toMatchObject({ rows: 1, skipped: { empty_pos: 1 } });
  });

  test('a missing tokenizer is a one-line error naming the dir', async () => {
    const dir = tmpDir();
    const r = await m3(['data', 'prepare', '--format', 'pretrain', '--input', path.join(FE, 'toy_pretrain_data.jsonl'), '--model', dir, '--output', path.join(dir, 'o')]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`m3: error: ${dir}: no tokenizer files (tokenizer.json or vocab.txt)\n`);
  });

  test('--help shows the options and examples', async () => {
    const r = await m3(['data', 'prepare', '--help']);
    for (const s of ['--format', '--input', '--model', '--output', '--query-max-len', '--passage-max-len', '--max-len', '--skip-invalid', '--workers', 'Examples:', 'no_in_batch_neg']) expect(r.out).toContain(s);
  });
});

describe('m3 data check', () => {
  /** A BEIR folder's queries and qrels (the check reads no corpus): dev judges d1, train judges t1. */
  function beir(): string {
    const dir = tmpDir();
    writeJsonl(path.join(dir, 'queries.jsonl'), [{ _id: 'd1', text: 'Is coffee bad?' }, { _id: 't1', text: 'what about tea' }]);
    fs.mkdirSync(path.join(dir, 'qrels'));
    fs.writeFileSync(path.join(dir, 'qrels/dev.tsv'), 'query-id\tcorpus-id\tscore\nd1\tdoc1\t1\n');
    fs.writeFileSync(path.join(dir, 'qrels/train.tsv'), 'query-id\tcorpus-id\tscore\nt1\tdoc2\t1\n');
    return dir;
  }
  const train = () => writeJsonl(path.join(tmpDir(), 'train.jsonl'), [
    { query: 'is coffee bad', pos: ['Coffee is fine.'], neg: ['Coffee is fine.', 'tea'] },
    { query: 'What about tea?', pos: ['p'], neg: ['a', 'b'] },
  ]);

  test('--json: stdout is exactly one JSON object with the counts; warnings exit 0; leakage only into the split asked for', async () => {
    const file = train();
    const r = await m3(['data', 'check', '--input', file, '--eval', beir(), '--json', '--group-size', '3', '--tokenizer', BERT_DIR, '--max-length', '4']);
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    const j = JSON.parse(r.out);
    expect(j).toMatchObject({
      duplicate_queries: 0, pos_neg_overlap: 1, false_negatives: 1, empty_texts: 0, truncated: 4, short_groups: 0, score_length_mismatch: 0, leakage: 1,
      invalid_lines: 0, format: 'finetune', files: [file], rows: 2, texts: 8, scored_rows: 0, truncated_share: 0.5, errors: [],
    });
    expect(j.examples.leakage).toEqual([{ file, line: 1, field: 'query', text: 'is coffee bad', note: "eval query 'd1'" }]);
    expect(Object.keys(j.examples).sort()).toEqual(['false_negatives', 'leakage', 'pos_neg_overlap', 'truncated']);
    const t = await m3(['data', 'check', '--input', file, '--eval', beir(), '--eval-split', 'train', '--json']);
    expect(JSON.parse(t.out)).toMatchObject({ leakage: 1, truncated: null, examples: { leakage: [{ line: 2, note: "eval query 't1'" }] } });
  });

  test('the report on stdout; what would fail training exits 1 with one line on stderr, --skip-invalid makes it a warning', async () => {
    const file = writeJsonl(path.join(tmpDir(), 'bad.jsonl'), [{ query: 'q', pos: ['p'], neg: ['n'], pos_scores: [1], neg_scores: [1, 2] }, { query: 'r', pos: ['s'], neg: ['t'] }]);
    const r = await m3(['data', 'check', '--input', file, '--group-size', '2']);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`m3: error: training would fail: 1 line the trainer refuses (first: ${file}:1: neg_scores: has 2 scores but neg has 1 texts); fix them, or skip them with data.skip_invalid / --skip-invalid\n`);
    expect(r.out).toMatch(/^finetune data: 1 rows, 3 texts in 1 file/);
    expect(r.out).toContain(`score_length_mismatch  1            rows whose pos_scores / neg_scores lengths differ from pos / neg\n    ${file}:1 neg_scores: "has 2 scores but neg has 1 texts"`);
    expect(r.out).toContain('truncated              -  (needs --tokenizer and --max-length)');
    expect(r.out).toMatch(/training would fail:\n {2}1 line the trainer refuses/);
    const s = await m3(['data', 'check', '--input', file, '--group-size', '2', '--skip-invalid', '--json']);
    expect(s.code).toBe(0);
    expect(JSON.parse(s.out)).toMatchObject({ score_length_mismatch: 1, invalid_lines: 1, errors: [] });
  });

  test('bad flags and inputs are one-line errors', async () => {
    const r = await m3(['data', 'check', '--input', train(), '--tokenizer', BERT_DIR]);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/max-length/);
    const e = await m3(['data', 'check', '--input', train(), '--eval', beir(), '--eval-split', 'test']);
    expect(e.code).toBe(1);
    expect(e.err).toMatch(/^m3: error: .*qrels\/test\.tsv: no qrels for split 'test' \(splits here: dev, train\)\n$/);
    const m = await m3(['data', 'check', '--input', path.join(tmpDir(), 'none.jsonl')]);
    expect(m.err).toMatch(/^m3: error: .*none\.jsonl: input not found\n$/);
  });

  test('--help shows the options, examples and exit codes', async () => {
    const r = await m3(['data', 'check', '--help']);
    for (const s of ['--input', '--format', '--group-size', '--tokenizer', '--max-length', '--query-max-length', '--eval', '--eval-split', '--skip-invalid', '--json', 'Examples:', 'Exit code 1']) expect(r.out).toContain(s);
  });
});
