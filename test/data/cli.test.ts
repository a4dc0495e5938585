import * as fs from 'fs';
import * as path from 'path';
import yargs from 'yargs';
import { dataCommand } from '../../src/cli/commands/data';
import { readManifest } from '../../src/data/manifest';
import { BERT_DIR, FE, tmpDir } from './helpers';

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
