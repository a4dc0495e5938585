/**
 * `m3 data prepare --workers N`: the same inputs prepared with 1, 2 and 3 tokenizing threads give
 * byte-identical Arrow files and the same manifest but for its creation time — every format, a WordPiece
 * and a Unigram tokenizer, --skip-invalid paths included — and a bad line stops it with the same
 * file:line error, leaving nothing. Small work chunks and `awaitWorkers` make the worker threads take part
 * even in these small inputs (asserted through onWorkStats). Also through the CLI from source and from a
 * build (the worker thread's entry differs: swc's require hook vs the compiled .js), and SIGKILLed while its
 * threads tokenize: the old dataset stays whole.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { prepareDataset, PrepareOptions } from '../../src/data/prepare';
import type { WorkStats } from '../../src/data/tokenize-pool';
import { loadTokenizer, Tokenizer } from '../../src/model/tokenizer';
import { UserError } from '../../src/util/errors';
import { runCli } from '../helpers/cli';
import { sameSnapshot, snapshot, startCli } from '../helpers/fault';
import { sharedDir } from '../helpers/shared';
import { BERT_DIR, bertTokenizer, FE, leftovers, tmpDir, writeJsonl } from './helpers';

const ROOT = path.resolve(__dirname, '../..');
const TINY = path.join(ROOT, 'configs/tiny/data');
const T5_DIR = sharedDir('data/tokenizers/t5-small');

// the notices of --skip-invalid and small_threshold are expected here: keep the test output readable
let quiet: jest.SpyInstance;
beforeAll(() => (quiet = jest.spyOn(process.stderr, 'write').mockImplementation(() => true)));
afterAll(() => quiet.mockRestore());
let t5: Tokenizer | null = null;
const t5Tokenizer = () => (t5 ??= loadTokenizer(T5_DIR));

/** Every file's bytes, the manifest without createdAt (parsed). */
function contents(dir: string): { files: Map<string, Buffer>; manifest: Record<string, unknown> } {
  const files = snapshot(dir);
  const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8'));
  expect(typeof manifest.createdAt).toBe('string');
  delete manifest.createdAt;
  files.delete('manifest.json');
  return { files, manifest };
}

function expectSameDataset(got: string, want: string): void {
  const a = contents(got);
  const b = contents(want);
  expect([...a.files.keys()].sort()).toEqual([...b.files.keys()].sort());
  for (const [name, bytes] of b.files) {
    if (!a.files.get(name)!.equals(bytes)) throw new Error(`${name} differs between ${got} and ${want}`);
  }
  expect(a.manifest).toEqual(b.manifest);
}

/** Good and bad lines mixed (each reason --skip-invalid counts), and an empty file. */
function badInputs(dir: string, format: 'finetune' | 'pretrain'): string[] {
  const good = format === 'finetune' ? '{"query": "what is bge", "pos": ["an embedding model"], "neg": ["a fish", "a tree"]}' : '{"text": "one more short text to pack"}';
  const bad: (string | Buffer)[] = [
    'not json', '[1, 2]', '{"query": 1, "text": 2}', Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]),
    '{"query": "q", "pos": [], "neg": []}', '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [NaN], "neg_scores": [1]}',
  ];
  const parts: Buffer[] = [];
  for (let i = 0; i < 40; i++) parts.push(Buffer.from(good.replace('one', `number ${i}`).replace('bge', `bge ${i}`) + '\n'), Buffer.concat([Buffer.from(bad[i % bad.length]), Buffer.from('\n')]));
  const mixed = path.join(dir, `mixed-${format}.jsonl`);
  fs.writeFileSync(mixed, Buffer.concat(parts));
  const empty = path.join(dir, `empty-${format}.jsonl`);
  fs.writeFileSync(empty, '');
  return [mixed, empty];
}

