/**
 * The README's "Fine-tuning workflow" runs as written: its sh block (a stand-in model, then mine → score →
 * check → train → eval on ../shared data), verbatim, under `bash -eu` in a temporary working copy — the
 * block's `configs/` and `test/eval/reranker/` copied, `../shared` a link to the shared data, `npx m3` this
 * checkout's bin/m3.js run from src/ — and then each step's output is checked.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { sharedDir } from './helpers/shared';

const ROOT = path.resolve(__dirname, '..');
const HEADING = '\n## Fine-tuning workflow\n';

/** The first sh block of the README's workflow section. */
function readmeWorkflow(): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(HEADING);
  if (start < 0) throw new Error('README: no "## Fine-tuning workflow" section');
  const end = readme.indexOf('\n## ', start + HEADING.length);
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(start, end < 0 ? undefined : end));
  if (!m) throw new Error('README: no sh block under "## Fine-tuning workflow"');
  return m[1];
}

// `npx m3 ARGS` → node bin/m3.js ARGS; each call's wall time goes to $M3_WORKFLOW_TIMES (shown on failure)
const PRELUDE = `npx() {
  [ "$1" = m3 ] || { echo "workflow test: only npx m3 is mapped, not npx $1" >&2; return 1; }
  shift
  local t0; t0=$(date +%s%N)
  "$M3_NODE" "$M3_JS" "$@"
  echo "$1 $(( ($(date +%s%N) - t0) / 1000000 )) ms" >> "$M3_WORKFLOW_TIMES"
}
`;

