/**
 * `m3 score` as a process: a run SIGKILLed after its first chunk leaves OUT absent and a partial output
 * beside it; a second writer on the same OUT is refused meanwhile; a rerun (even with a torn last line in
 * the partial file) continues after the kept lines and writes exactly what an uninterrupted run writes; a
 * rerun with another max length starts afresh. Plus --help and a one-line error for a non-reranker.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useBackend } from '../../src/backend';
import { scoreTrainingFile } from '../../src/eval/score';
import { disposeModel } from '../../src/model/m3';
import { loadReranker } from '../../src/model/reranker';
import { runCli } from '../helpers/cli';
import { killAll, startCli } from '../helpers/fault';

const RERANKER = path.join(__dirname, 'reranker', 'bert');
const INPUT = path.resolve(__dirname, '../../configs/tiny/data/toy_finetune_data.jsonl'); // 10 lines × 8 pairs
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-score-cli-'));
beforeAll(() => useBackend('wasm'));
afterAll(() => {
  killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// --batch-size 1: chunks of 64 pairs (the first 8 lines), and no padding, so reruns are byte-identical
const args = (out: string, ...more: string[]) => ['score', '--model', RERANKER, '--input', INPUT, '--output', out, '--batch-size', '1', ...more];
const partials = (dir: string) => fs.readdirSync(dir).filter((n) => n.endsWith('.partial'));

/** What an uninterrupted run writes, computed in this process (wasm, as the CLI runs here). */
async function straight(name: string, maxLength?: number): Promise<string> {
  const out = path.join(tmp, name);
  const r = loadReranker(RERANKER);
  await scoreTrainingFile(r, INPUT, out, { batchSize: 1, maxLength, progress: false });
  disposeModel(r);
  return fs.readFileSync(out, 'utf8');
}

test('killed after a chunk: nothing at OUT, a second writer refused, the rerun resumes to the uninterrupted output', async () => {
  const dir = path.join(tmp, 'killed');
  fs.mkdirSync(dir);
  const out = path.join(dir, 'scored.jsonl');
  const p = startCli(args(out), { env: { M3_FAULT_DELAY_MS: '120000', M3_FAULT_AT: '^chunk-written' } });
  await p.waitFor(/^m3-fault: chunk-written /);
  const second = runCli(args(out));
  expect(second.code).toBe(1);
  expect(second.stderr).toMatch(new RegExp(`^m3: error: ${out} is being written by PID ${p.child.pid} on `));
  p.child.kill('SIGKILL');
  await p.exit;
  expect(fs.existsSync(out)).toBe(false);
  const [partial] = partials(dir);
  expect(fs.readFileSync(path.join(dir, partial), 'utf8').split('\n')).toHaveLength(8 + 1);
  fs.mkdirSync(path.join(tmp, 'other'));
  fs.copyFileSync(path.join(dir, partial), path.join(tmp, 'other', partial)); // for the next test
  fs.appendFileSync(path.join(dir, partial), '{"query": "Five women walk'); // a write torn by the kill

  const rerun = runCli(args(out));
  expect(rerun.code).toBe(0);
  expect(rerun.stdout).toBe('');
  expect(rerun.stderr).toMatch(/resuming after 8 of 10 examples already scored/);
  expect(rerun.stderr).toMatch(/scored 80 pairs of 10 examples \(8 examples from the interrupted run kept\) → /);
  expect(fs.readFileSync(out, 'utf8')).toBe(await straight('straight.jsonl'));
  expect(fs.readdirSync(dir)).toEqual(['scored.jsonl']);
});

test('a partial output of other settings is discarded, not mixed in', async () => {
  const dir = path.join(tmp, 'other'); // holds the killed run's partial output (default max length)
  expect(partials(dir)).toHaveLength(1);
  const out = path.join(dir, 'scored.jsonl');
  const notices: string[] = [];
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((s) => notices.push(String(s)) > 0);
  try {
    const r = loadReranker(RERANKER);
    expect(await scoreTrainingFile(r, INPUT, out, { batchSize: 1, maxLength: 24, progress: false })).toEqual({ examples: 10, pairs: 80, resumed: 0 });
    disposeModel(r);
  } finally {
    spy.mockRestore();
  }
  expect(notices.join('')).toMatch(/discarding the partial output of a run with another model or max length/);
  expect(fs.readFileSync(out, 'utf8')).toBe(await straight('straight-24.jsonl', 24));
  expect(partials(dir)).toEqual([]);
});

test('--help has examples; a model without a classifier is a one-line error', () => {
  const help = runCli(['score', '--help']);
  expect(help.code).toBe(0);
  expect(help.stdout).toMatch(/Examples:/);
  expect(help.stdout).toMatch(/--max-length/);
  const bad = runCli(['score', '--model', path.join(__dirname, 'reranker', 'xlmr', 'tokenizer.json'), '--input', INPUT, '--output', path.join(tmp, 'x.jsonl')]);
  expect(bad.code).toBe(1);
  expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  expect(bad.stderr).toMatch(/^m3: error: .*tokenizer\.json: model dir does not exist/);
});
