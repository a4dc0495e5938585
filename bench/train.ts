/**
 * `npm run bench -- train`: one unified M3 training step of `bench-small` (XLM-R style, vocab 8000,
 * hidden 256, 4 layers, 4 heads, FFN 1024; 8 queries × group 4; query 32 / passage 128 tokens, all full
 * length; unified loss with self-distillation; AdamW) on each available backend, each in its own process
 * (so peak RSS is per backend), then the PyTorch baseline (../shared/reference/bench_torch.py, Debian's
 * python3-torch) in the same run, and the ratio. `--model bge-m3` times one step of a bge-m3-shaped model
 * (24 layers, hidden 1024, 16 heads, FFN 4096, vocab 250002; 1 query × group 2, 64 tokens).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { availableBackends, useBackend } from '../src/backend';
import { m3Step } from '../src/finetune/m3-step';
import { parseConfig } from '../src/model/config';
import { initModel } from '../src/model/m3';
import { adamwStep, clipGradNorm, createAdamW } from '../src/train/adamw';

export interface Shape { vocab: number; hidden: number; layers: number; heads: number; ff: number; batch: number; group: number; qlen: number; plen: number }
export const SHAPES: Record<string, Shape> = {
  'bench-small': { vocab: 8000, hidden: 256, layers: 4, heads: 4, ff: 1024, batch: 8, group: 4, qlen: 32, plen: 128 },
  'bge-m3': { vocab: 250002, hidden: 1024, layers: 24, heads: 16, ff: 4096, batch: 1, group: 2, qlen: 64, plen: 64 },
};
const SHARED = process.env.M3_SHARED_DIR ?? path.resolve(__dirname, '..', '..', 'shared');

export function fullBatch(n: number, len: number, vocab: number, seed: number) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const inputIds = new Int32Array(n * len);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < len; j++) inputIds[i * len + j] = j === 0 ? 0 : j === len - 1 ? 2 : 5 + Math.floor(rnd() * (vocab - 5));
  }
  return { inputIds, attentionMask: new Int32Array(n * len).fill(1), batch: n, length: len };
}

/** Times steps in this process on the active backend. */
async function timeSteps(shape: Shape, steps: number): Promise<{ step_s_median: number; tokens_per_s: number; peak_rss_mb: number; tensors_start: number; tensors_end: number }> {
  const config = parseConfig({
    model_type: 'xlm-roberta', vocab_size: shape.vocab, hidden_size: shape.hidden, num_hidden_layers: shape.layers, num_attention_heads: shape.heads,
    intermediate_size: shape.ff, max_position_embeddings: Math.max(shape.qlen, shape.plen) + 4, type_vocab_size: 1, layer_norm_eps: 1e-5,
    pad_token_id: 1, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0,
  });
  const model = initModel(config, { seed: 0, heads: true });
  const opt = createAdamW({ lr: 1e-5, weightDecay: 0.01 });
  const batch = { queries: fullBatch(shape.batch, shape.qlen, shape.vocab, 1), passages: fullBatch(shape.batch * shape.group, shape.plen, shape.vocab, 2) };
  const times: number[] = [];
  let tensorsStart = 0;
  for (let i = 0; i <= steps; i++) {
    if (i === 1) tensorsStart = tf.memory().numTensors;
    const t0 = performance.now();
    const r = m3Step(model, batch, { loss: { temperature: 0.02, groupSize: shape.group, unified: true, selfDistill: true, specialTokenIds: [0, 1, 2, 3] }, subBatchSize: 0 });
    await r.loss.data(); // the one read-back of a step
    const { grads } = clipGradNorm(r.grads, 0);
    adamwStep(opt, model.params as Map<string, tf.Variable>, grads, 1e-5);
    tf.dispose([r.loss, ...r.grads.values(), ...Object.values(r.parts)]);
    if (i > 0) times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  const med = times[Math.floor(times.length / 2)];
  const tokens = shape.batch * shape.qlen + shape.batch * shape.group * shape.plen;
  return { step_s_median: med, tokens_per_s: tokens / med, peak_rss_mb: process.resourceUsage().maxRSS / 1024, tensors_start: tensorsStart, tensors_end: tf.memory().numTensors };
}

function pytorchBaseline(shape: Shape, steps: number): Record<string, unknown> | { error: string } {
  const script = path.join(SHARED, 'reference', 'bench_torch.py');
  for (const py of [process.env.M3_PYTHON, '/usr/bin/python3', 'python3'].filter(Boolean) as string[]) {
    const r = spawnSync(py, [script, JSON.stringify(shape), String(steps)], { encoding: 'utf8', timeout: 1800_000 });
    if (r.status === 0) return JSON.parse(r.stdout.trim().split('\n').pop()!);
  }
  return { error: `no python3 with torch ran ${script} (apt-get install python3-torch)` };
}

export async function run(args: { json?: boolean; backend?: string; model?: string; steps?: number; child?: boolean; baseline?: boolean }): Promise<void> {
  const name = args.model ?? 'bench-small';
  const shape = SHAPES[name];
  if (!shape) throw new Error(`unknown --model ${name} (${Object.keys(SHAPES).join(', ')})`);
  const steps = Math.max(5, args.steps ?? 6);
  if (args.child) {
    const backend = await useBackend(args.backend!);
    process.stdout.write(JSON.stringify({ backend, model: name, ...(await timeSteps(shape, steps)) }) + '\n');
    return;
  }
  const backends = args.backend ? [args.backend] : (await availableBackends()).filter((b) => b !== 'cpu');
  const rows: Record<string, unknown>[] = [];
  for (const b of backends) {
    const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'bin', 'bench.js'), 'train', '--child', '--backend', b, '--model', name, '--steps', String(steps)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (r.status !== 0) {
      rows.push({ backend: b, model: name, error: `exit ${r.status}` });
      continue;
    }
    rows.push(JSON.parse(r.stdout.trim().split('\n').pop()!));
  }
  if (args.baseline !== false && name === 'bench-small') {
    const base = pytorchBaseline(shape, steps);
    rows.push({ model: name, ...base });
    const t = (base as { step_s_median?: number }).step_s_median;
    if (t) for (const r of rows) if (r.backend !== 'pytorch' && typeof r.step_s_median === 'number') r.ratio_to_pytorch = (r.step_s_median as number) / t;
  }
  if (args.json) {
    for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  process.stdout.write(`${name}: median step over ${steps} steps after one warm-up\n`);
  process.stdout.write('backend     step_s   tokens/s  peak RSS MB  ×PyTorch\n');
  for (const r of rows) {
    if (r.error) {
      process.stdout.write(`${String(r.backend ?? 'pytorch').padEnd(10)}  ${r.error}\n`);
      continue;
    }
    const f = (v: unknown, d: number, w: number) => (typeof v === 'number' ? v.toFixed(d) : '-').padStart(w);
    process.stdout.write(`${String(r.backend).padEnd(10)} ${f(r.step_s_median, 3, 7)} ${f(r.tokens_per_s, 0, 10)} ${f(r.peak_rss_mb, 0, 12)} ${f(r.ratio_to_pytorch, 2, 9)}\n`);
  }
}

if (fs.existsSync(SHARED) === false) process.stderr.write(`bench: ${SHARED} not found (set M3_SHARED_DIR) — the PyTorch baseline needs it\n`);
