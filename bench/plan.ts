/**
 * `npm run bench -- plan`: the resource plan's peak-memory estimate (src/train/plan.ts) next to the peak RSS
 * measured on the torch backend, each case in its own process:
 *   bench-small, bge-m3   one unified step of bench/train.ts's shapes (no checkpoint): the plan's step peak
 *   demo stages           `m3 train configs/demo/<stage>.yaml` for a few steps, its checkpoint and final
 *                         model included: the plan's peak (`m3 plan --json`'s peak_memory_mb)
 * `--model NAME` runs one case (bge-m3 takes minutes and ≈ 13 GB).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { estimatePlan } from '../src/train/plan';
import { SHAPES, Shape } from './train';

const ROOT = path.resolve(__dirname, '..');
const BIN = path.join(ROOT, 'bin', 'm3.js');
const ENV = { ...process.env, M3_BACKEND: 'torch', M3_PROGRESS: '0' };

interface Row { case: string; estimate_mb?: number; measured_mb?: number; error_pct?: number; note: string; error?: string }

/** Parameters of bench/train.ts's XLM-R shapes with M3 heads (colbert d×d): embeddings, layers, heads. */
function shapeParams(s: Shape): number {
  const d = s.hidden;
  const embeddings = s.vocab * d + (Math.max(s.qlen, s.plen) + 4) * d + d + 2 * d;
  const layer = 4 * (d * d + d) + 2 * d + 2 * d * s.ff + s.ff + d + 2 * d;
  return embeddings + s.layers * layer + (d * d + d) + (d + 1);
}

function shapeCase(name: string): Row {
  const s = SHAPES[name];
  const params = shapeParams(s);
  const plan = estimatePlan({
    stage: name, kind: 'finetune', unified: true,
    model: { vocab: s.vocab, hidden: s.hidden, layers: s.layers, heads: s.heads, ffn: s.ff, hiddenDropout: false },
    params, trainable: params, largestParam: s.vocab * s.hidden, finalParams: params,
    shapes: [{ dataset: name, bucket: '0-500', batchSize: s.batch, groupSize: s.group, queryLength: s.qlen, passageLength: s.plen }],
    subBatchSize: 0, maxGradNorm: 0, gradAccum: 1, saveSteps: 0, saveTotalLimit: 1, totalSteps: 5, worldSize: 1, keepsBest: false,
  });
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'bench.js'), 'train', '--child', '--backend', 'torch', '--model', name, '--steps', '5'], { encoding: 'utf8', env: ENV, timeout: 3600_000 });
  if (r.status !== 0) return { case: name, estimate_mb: plan.step_peak_mb, note: 'one step, no checkpoint', error: `exit ${r.status}: ${(r.stderr ?? '').trim().split('\n').pop()}` };
  const measured = (JSON.parse(r.stdout.trim().split('\n').pop()!) as { peak_rss_mb: number }).peak_rss_mb;
  return { case: name, estimate_mb: plan.step_peak_mb, measured_mb: Math.round(measured), note: 'steps only (bench/train.ts), plan step peak' };
}

function demoCase(stage: string, steps: number): Row {
  const config = path.join(ROOT, 'configs', 'demo', `${stage}.yaml`);
  const name = `demo ${stage}`;
  const plan = spawnSync(process.execPath, [BIN, 'plan', config, '--json'], { encoding: 'utf8', env: ENV, timeout: 600_000 });
  if (plan.status !== 0) return { case: name, note: '', error: `m3 plan exited ${plan.status}: ${plan.stderr.trim().split('\n').pop()}` };
  const estimate = (JSON.parse(plan.stdout) as { peak_memory_mb: number }).peak_memory_mb;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-bench-plan-'));
  const rssFile = path.join(dir, 'rss');
  try {
    const r = spawnSync(process.execPath, ['-r', path.join(ROOT, 'test', 'helpers', 'max-rss.js'), BIN, 'train', config, '--set', `output_dir=${dir}/run`, '--set', `train.max_steps=${steps}`],
      { encoding: 'utf8', env: { ...ENV, M3_TEST_RSS_FILE: rssFile }, timeout: 1800_000 });
    if (r.status !== 0) return { case: name, estimate_mb: estimate, note: '', error: `m3 train exited ${r.status}: ${r.stderr.trim().split('\n').pop()}` };
    return { case: name, estimate_mb: estimate, measured_mb: Math.round(Number(fs.readFileSync(rssFile, 'utf8')) / 1024), note: `m3 train, ${steps} steps + checkpoint + final, plan peak` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const CASES: Record<string, () => Row> = {
  'bench-small': () => shapeCase('bench-small'),
  'bge-m3': () => shapeCase('bge-m3'),
  'demo-retromae': () => demoCase('retromae', 4),
  'demo-pairs': () => demoCase('pairs', 4),
  'demo-unified': () => demoCase('unified', 4),
};

export async function run(args: { json?: boolean; model?: string }): Promise<void> {
  const names = args.model ? [args.model] : Object.keys(CASES);
  for (const n of names) if (!CASES[n]) throw new Error(`unknown --model ${n} (${Object.keys(CASES).join(', ')})`);
  const rows = names.map((n) => {
    const r = CASES[n]();
    if (r.estimate_mb && r.measured_mb) r.error_pct = Math.round(((r.estimate_mb - r.measured_mb) / r.measured_mb) * 1000) / 10;
    return r;
  });
  if (args.json) {
    for (const r of rows) process.stdout.write(JSON.stringify({ bench: 'plan', ...r }) + '\n');
    return;
  }
  process.stdout.write('peak memory: the plan\'s estimate vs the measured peak RSS (torch backend)\n');
  process.stdout.write('case              estimate MB  measured MB   error  what\n');
  for (const r of rows) {
    const f = (v: number | undefined, w: number) => (v === undefined ? '-' : String(v)).padStart(w);
    const err = r.error_pct === undefined ? '-' : `${r.error_pct > 0 ? '+' : ''}${r.error_pct}%`;
    process.stdout.write(`${r.case.padEnd(16)} ${f(r.estimate_mb, 12)} ${f(r.measured_mb, 12)} ${err.padStart(7)}  ${r.error ?? r.note}\n`);
  }
}