type Case = [name: string, tok: () => Tokenizer, inputs: (dir: string) => string[], opts: PrepareOptions];
const CASES: Case[] = [
  ['finetune, WordPiece, example dirs merged below small_threshold, small Arrow chunks', bertTokenizer, () => [
    path.join(FE, 'example_data/retrieval'), path.join(FE, 'example_data/sts'), path.join(FE, 'example_data/classification-no_in_batch_neg'),
    path.join(FE, 'example_data/clustering-no_in_batch_neg'), path.join(FE, 'toy_finetune_data.jsonl'), path.join(TINY, 'toy_finetune_data.jsonl'),
  ], { format: 'finetune', passageMaxLen: 64, chunkIds: 700, smallThreshold: 11, queryInstruction: '' }],
  ['finetune, Unigram, instruction, no text', t5Tokenizer, () => [
    path.join(FE, 'example_data/retrieval'), path.join(FE, 'example_data/sts'), path.join(FE, 'toy_finetune_data.jsonl'),
  ], { format: 'finetune', queryInstruction: 'query: ', keepText: false }],
  ['pairs, WordPiece', bertTokenizer, () => [
    path.join(TINY, 'toy_pairs.jsonl'), path.join(FE, 'toy_evaluation_data/toy_query.json'), path.join(FE, 'example_data/retrieval'),
  ], { format: 'pairs', queryMaxLen: 16, passageMaxLen: 48 }],
  ['pretrain, WordPiece', bertTokenizer, () => [
    path.join(FE, 'toy_pretrain_data.jsonl'), path.join(FE, 'toy_evaluation_data/toy_corpus.json'), path.join(TINY, 'toy_pretrain_text.jsonl'),
  ], { format: 'pretrain', maxLen: 48 }],
  ['pretrain, Unigram', t5Tokenizer, () => [path.join(FE, 'toy_evaluation_data/toy_corpus.json'), path.join(TINY, 'toy_pretrain_data.jsonl')], { format: 'pretrain', maxLen: 32 }],
  ['finetune --skip-invalid: the tiny data dir (pretrain files in it are invalid) and bad lines', bertTokenizer, (dir) => [
    TINY, path.join(FE, 'example_data/sts'), ...badInputs(dir, 'finetune'),
  ], { format: 'finetune', skipInvalid: true, passageMaxLen: 32 }],
  ['pretrain --skip-invalid: the tiny data dir (fine-tuning files in it are invalid) and bad lines', bertTokenizer, (dir) => [
    TINY, ...badInputs(dir, 'pretrain'),
  ], { format: 'pretrain', skipInvalid: true, maxLen: 24 }],
];

