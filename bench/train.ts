/**
 * `npm run bench -- train`: one M3 training step of a model point on each available backend, each in its own
 * process (so peak RSS is per backend), then the PyTorch baseline in the same run, and the ratio. All inputs
 * full length; AdamW. The CPU points (`--model`):
 *   bench-small  (default) XLM-R style, vocab 8000, hidden 256, 4 layers, 4 heads, FFN 1024; 8 queries ×
 *                group 4, query 32 / passage 128 tokens; unified loss with self-distillation
 *   demo-small   the batch and loss of the demo's pairs stage (configs/demo/pairs.yaml): 32 queries × 1
 *                passage (in-batch negatives), 32 / 96 tokens, dense InfoNCE at τ 0.05, no M3 heads; on a
 *                BERT of the demo's vocabulary (bert-base-uncased, 30,522), 2 layers, hidden 128 (half the
 *                demo model's), 4 heads, FFN 512. Small models are where per-op overhead shows: target
 *                ≤ 0.5× PyTorch's step time
 *   bge-m3       24 layers, hidden 1024, 16 heads, FFN 4096, vocab 250002; 1 query × group 2, 64 tokens; unified
 *   bge-m3-structure  bge-m3-gpu's structure (24 layers, 16 heads, 4 queries × group 8, unified with
 *                self-distillation) at hidden 64, FFN 256, vocab 1000, 16 / 32 tokens: kernels are small on 2
 *                cores, so its step is what the host costs (no PyTorch baseline)
 * On the torch backend every row has what a step costs the host (medians over the timed steps):
 * `tfjs_kernels_per_step` (TF.js kernel invocations), `addon_calls_per_step` (calls from JS into the addon),
 * `aten_calls_per_step` (ATen operator calls the addon made; native/src/handles.h says which count) and
 * `host_ms_per_step` (the step's wall time minus its kernels' own, as M3_TORCH_PROFILE measures them).
 * Every row records what moves its numbers between machines (bench/machine.ts): the CPU model and its GEMM
 * flags, and on torch OpenBLAS's core type and threads, whether oneDNN's sgemm is used, ATen's threads.
 * PyTorch: ../shared/reference/bench_torch.py (Debian's python3-torch) for the unified points;
 * bench/train_torch.py, the same step with the dense loss, for the dense-only ones (bench_torch.py's loss is
 * fixed to unified).
 *
 * On a GPU (`--device cuda`, torch backend; `--bf16` for autocast): `--model bge-m3-gpu` is the XLM-R large
 * shape at 4 queries × group 8, 64-token queries and 512-token passages; rows add `peak_mem_mb` (the CUDA
 * caching allocator's max allocated over the whole run, warm-up and init included, as bench_torch.py's
 * torch.cuda.max_memory_allocated), and next to PyTorch (run with TORCH_DEVICE=cuda M3_BENCH_SDPA=1
 * M3_BENCH_SPARSE=ids, and M3_BENCH_AMP=bf16 with --bf16) the ratios `tokens_per_s_ratio` (target ≥ 1) and
 * `peak_mem_ratio` (target ≤ 1.1). `--model long-bucket` is the paper's longest bucket: 1 query × group 2
 * with 8192-token passages, GradCache sub-batches of 1, 8194 positions; its row says whether a step ran.
 * `--shape '{"layers":1}'` overrides fields of the chosen point (for quick checks of the machinery).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import * as backendApi from '../src/backend';
import { m3Step } from '../src/finetune/m3-step';
import { Family, parseConfig } from '../src/model/config';
import { initModel } from '../src/model/m3';
import { adamwStep, clipGradNorm, createAdamW } from '../src/train/adamw';
import { fastSampler } from './fast-init';
import { cpuFields, machineFields } from './machine';
import { runPythonJson } from './python';

export interface Shape {
  vocab: number; hidden: number; layers: number; heads: number; ff: number; batch: number; group: number; qlen: number; plen: number;
  /** GradCache sub-batch size (0: one pass). */
  subBatch?: number;
  /** max_position_embeddings (default: the longest input + 4). */
  maxPos?: number;
  /** Weights from bench/fast-init.ts (seconds, not a minute of JS random draws). */
  fastInit?: boolean;
  /** Timed steps when --steps is not given, and the least allowed. */
  steps?: [number, number];
  /** The model family (default xlm-roberta, bge-m3's). */
  family?: Family;
  /** Dense InfoNCE alone on a model without M3 heads (the pairs stage), or unified with self-distillation (default). */
  loss?: 'dense' | 'unified';
  /** τ (default 0.02, FlagEmbedding's). */
  temperature?: number;
}
/** config.json fields and token ids by family: XLM-R's, and bert-base-uncased's (the demo's tokenizer). */
const FAMILIES: Record<Family, { config: Record<string, number | string>; cls: number; sep: number; specials: number[] }> = {
  'xlm-roberta': { config: { model_type: 'xlm-roberta', type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1 }, cls: 0, sep: 2, specials: [0, 1, 2, 3] },
  bert: { config: { model_type: 'bert', type_vocab_size: 2, layer_norm_eps: 1e-12, pad_token_id: 0 }, cls: 101, sep: 102, specials: [101, 102, 0, 100] },
};
const XLMR_LARGE = { vocab: 250002, hidden: 1024, layers: 24, heads: 16, ff: 4096 };
export const SHAPES: Record<string, Shape> = {
  'bench-small': { vocab: 8000, hidden: 256, layers: 4, heads: 4, ff: 1024, batch: 8, group: 4, qlen: 32, plen: 128 },
  'demo-small': { family: 'bert', vocab: 30522, hidden: 128, layers: 2, heads: 4, ff: 512, batch: 32, group: 1, qlen: 32, plen: 96, loss: 'dense', temperature: 0.05 },
  'bge-m3': { ...XLMR_LARGE, batch: 1, group: 2, qlen: 64, plen: 64 },
  'bge-m3-gpu': { ...XLMR_LARGE, batch: 4, group: 8, qlen: 64, plen: 512, fastInit: true },
  'long-bucket': { ...XLMR_LARGE, batch: 1, group: 2, qlen: 64, plen: 8192, subBatch: 1, maxPos: 8194, fastInit: true, steps: [2, 1] },
  // bge-m3-gpu's structure (layers, heads, batch, group, unified loss with self-distillation) at a width
  // whose kernels are small on 2 cores: what a step costs the host, counted on the CPU
  'bge-m3-structure': { ...XLMR_LARGE, batch: 4, group: 8, hidden: 64, ff: 256, vocab: 1000, qlen: 16, plen: 32 },
};
/** Points timed next to PyTorch (not long-bucket: its row says whether a step ran at all). */
const BASELINE_POINTS = ['bench-small', 'demo-small', 'bge-m3', 'bge-m3-gpu'];
const SHARED = process.env.M3_SHARED_DIR ?? path.resolve(__dirname, '..', '..', 'shared');