const readJsonl = (file: string) => fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
const strings = (v: unknown) => v as string[];
const numbers = (v: unknown) => v as number[];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-workflow-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('the README workflow runs as written: mine → score → check → train → eval', () => {
  const block = readmeWorkflow();
  const work = path.join(tmp, 'm3-train');
  fs.cpSync(path.join(ROOT, 'configs'), path.join(work, 'configs'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'test/eval/reranker'), path.join(work, 'test/eval/reranker'), { recursive: true });
  fs.symlinkSync(sharedDir(), path.join(tmp, 'shared'));
  const script = path.join(tmp, 'workflow.sh');
  fs.writeFileSync(script, PRELUDE + block);
  const times = path.join(tmp, 'times.txt');
  const r = spawnSync('bash', ['-eu', script], {
    cwd: work,
    encoding: 'utf8',
    timeout: 280_000,
    env: {
      ...process.env, M3_FROM_SRC: '1', M3_PROGRESS: '0', HF_HUB_OFFLINE: '1', HF_HOME: path.join(tmp, 'hf'),
      M3_NODE: process.execPath, M3_JS: path.join(ROOT, 'bin/m3.js'), M3_WORKFLOW_TIMES: times,
    },
  });
  const timings = fs.existsSync(times) ? fs.readFileSync(times, 'utf8') : '';
  if (r.status !== 0) throw new Error(`the workflow exited with ${r.status ?? r.signal}\nsteps done:\n${timings}\nstderr:\n${r.stderr.slice(-3000)}`);
  expect(timings.split('\n').filter(Boolean).map((l) => l.split(' ')[0])).toEqual(['train', 'mine', 'score', 'data', 'train', 'eval']);

  const run = path.join(work, 'runs/workflow');
  const input = readJsonl(path.join(sharedDir(), 'data/flagembedding/toy_finetune_data.jsonl'));
  const pool = new Set(input.flatMap((row) => [...strings(row.pos), ...strings(row.neg)]));

  // 1. mine: the input's rows with 15 negatives each, from the pool, none a positive or the query
  const mined = readJsonl(path.join(run, 'mined.jsonl'));
  expect(mined.map((row) => [row.query, row.pos])).toEqual(input.map((row) => [row.query, row.pos]));
  for (const row of mined) {
    const neg = strings(row.neg);
    expect(new Set(neg).size).toBe(15);
    for (const t of neg) {
      expect(pool.has(t)).toBe(true);
      expect(strings(row.pos)).not.toContain(t);
      expect(t).not.toBe(row.query);
    }
  }

  // 2. score: the mined rows with one finite score per pos / neg
  const scored = readJsonl(path.join(run, 'scored.jsonl'));
  expect(scored.map((row) => [row.query, row.pos, row.neg])).toEqual(mined.map((row) => [row.query, row.pos, row.neg]));
  const allScores: number[] = [];
  for (const row of scored) {
    expect(numbers(row.pos_scores)).toHaveLength(strings(row.pos).length);
    expect(numbers(row.neg_scores)).toHaveLength(15);
    allScores.push(...numbers(row.pos_scores), ...numbers(row.neg_scores));
  }
  expect(allScores.every(Number.isFinite)).toBe(true);
  expect(new Set(allScores).size).toBeGreaterThan(allScores.length / 2);

  // 3. check: the table on stdout; nothing to report on this data (no positive is a near-duplicate of any
  // pool text, mining leaves positives out, and NLI sentences are no NFCorpus query)
  expect(r.stdout).toMatch(/^finetune data: 10 rows, 170 texts in 1 file, teacher scores on every row$/m);
  for (const key of ['invalid_lines', 'duplicate_queries', 'pos_neg_overlap', 'false_negatives', 'empty_texts', 'short_groups', 'score_length_mismatch', 'leakage']) {
    expect(r.stdout).toMatch(new RegExp(`^${key} +0 `, 'm'));
  }
  expect(r.stdout).toMatch(/^truncated +\d+ \(\d+\.\d %\) /m);
  expect(r.stdout).toMatch(/^training can start/m);

  // 4. train: 8 unified steps on the scored file with its teacher scores, heads written
  const final = path.join(run, 'unified/final');
  for (const f of ['model.safetensors', 'colbert_linear.pt', 'sparse_linear.pt', 'tokenizer.json']) expect(fs.existsSync(path.join(final, f))).toBe(true);
  const stages = (JSON.parse(fs.readFileSync(path.join(final, 'm3_training.json'), 'utf8')) as { stages: { stage: string; steps: number; data: { file: string; rows: number }[]; settings: { data: Record<string, unknown>; loss: Record<string, unknown> } }[] }).stages;
  expect(stages.map((s) => s.stage)).toEqual(['pairs', 'unified']);
  const unified = stages[1];
  expect(unified.steps).toBe(8);
  expect(unified.data).toEqual([expect.objectContaining({ file: 'scored.jsonl', rows: 10 })]);
  expect(unified.settings.data.knowledge_distillation).toBe(true);
  expect(unified.settings.loss.kd_loss_type).toBe('m3_kd_loss');
  const losses = readJsonl(path.join(run, 'unified/metrics.jsonl')).filter((m) => 'loss' in m).map((m) => m.loss as number);
  expect(losses).toHaveLength(8);
  expect(losses.every(Number.isFinite)).toBe(true);
  expect(r.stderr).toMatch(/data: checked 10 rows in 1 file: no problems found/);

  // 5. eval: a row per language, mAP@20 in [0, 1], and the macro average of the two
  const result = JSON.parse(fs.readFileSync(path.join(run, 'eval.json'), 'utf8')) as {
    datasets: { name: string; format: string; language: string; metrics: { dense: Record<string, number> } }[];
    macro: { dense: Record<string, number> };
  };
  expect(result.datasets.map((d) => [d.name, d.format, d.language])).toEqual([['en.json', 'xquad-r', 'en'], ['de.json', 'xquad-r', 'de']]);
  const maps = result.datasets.map((d) => d.metrics.dense['map@20']);
  for (const m of maps) expect(m >= 0 && m <= 1).toBe(true);
  expect(result.macro.dense['map@20']).toBeCloseTo((maps[0] + maps[1]) / 2, 12);
  expect(r.stdout).toMatch(/^macro +dense /m);
}, 300_000);