describe.each(CASES)('%s', (_name, tok, inputs, opts) => {
  const dir = tmpDir('m3-workers-');
  const files = inputs(dir);
  const one = path.join(dir, 'w1');
  beforeAll(async () => {
    await prepareDataset(files, tok(), one, { ...opts, workers: 1, progress: false });
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test.each([2, 3])('%i workers: the same bytes and manifest as 1, worker threads taking part', async (workers) => {
    const out = path.join(dir, `w${workers}`);
    let stats: WorkStats | null = null;
    await prepareDataset(files, tok(), out, { ...opts, workers, workChars: 300, awaitWorkers: true, progress: false, onWorkStats: (s) => (stats = s) });
    expectSameDataset(out, one);
    expect(stats!.workers).toBe(workers - 1);
    expect(stats!.onWorkers).toBeGreaterThan(0);
  });

  test('default chunking and start-up (threads start with the second chunk of work): the same', async () => {
    const out = path.join(dir, 'wd');
    await prepareDataset(files, tok(), out, { ...opts, workers: 2, progress: false });
    expectSameDataset(out, one);
  });
});

test('a bad line after many chunks stops every worker count with the same file:line error and leaves nothing', async () => {
  const dir = tmpDir('m3-workers-');
  const rows = Array.from({ length: 300 }, (_, i) => ({ query: `query ${i}`, pos: [`a positive passage number ${i}`], neg: [`negative ${i}`, `another negative ${i}`] }));
  const file = writeJsonl(path.join(dir, 'in.jsonl'), [...rows, '{"query": "q", "pos": ["p"], "neg": "n"}', ...rows]);
  const messages: string[] = [];
  for (const workers of [1, 2, 3]) {
    const out = path.join(dir, `o${workers}`);
    const err = await prepareDataset([file], bertTokenizer(), out, { format: 'finetune', workers, workChars: 200, awaitWorkers: true, progress: false }).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    messages.push(err.message);
    expect(fs.existsSync(out)).toBe(false);
    expect(leftovers(out)).toEqual([]);
  }
  expect(messages).toEqual(Array(3).fill(`${file}:301: neg: expected a list of strings, got a string`));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('--workers through the CLI (from source): the same dataset as --workers 1; 0 is a one-line error', () => {
  const dir = tmpDir('m3-workers-');
  const args = (out: string, workers: string) => [
    'data', 'prepare', '--format', 'finetune', '--input', path.join(FE, 'example_data/retrieval'), path.join(FE, 'example_data/sts'),
    '--model', BERT_DIR, '--output', out, '--passage-max-len', '64', '--workers', workers,
  ];
  for (const w of ['1', '2']) expect(runCli(args(path.join(dir, `w${w}`), w))).toMatchObject({ code: 0, stderr: '' });
  expectSameDataset(path.join(dir, 'w2'), path.join(dir, 'w1'));
  const bad = runCli(args(path.join(dir, 'w0'), '0'));
  expect(bad).toMatchObject({ code: 1, stderr: 'm3: error: --workers must be an integer ≥ 1, got 0\n' });
  fs.rmSync(dir, { recursive: true, force: true });
});

test('from a build (dist/): the compiled worker entry starts and gives the same dataset', () => {
  const dir = tmpDir('m3-workers-dist-');
  // compiled into a temp copy, so the repo's own dist/ is never touched mid-suite
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', path.join(dir, 'dist')], { cwd: ROOT, stdio: 'pipe' });
  const inputs = [path.join(FE, 'example_data/retrieval'), path.join(TINY, 'toy_pairs.jsonl')];
  const opts = { format: 'pairs', passageMaxLen: 64, progress: false };
  const script = `
    const { prepareDataset } = require(${JSON.stringify(path.join(dir, 'dist/src/data/prepare.js'))});
    const { loadTokenizer } = require(${JSON.stringify(path.join(dir, 'dist/src/model/tokenizer.js'))});
    const [inputs, out, opts] = JSON.parse(process.argv[1]);
    prepareDataset(inputs, loadTokenizer(${JSON.stringify(BERT_DIR)}), out, { ...opts, onWorkStats: (s) => console.log(JSON.stringify(s)) })
      .catch((e) => { console.error(e.stack); process.exit(1); });`;
  const run = (out: string, extra: object) => {
    const r = spawnSync(process.execPath, ['-e', script, JSON.stringify([inputs, out, { ...opts, ...extra }])], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return JSON.parse(r.stdout.trim()) as WorkStats;
  };
  expect(run(path.join(dir, 'w1'), { workers: 1 })).toMatchObject({ workers: 0, onWorkers: 0 });
  const s = run(path.join(dir, 'w3'), { workers: 3, workChars: 300, awaitWorkers: true });
  expect(s.workers).toBe(2);
  expect(s.onWorkers).toBeGreaterThan(0);
  expectSameDataset(path.join(dir, 'w3'), path.join(dir, 'w1'));
  fs.rmSync(dir, { recursive: true, force: true });
}, 180_000);

test('SIGKILL while 2 threads tokenize over an existing dataset: the old one stays whole, a rerun equals --workers 1', async () => {
  const dir = tmpDir('m3-workers-kill-');
  // ~8 MB of FlagEmbedding rows: seconds of tokenizing, the worker thread up well before the end
  const lines = fs.readFileSync(path.join(FE, 'example_data/retrieval/msmarco.jsonl'), 'utf8').trim().split('\n');
  const input = path.join(dir, 'big.jsonl');
  fs.writeFileSync(input, Array.from({ length: 80 }, () => lines.join('\n')).join('\n') + '\n');
  const args = (out: string, workers: number) => ['data', 'prepare', '--format', 'finetune', '--input', input, '--model', BERT_DIR, '--output', out, '--workers', String(workers)];
  const ds = path.join(dir, 'ds');
  const oldRun = startCli(['data', 'prepare', '--format', 'pretrain', '--input', path.join(FE, 'toy_pretrain_data.jsonl'), '--model', BERT_DIR, '--output', ds]);
  const ref = startCli(args(path.join(dir, 'ref'), 1));
  expect([(await oldRun.exit).code, (await ref.exit).code]).toEqual([0, 0]);
  const old = snapshot(ds);
  const killed: number[] = [];
  for (const ms of [800, 2000]) {
    const p = startCli(args(ds, 2), { env: { M3_FAULT_DELAY_MS: '1', M3_FAULT_AT: '^fill ' } });
    await p.afterFaultPoint(ms);
    p.child.kill('SIGKILL');
    const { signal } = await p.exit;
    if (signal === 'SIGKILL') killed.push(ms);
    // what a reader sees is ds, whole: the old one, or — when the kill landed after the final rename, on a
    // fast run — the complete new one (the temp dir beside it is dot-named)
    expect(fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort()).toEqual(['big.jsonl', 'ds', 'ref']);
    if (signal === 'SIGKILL' && !sameSnapshot(snapshot(ds), old)) expectSameDataset(ds, path.join(dir, 'ref'));
  }
  expect(killed.length).toBeGreaterThan(0);
  const rerun = startCli(args(ds, 2));
  expect((await rerun.exit).code).toBe(0);
  expectSameDataset(ds, path.join(dir, 'ref'));
  expect(fs.readdirSync(dir).sort()).toEqual(['big.jsonl', 'ds', 'ref']); // the killed runs' temp dirs are gone
  fs.rmSync(dir, { recursive: true, force: true });
}, 180_000);