// setBf16Autocast / deviceMemory: reached through the module object so this file also runs on a tree without them
type Api = { setBf16Autocast?: (on: boolean) => void; deviceMemory?: () => { peakAllocatedBytes: number } | null };
const api = backendApi as unknown as Api;

export function fullBatch(n: number, len: number, vocab: number, seed: number, family: Family = 'xlm-roberta') {
  const { cls, sep } = FAMILIES[family];
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const inputIds = new Int32Array(n * len);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < len; j++) inputIds[i * len + j] = j === 0 ? cls : j === len - 1 ? sep : 5 + Math.floor(rnd() * (vocab - 5));
  }
  return { inputIds, attentionMask: new Int32Array(n * len).fill(1), batch: n, length: len };
}

const tokensOf = (s: Shape) => s.batch * s.qlen + s.batch * s.group * s.plen;

/** Times steps in this process on the active backend. */
async function timeSteps(shape: Shape, steps: number, cuda: boolean): Promise<Record<string, number>> {
  const family = shape.family ?? 'xlm-roberta';
  const config = parseConfig({
    ...FAMILIES[family].config, vocab_size: shape.vocab, hidden_size: shape.hidden, num_hidden_layers: shape.layers, num_attention_heads: shape.heads,
    intermediate_size: shape.ff, max_position_embeddings: shape.maxPos ?? Math.max(shape.qlen, shape.plen) + 4, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0,
  });
  const unified = shape.loss !== 'dense';
  const t0 = performance.now();
  const model = initModel(config, { seed: 0, heads: unified, ...(shape.fastInit ? { sample: fastSampler(0) } : {}) });
  const initS = (performance.now() - t0) / 1000;
  const opt = createAdamW({ lr: 1e-5, weightDecay: 0.01 });
  const batch = { queries: fullBatch(shape.batch, shape.qlen, shape.vocab, 1, family), passages: fullBatch(shape.batch * shape.group, shape.plen, shape.vocab, 2, family) };
  const lossOpts = { temperature: shape.temperature ?? 0.02, groupSize: shape.group, unified, selfDistill: unified, specialTokenIds: FAMILIES[family].specials };
  const params = model.params as Map<string, tf.Variable>;
  const last = [...params.values()].pop()!;
  const times: number[] = [];
  const hostTimes: number[] = []; // on cuda: time spent queueing work, i.e. the step minus the waits for the GPU
  // on torch: per step, TF.js kernels, addon calls, ATen calls, and the step's wall time minus its kernels' own
  const torch = tf.getBackend() === 'torch' ? (require('../src/backend/torch') as typeof import('../src/backend/torch')) : null;
  torch?.setKernelTiming(true);
  const perStep: Record<string, number[]> = { tfjs_kernels_per_step: [], addon_calls_per_step: [], aten_calls_per_step: [], host_ms_per_step: [] };
  let tensorsStart = 0;
  let loss = NaN;
  /** One training step; returns when its parts ended (t1: queued, t2: loss read back, t3: optimizer queued). */
  const step = async () => {
    const r = m3Step(model, batch, { loss: lossOpts, subBatchSize: shape.subBatch ?? 0 });
    const t1 = performance.now();
    loss = (await r.loss.data())[0]; // the one read-back of a step
    const t2 = performance.now();
    // bench_torch.py does not clip; on cuda neither does this (on cpu the norm stays, as before)
    const grads = cuda ? r.grads : clipGradNorm(r.grads, 0).grads;
    adamwStep(opt, params, grads, 1e-5);
    tf.dispose([r.loss, ...r.grads.values(), ...Object.values(r.parts)]);
    const t3 = performance.now();
    if (cuda) await last.data(); // the optimizer's kernels finish inside the step (bench_torch.py synchronises there too)
    return { t1, t2, t3 };
  };
  for (let i = 0; i <= steps; i++) {
    if (i === 1) {
      tensorsStart = tf.memory().numTensors;
      if (process.env.M3_TORCH_PROFILE) (require('../src/backend/torch/registry') as { resetKernelProfile(): void }).resetKernelProfile(); // steady state only
    }
    const before = torch?.hostCounts();
    const t0 = performance.now();
    const { t1, t2, t3 } = await step();
    const wallMs = performance.now() - t0;
    if (i > 0) {
      times.push(wallMs / 1000);
      hostTimes.push((t1 - t0 + t3 - t2) / 1000);
      if (torch && before) {
        const after = torch.hostCounts();
        perStep.tfjs_kernels_per_step.push(after.tfjsKernels - before.tfjsKernels);
        perStep.addon_calls_per_step.push(after.addonCalls - before.addonCalls);
        perStep.host_ms_per_step.push(wallMs - (after.kernelMs - before.kernelMs));
      }
    }
  }
  if (torch) {
    // ATen calls from one more, untimed step: counting the fused layer's operators hooks every ATen call
    // (RecordFunction), which would slow the timed steps
    torch.setLayerAtenCounting(true);
    const before = torch.hostCounts();
    await step();
    perStep.aten_calls_per_step.push(torch.hostCounts().atenCalls - before.atenCalls);
    torch.setLayerAtenCounting(false);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  times.sort((a, b) => a - b);
  hostTimes.sort((a, b) => a - b);
  const med = times[Math.floor(times.length / 2)];
  const out: Record<string, number> = {
    step_s_median: med, tokens_per_s: tokensOf(shape) / med, peak_rss_mb: process.resourceUsage().maxRSS / 1024, tensors_start: tensorsStart, tensors_end: tf.memory().numTensors,
  };
  if (torch) for (const [k, xs] of Object.entries(perStep)) out[k] = median(xs);
  if (cuda) {
    const m = api.deviceMemory?.();
    if (m) out.peak_mem_mb = m.peakAllocatedBytes / 2 ** 20;
    Object.assign(out, { init_s: initS, loss, host_s_median: hostTimes[Math.floor(hostTimes.length / 2)] });
    const info = (require('../src/backend/torch/kernels/fused') as { attentionKernelInfo?: () => string }).attentionKernelInfo;
    if (info) Object.assign(out, { attention: info() });
  }
  return out;
}

/** bench_torch.py's settings for this run: its strongest on a GPU (fused attention, sparse scores from ids). */
function baselineEnv(device: string, bf16: boolean): Record<string, string> {
  const env: Record<string, string> = device === 'cuda' ? { TORCH_DEVICE: 'cuda', M3_BENCH_SDPA: '1', M3_BENCH_SPARSE: 'ids' } : {};
  if (bf16) env.M3_BENCH_AMP = 'bf16';
  return env;
}

function pytorchBaseline(shape: Shape, steps: number, env: Record<string, string>): Record<string, unknown> | { error: string } {
  const { vocab, hidden, layers, heads, ff, batch, group, qlen, plen } = shape;
  const dims = { vocab, hidden, layers, heads, ff, batch, group, qlen, plen };
  if (shape.loss === 'dense') {
    // bench_torch.py's loss is fixed to unified with self-distillation; train_torch.py is its step with the dense one
    const config = JSON.stringify({ ...dims, family: shape.family ?? 'xlm-roberta', temperature: shape.temperature ?? 0.02 });
    return runPythonJson(path.join(__dirname, 'train_torch.py'), [config, String(steps)], { env: { M3_SHARED_DIR: SHARED, ...env } });
  }
  return runPythonJson(path.join(SHARED, 'reference', 'bench_torch.py'), [JSON.stringify(dims), String(steps)], { env });
}

interface Args { json?: boolean; backend?: string; model?: string; steps?: number; child?: boolean; baseline?: boolean; device?: string; bf16?: boolean; shape?: string }

function pointOf(args: Args): { name: string; shape: Shape } {
  const name = args.model ?? 'bench-small';
  const shape = SHAPES[name];
  if (!shape) throw new Error(`unknown --model ${name} (${Object.keys(SHAPES).join(', ')})`);
  return { name, shape: args.shape ? { ...shape, ...(JSON.parse(args.shape) as Partial<Shape>) } : shape };
}

async function child(args: Args, name: string, shape: Shape, steps: number): Promise<void> {
  const device = args.device === 'cuda' ? 'cuda' : 'cpu';
  const backend = await backendApi.useBackend(args.backend!, device);
  if (args.bf16) {
    if (!api.setBf16Autocast) throw new Error('this build has no bf16 autocast (setBf16Autocast)');
    api.setBf16Autocast(true);
  }
  const extra = device === 'cuda' || args.bf16 ? { device, bf16: !!args.bf16 } : {};
  const timed = await timeSteps(shape, steps, device === 'cuda');
  process.stdout.write(JSON.stringify({ backend, model: name, ...extra, ...timed, ...machineFields(backend) }) + '\n');
}

function runChild(b: string, name: string, steps: number, args: Args): Record<string, unknown> {
  const flags = ['--child', '--backend', b, '--model', name, '--steps', String(steps), ...(args.device ? ['--device', args.device] : []), ...(args.bf16 ? ['--bf16'] : []), ...(args.shape ? ['--shape', args.shape] : [])];
  // the running entry point again (bin/bench.js here, the bundle's own file in a device bundle)
  const entry = process.argv[1] ?? path.join(__dirname, '..', 'bin', 'bench.js');
  const r = spawnSync(process.execPath, [...process.execArgv, entry, 'train', ...flags], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  if (r.stderr) process.stderr.write(r.stderr);
  if (r.status !== 0) {
    const lines = (r.stderr ?? '').trim().split('\n').filter((l) => l.trim() && !/^\s+at |^Node\.js v/.test(l));
    const last = lines.filter((l) => /Error\b/.test(l)).pop() ?? lines.pop();
    const extra = args.device === 'cuda' || args.bf16 ? { device: args.device ?? 'cpu', bf16: !!args.bf16 } : {};
    return { backend: b, model: name, ...extra, error: `exit ${r.status ?? r.signal}${last ? `: ${last.slice(0, 300)}` : ''}` };
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

function addBaseline(rows: Record<string, unknown>[], name: string, shape: Shape, steps: number, args: Args): void {
  const device = args.device === 'cuda' ? 'cuda' : 'cpu';
  const base = pytorchBaseline(shape, steps, baselineEnv(device, !!args.bf16));
  rows.push({ model: name, ...base, ...cpuFields() });
  const t = (base as { step_s_median?: number }).step_s_median;
  const mem = (base as { peak_mem_mb?: number }).peak_mem_mb;
  for (const r of rows) {
    if (r.backend === 'pytorch' || typeof r.step_s_median !== 'number') continue;
    if (t) r.ratio_to_pytorch = r.step_s_median / t;
    if (device !== 'cuda') continue;
    if (t) r.tokens_per_s_ratio = t / r.step_s_median; // same tokens per step on both sides
    if (mem && typeof r.peak_mem_mb === 'number') r.peak_mem_ratio = r.peak_mem_mb / mem;
  }
}

function printTable(rows: Record<string, unknown>[], name: string, steps: number, cuda: boolean): void {
  process.stdout.write(`${name}: median step over ${steps} steps after one warm-up\n`);
  process.stdout.write(`backend     step_s   tokens/s  peak RSS MB  ×PyTorch${cuda ? '  peak GPU MB  tok/s ×PT  mem ×PT' : ''}\n`);
  const f = (v: unknown, d: number, w: number) => (typeof v === 'number' ? v.toFixed(d) : '-').padStart(w);
  for (const r of rows) {
    if (r.error) {
      process.stdout.write(`${String(r.backend ?? 'pytorch').padEnd(10)}  ${r.error}\n`);
      continue;
    }
    const gpu = cuda ? ` ${f(r.peak_mem_mb, 0, 12)} ${f(r.tokens_per_s_ratio, 2, 10)} ${f(r.peak_mem_ratio, 2, 8)}` : '';
    process.stdout.write(`${String(r.backend).padEnd(10)} ${f(r.step_s_median, 3, 7)} ${f(r.tokens_per_s, 0, 10)} ${f(r.peak_rss_mb, 0, 12)} ${f(r.ratio_to_pytorch, 2, 9)}${gpu}\n`);
  }
}

/**
 * wasm32 addresses 4 GiB: a point whose weights, gradients and AdamW moments (16 bytes a parameter) pass
 * that cannot run there (bge-m3's 568 M parameters need 9 GB); its row says so instead of an abort.
 */
function wasmTooSmall(name: string, s: Shape): Record<string, unknown> | null {
  const params = (s.vocab + (s.maxPos ?? Math.max(s.qlen, s.plen) + 4)) * s.hidden + s.layers * (4 * s.hidden * s.hidden + 2 * s.hidden * s.ff);
  const gb = (16 * params) / 2 ** 30;
  return gb < 4 ? null : { backend: 'wasm', model: name, error: `not run: wasm32 addresses 4 GiB; weights, gradients and AdamW state need ${gb.toFixed(1)} GiB` };
}

export async function run(args: Args): Promise<void> {
  const { name, shape } = pointOf(args);
  const [defaultSteps, minSteps] = shape.steps ?? [6, 5];
  const steps = Math.max(minSteps, args.steps ?? defaultSteps);
  if (args.child) return child(args, name, shape, steps);
  const device = args.device === 'cuda' ? 'cuda' : 'cpu';
  // wasm has neither CUDA nor bf16: those runs are the torch backend's
  const backends = args.backend ? [args.backend] : device === 'cuda' || args.bf16 ? ['torch'] : (await backendApi.availableBackends()).filter((b) => b !== 'cpu');
  const rows = backends.map((b) => (b === 'wasm' && wasmTooSmall(name, shape)) || runChild(b, name, steps, args));
  if (args.baseline !== false && BASELINE_POINTS.includes(name)) addBaseline(rows, name, shape, steps, args);
  if (args.json) {
    for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  printTable(rows, name, steps, device === 'cuda');
}

if (fs.existsSync(SHARED) === false) process.stderr.write(`bench: ${SHARED} not found (set M3_SHARED_DIR) — the PyTorch baseline needs it\n`);
