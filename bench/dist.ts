/**
 * `npm run bench -- dist`: distributed-training numbers, each measured with real processes on this machine
 * next to the same thing done by PyTorch (torch.distributed, Debian's python3-torch).
 *
 * Part 1, `allreduce`: all_reduce (sum, float32) of 4, 64 and 256 MiB buffers between two processes, each
 * with one intra-op thread, over gloo. m3 = two node processes calling the libtorch addon's `allReduce`
 * (native/src/dist.cc: ProcessGroupGloo) in place, as the training loop reduces its gradient buckets (the
 * copy the non-in-place call adds is timed alone and reported beside it); torch = two python processes running
 * `dist.all_reduce(t)` in place (bench/dist_torch.py). Both: 2 warm-up iterations, then timed ones, each
 * after a barrier, in ROUNDS alternating rounds (m3, torch, m3, torch) whose times are pooled; the median
 * time of rank 0 is reported as algorithm bandwidth (bytes / time) and bus bandwidth (2·(n−1)/n · bytes /
 * time), in GB/s (1e9 bytes), and the m3/torch bandwidth ratio.
 *
 * Part 2, `train`: bench-small training steps (bench/train.ts's shape, per process: 8 queries × group 4, unified
 * loss with self-distillation, AdamW) on the torch backend with 1 process (1 intra-op thread, BLAS on every
 * core), 2 independent processes (1 + 1 thread each, no communication: the compute floor of 2 ranks sharing
 * this machine) and 2 data-parallel ranks (gradients averaged through the group, global step metrics). The
 * data-parallel overhead beyond the all_reduce is, within the data-parallel run, the per-step time of gradient
 * averaging and the metrics exchange minus a bare in-place all_reduce of the same bytes (timed after a
 * barrier in the same ranks after training), as a share of the step; the step time next to the independent
 * processes' is shown as well.
 *
 * Every child process is killed after CHILD_TIMEOUT_MS, and when one rank fails the others are killed too,
 * so the bench never hangs.
 */
import { spawn, spawnSync } from 'child_process';
import * as net from 'net';
import * as path from 'path';
import { loadAddon } from '../src/backend/torch/addon';
import { pythons } from './python';

export type Row = Record<string, unknown>;

/** One part of the dist bench. */
export interface DistPart {
  name: string;
  /** Starts the processes it needs (see spawnRanks) and returns one row per measurement. */
  run(): Promise<Row[]>;
  /** The body of one m3 child process (`bench.js dist --child`, its settings in M3_BENCH_DIST). */
  child(cfg: ChildConfig): Promise<void>;
  /** The human-readable table for its rows. */
  table(rows: Row[]): string;
}

/** What a child process gets, as JSON in the M3_BENCH_DIST environment variable. */
export interface ChildConfig {
  part: string;
  rank: number;
  world: number;
  port: number;
  spec: Record<string, unknown>;
}

export const CHILD_TIMEOUT_MS = 120_000;
const ROOT = path.resolve(__dirname, '..');
const WORLD = 2;
const WARMUP = 2;
/** m3 and torch each run this many times, alternating; the timed iterations of all rounds are pooled. */
const ROUNDS = 4;
const MiB = 1024 * 1024;
const SIZES = [
  { bytes: 4 * MiB, iters: 20 },
  { bytes: 64 * MiB, iters: 10 },
  { bytes: 256 * MiB, iters: 5 },
];

// ---------------------------------------------------------------------------------------------------------
// Shared helpers (for every part)

/** A TCP port that was free a moment ago (listen on port 0, read it back, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A python that has torch with gloo: $M3_PYTHON, Debian's /usr/bin/python3, then whatever python3 is on PATH. */
export function torchPython(): string | undefined {
  for (const py of pythons()) {
    const r = spawnSync(py, ['-c', 'import torch.distributed as d; assert d.is_gloo_available()'], { stdio: 'ignore', timeout: 60_000 });
    if (r.status === 0) return py;
  }
  return undefined;
}

/**
 * Runs one process per rank (`cmd(rank)` gives [program, args, extra environment]) and resolves with rank 0's stdout, or an
 * error naming the first rank that failed (with its stderr's tail). Every process is killed after
 * `timeoutMs`, and all are killed as soon as one exits non-zero.
 */
export function spawnRanks(world: number, cmd: (rank: number) => [string, string[], NodeJS.ProcessEnv?], timeoutMs = CHILD_TIMEOUT_MS): Promise<{ stdout: string } | { error: string }> {
  return new Promise((resolve) => {
    const procs = Array.from({ length: world }, (_, rank) => {
      const [prog, argv, env] = cmd(rank);
      return spawn(prog, argv, { cwd: ROOT, env: { ...process.env, OMP_NUM_THREADS: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    });
    const out = procs.map(() => '');
    const err = procs.map(() => '');
    let left = world;
    let failure: string | undefined;
    const killAll = () => {
      for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      failure ??= `timed out after ${timeoutMs / 1000} s`;
      killAll();
    }, timeoutMs);
    procs.forEach((p, rank) => {
      p.stdout.on('data', (d: Buffer) => (out[rank] += d.toString()));
      p.stderr.on('data', (d: Buffer) => (err[rank] = (err[rank] + d.toString()).slice(-4000)));
      p.on('error', (e) => {
        failure ??= `rank ${rank}: ${e.message}`;
        killAll();
      });
      p.on('close', (code, signal) => {
        if (code !== 0 && !failure) {
          const tail = err[rank].trim().split('\n').slice(-3).join(' | ');
          failure = `rank ${rank} exited ${code ?? signal}${tail ? `: ${tail}` : ''}`;
          killAll();
        }
        if (--left === 0) {
          clearTimeout(timer);
          resolve(failure ? { error: failure } : { stdout: out[0] });
        }
      });
    });
  });
}

/** The m3 child command line: this bench in child mode, its settings in M3_BENCH_DIST. */
export function m3Child(cfg: Omit<ChildConfig, 'rank'>): (rank: number) => [string, string[], NodeJS.ProcessEnv] {
  return (rank) => [process.execPath, [path.join(ROOT, 'bin', 'bench.js'), 'dist', '--child'], { M3_BENCH_DIST: JSON.stringify({ ...cfg, rank }) }];
}

function jsonLines(stdout: string): Row[] {
  return stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Row);
}

const f = (v: unknown, d: number, w: number) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '-').padStart(w);

// ---------------------------------------------------------------------------------------------------------
// Part 1: all_reduce bandwidth, m3 (addon over ProcessGroupGloo) next to torch.distributed (gloo)

/** The addon's dist functions (cast locally: TorchAddon may not list them). */
interface DistAddon {
  fromArray(values: Float32Array, shape: number[], scalarType: number, device: string): number;
  free(handle: number): void;
  op(name: string, overload?: string): number;
  call(opId: number, args: unknown[]): unknown;
  setThreads(intraOp: number, blas?: number): unknown;
  dtypeCodes: { float32: number };
  distInfo(): { gloo: boolean; nccl: boolean };
  distInit(o: { masterAddr: string; masterPort: number; rank: number; worldSize: number; timeoutMs: number; backend: 'gloo' | 'nccl'; server: boolean; prefix: string }): void;
  allReduce(handle: number, timeoutMs?: number, inPlace?: boolean): number;
  barrier(timeoutMs?: number): void;
  distDestroy(): void;
}

interface AllReduceSpec {
  threads: number;
  warmup: number;
  sizes: { bytes: number; iters: number }[];
}

async function allReduceChild(cfg: ChildConfig): Promise<void> {
  const a = loadAddon();
  if (typeof a === 'string') throw new Error(a);
  const d = a as unknown as DistAddon;
  const spec = cfg.spec as unknown as AllReduceSpec;
  d.setThreads(spec.threads, spec.threads);
  d.distInit({ masterAddr: '127.0.0.1', masterPort: cfg.port, rank: cfg.rank, worldSize: cfg.world, timeoutMs: 60_000, backend: 'gloo', server: cfg.rank === 0, prefix: '' });
  const clone = d.op('aten::clone');
  for (const size of spec.sizes) {
    const n = size.bytes / 4;
    const h = d.fromArray(new Float32Array(n).fill(1), [n], d.dtypeCodes.float32, 'cpu');
    const times: number[] = [];
    const cloneTimes: number[] = [];
    for (let i = 0; i < spec.warmup + size.iters; i++) {
      d.barrier();
      const t0 = performance.now();
      const s = d.allReduce(h, undefined, true); // in place: `s` aliases h
      const dt = (performance.now() - t0) / 1000;
      d.free(s);
      if (i >= spec.warmup) times.push(dt);
    }
    // The clone alone (what a non-in-place allReduce adds), same buffer, same count.
    for (let i = 0; i < spec.warmup + size.iters; i++) {
      const t0 = performance.now();
      const c = d.call(clone, [h]) as number;
      const dt = (performance.now() - t0) / 1000;
      d.free(c);
      if (i >= spec.warmup) cloneTimes.push(dt);
    }
    d.free(h);
    if (cfg.rank === 0) process.stdout.write(JSON.stringify({ bytes: size.bytes, iters: size.iters, times_s: times, clone_times_s: cloneTimes }) + '\n');
  }
  d.barrier();
  d.distDestroy();
}

function bandwidthRow(impl: string, world: number, r: Row): Row {
  const bytes = r.bytes as number;
  const t = median(r.times_s as number[]);
  const row: Row = {
    bench: 'dist', part: 'allreduce', impl, world, threads: 1, dtype: 'float32', op: 'sum',
    mib: bytes / MiB, bytes, rounds: ROUNDS, warmup: WARMUP, iters: r.iters, time_s_median: t,
    algbw_gbps: bytes / t / 1e9, busbw_gbps: ((2 * (world - 1)) / world) * bytes / t / 1e9,
  };
  if (Array.isArray(r.clone_times_s)) {
    const c = median(r.clone_times_s as number[]);
    row.clone_s_median = c;
    row.clone_share = c / t;
  }
  return row;
}

async function allReduceRun(): Promise<Row[]> {
  const spec: AllReduceSpec = { threads: 1, warmup: WARMUP, sizes: SIZES };
  const errorRows = (impl: string, error: string) => SIZES.map((s) => ({ bench: 'dist', part: 'allreduce', impl, world: WORLD, mib: s.bytes / MiB, bytes: s.bytes, error }));

  // How to run one round of each: the m3 children, and torch.distributed (bench/dist_torch.py).
  const impls: { impl: string; unavailable?: string; round?: (port: number) => Promise<{ stdout: string } | { error: string }> }[] = [];
  const a = loadAddon();
  const info = typeof a === 'string' ? undefined : (a as unknown as Partial<DistAddon>).distInfo?.();
  impls.push({
    impl: 'm3',
    unavailable: typeof a === 'string' ? a : !info?.gloo ? 'the addon was built without gloo (distInfo().gloo is false)' : undefined,
    round: (port) => spawnRanks(WORLD, m3Child({ part: 'allreduce', world: WORLD, port, spec: spec as unknown as Record<string, unknown> })),
  });
  const py = torchPython();
  const script = path.join(__dirname, 'dist_torch.py');
  impls.push({
    impl: 'torch',
    unavailable: py ? undefined : 'no python3 with torch + gloo (apt-get install python3-torch, or set M3_PYTHON)',
    round: (port) => spawnRanks(WORLD, (rank) => [py!, [script, 'allreduce', String(rank), String(WORLD), String(port), JSON.stringify(spec)]]),
  });

  // Alternate m3 and torch for ROUNDS rounds and pool each one's times, so load from elsewhere on the
  // machine (it drifts) weighs on both alike.
  const pooled = new Map<string, Row>(); // impl/bytes -> { bytes, iters, times_s, clone_times_s }
  const failed = new Map<string, string>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const { impl, unavailable, round: runRound } of impls) {
      if (unavailable || failed.has(impl)) continue;
      const r = await runRound!(await freePort());
      if ('error' in r) {
        failed.set(impl, r.error);
        continue;
      }
      for (const x of jsonLines(r.stdout)) {
        const key = `${impl}/${x.bytes}`;
        const p = pooled.get(key) ?? { bytes: x.bytes, iters: 0, times_s: [], clone_times_s: x.clone_times_s ? [] : undefined };
        p.iters = (p.iters as number) + (x.iters as number);
        (p.times_s as number[]).push(...(x.times_s as number[]));
        if (x.clone_times_s) (p.clone_times_s as number[]).push(...(x.clone_times_s as number[]));
        pooled.set(key, p);
      }
    }
  }

  const rows: Row[] = [];
  for (const { impl, unavailable } of impls) {
    const error = unavailable ?? failed.get(impl);
    if (error) rows.push(...errorRows(impl, error));
    else for (const s of SIZES) rows.push(bandwidthRow(impl, WORLD, pooled.get(`${impl}/${s.bytes}`) ?? { bytes: s.bytes, iters: 0, times_s: [] }));
  }
  for (const r of rows) {
    if (r.impl !== 'm3' || typeof r.busbw_gbps !== 'number') continue;
    const t = rows.find((x) => x.impl === 'torch' && x.bytes === r.bytes && typeof x.busbw_gbps === 'number');
    if (!t) continue;
    r.bw_ratio_to_torch = r.busbw_gbps / (t.busbw_gbps as number);
    r.time_ratio_to_torch = (r.time_s_median as number) / (t.time_s_median as number);
  }
  return rows;
}

function allReduceTable(rows: Row[]): string {
  let s = `all_reduce (sum, float32), ${WORLD} processes × 1 thread, gloo on 127.0.0.1; median of the timed iterations of ${ROUNDS} alternating rounds, each after ${WARMUP} warm-up\n`;
  s += 'impl    size MiB  iters   time ms  algbw GB/s  busbw GB/s  bw m3/torch  clone ms (share)\n';
  for (const r of rows) {
    const head = `${String(r.impl).padEnd(6)} ${f(r.mib, 0, 9)}`;
    if (r.error) {
      s += `${head}  ${r.error}\n`;
      continue;
    }
    const clone = typeof r.clone_s_median === 'number' ? `${f(r.clone_s_median * 1000, 2, 8)} (${((r.clone_share as number) * 100).toFixed(0)}%)` : '-'.padStart(8);
    s += `${head} ${f(r.iters, 0, 6)} ${f((r.time_s_median as number) * 1000, 2, 9)} ${f(r.algbw_gbps, 3, 11)} ${f(r.busbw_gbps, 3, 11)} ${f(r.bw_ratio_to_torch, 2, 12)}  ${clone}\n`;
  }
  return s;
}

const allReducePart: DistPart = { name: 'allreduce', run: allReduceRun, child: allReduceChild, table: allReduceTable };

// ---------------------------------------------------------------------------------------------------------
// Part 2: bench-small training with 1 process, 2 independent processes and 2 data-parallel ranks

const TRAIN_STEPS = 6;
type TrainMode = 'one' | 'independent' | 'dp';

async function trainChild(cfg: ChildConfig): Promise<void> {
  const tf = await import('@tensorflow/tfjs');
  const { useBackend } = await import('../src/backend');
  const dist = await import('../src/backend/dist');
  const { averageGradients, sumOverRanks } = await import('../src/train/distributed');
  const { m3Step } = await import('../src/finetune/m3-step');
  const { parseConfig } = await import('../src/model/config');
  const { initModel } = await import('../src/model/m3');
  const { adamwStep, clipGradNorm, createAdamW } = await import('../src/train/adamw');
  const { SHAPES, fullBatch } = await import('./train');
  const mode = cfg.spec.mode as TrainMode;
  await useBackend('torch');
  const native = loadAddon() as unknown as DistAddon;
  const group = mode === 'dp'
    ? dist.initProcessGroup({ rank: cfg.rank, worldSize: cfg.world, localWorldSize: cfg.world, masterAddr: '127.0.0.1', masterPort: cfg.port, timeoutS: 120, server: cfg.rank === 0, prefix: '' })
    : null;
  if (mode === 'independent') native.setThreads(1, 1);
  if (mode === 'one') native.setThreads(1, 2);
  const shape = SHAPES['bench-small'];
  const config = parseConfig({
    model_type: 'xlm-roberta', vocab_size: shape.vocab, hidden_size: shape.hidden, num_hidden_layers: shape.layers, num_attention_heads: shape.heads,
    intermediate_size: shape.ff, max_position_embeddings: Math.max(shape.qlen, shape.plen) + 4, type_vocab_size: 1, layer_norm_eps: 1e-5,
    pad_token_id: 1, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0,
  });
  const model = initModel(config, { seed: 0, heads: true });
  const params = model.params as Map<string, import('@tensorflow/tfjs').Variable>;
  const opt = createAdamW({ lr: 1e-5, weightDecay: 0.01 });
  const batch = { queries: fullBatch(shape.batch, shape.qlen, shape.vocab, 1 + cfg.rank), passages: fullBatch(shape.batch * shape.group, shape.plen, shape.vocab, 2 + cfg.rank) };
  const times: number[] = [];
  const dpPhase: number[] = []; // averaging the gradients + the step metrics: all that data parallelism adds to a step
  let gradBytes = 0;
  for (let i = 0; i <= TRAIN_STEPS; i++) {
    const t0 = performance.now();
    const r = m3Step(model, batch, { loss: { temperature: 0.02, groupSize: shape.group, unified: true, selfDistill: true, specialTokenIds: [0, 1, 2, 3] }, subBatchSize: 0 });
    let grads = r.grads;
    gradBytes = [...grads.values()].reduce((a, g) => a + g.size * 4, 0);
    let loss = (await r.loss.data())[0];
    if (group) {
      const c0 = performance.now();
      grads = averageGradients(grads, group);
      loss = sumOverRanks([loss, 0], 'the step metrics')[0] / group.worldSize;
      if (i > 0) dpPhase.push((performance.now() - c0) / 1000);
    }
    const clipped = clipGradNorm(grads, 0);
    adamwStep(opt, params, clipped.grads, 1e-5);
    tf.dispose([r.loss, ...grads.values(), ...Object.values(r.parts)]);
    if (!Number.isFinite(loss)) throw new Error('non-finite loss');
    if (i > 0) times.push((performance.now() - t0) / 1000);
  }
  // the all_reduce alone: one gradient-sized buffer, in place, as averageGradients reduces its buckets
  const allreduce: number[] = [];
  if (group) {
    for (let i = 0; i < 5; i++) {
      const flat = tf.zeros([gradBytes / 4]);
      dist.barrier('bench');
      const t0 = performance.now();
      const s = dist.allReduceSum(flat, 'bench', true);
      allreduce.push((performance.now() - t0) / 1000);
      tf.dispose([flat, s]);
    }
    dist.barrier('bench');
  }
  const tokens = shape.batch * shape.qlen + shape.batch * shape.group * shape.plen;
  if (cfg.rank === 0) {
    process.stdout.write(JSON.stringify({ mode, world: cfg.world, step_s_median: median(times), tokens_per_step: tokens * cfg.world, grad_mib: gradBytes / MiB, allreduce_s_median: allreduce.length ? median(allreduce) : null, dp_phase_s_median: dpPhase.length ? median(dpPhase) : null }) + '\n');
  }
}

async function trainRun(): Promise<Row[]> {
  const rows: Row[] = [];
  const runs: { mode: TrainMode; world: number }[] = [{ mode: 'one', world: 1 }, { mode: 'independent', world: 2 }, { mode: 'dp', world: 2 }];
  for (const { mode, world } of runs) {
    const r = await spawnRanks(world, m3Child({ part: 'train', world, port: await freePort(), spec: { mode } }), 300_000);
    if ('error' in r) {
      rows.push({ bench: 'dist', part: 'train', mode, world, error: r.error });
      continue;
    }
    const x = jsonLines(r.stdout)[0];
    rows.push({ bench: 'dist', part: 'train', model: 'bench-small', ...x, tokens_per_s: (x.tokens_per_step as number) / (x.step_s_median as number) });
  }
  const one = rows.find((r) => r.mode === 'one' && !r.error);
  const ind = rows.find((r) => r.mode === 'independent' && !r.error);
  const dp = rows.find((r) => r.mode === 'dp' && !r.error);
  if (one && dp) dp.speedup_vs_one = (dp.tokens_per_s as number) / (one.tokens_per_s as number);
  if (dp) {
    // measured inside the data-parallel run itself (so load elsewhere on the machine weighs on both terms):
    // the time averaging and the metrics exchange took per step (bucketing, waiting for the slower rank,
    // the small metrics all_reduce) minus a bare all_reduce of the same bytes after a barrier
    const extra = (dp.dp_phase_s_median as number) - (dp.allreduce_s_median as number);
    dp.overhead_beyond_allreduce_s = extra;
    dp.overhead_share = extra / (dp.step_s_median as number);
  }
  if (ind && dp) dp.step_ratio_to_independent = (dp.step_s_median as number) / (ind.step_s_median as number);
  return rows;
}

function trainTable(rows: Row[]): string {
  let s = `bench-small training steps on torch (per process: 8 queries × group 4, 32/128 tokens), median of ${TRAIN_STEPS} after one warm-up\n`;
  s += 'mode          procs   step s   tokens/s  ×1 proc  DP phase s  all_reduce s  overhead beyond all_reduce\n';
  for (const r of rows) {
    const head = `${String(r.mode).padEnd(12)} ${f(r.world, 0, 6)}`;
    if (r.error) {
      s += `${head}  ${r.error}\n`;
      continue;
    }
    const over = typeof r.overhead_share === 'number' ? `${f((r.overhead_beyond_allreduce_s as number), 3, 7)} s (${((r.overhead_share as number) * 100).toFixed(1)}% of a step)` : '-';
    s += `${head} ${f(r.step_s_median, 3, 8)} ${f(r.tokens_per_s, 0, 10)} ${f(r.speedup_vs_one, 2, 8)} ${f(r.dp_phase_s_median, 3, 11)} ${f(r.allreduce_s_median, 3, 13)}  ${over}\n`;
  }
  return s;
}

const trainPart: DistPart = { name: 'train', run: trainRun, child: trainChild, table: trainTable };

export const PARTS: DistPart[] = [allReducePart, trainPart];

// ---------------------------------------------------------------------------------------------------------

export async function run(args: { json?: boolean; child?: boolean }): Promise<void> {
  if (args.child) {
    const cfg = JSON.parse(process.env.M3_BENCH_DIST ?? 'null') as ChildConfig | null;
    const part = PARTS.find((p) => p.name === cfg?.part);
    if (!cfg || !part) throw new Error(`dist --child: no part ${cfg?.part} (M3_BENCH_DIST is not set right)`);
    await part.child(cfg);
    process.exit(0); // the process group's threads must not keep the child alive
  }
  for (const part of PARTS) {
    const rows = await part.run();
    if (args.json) for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
    else process.stdout.write(part.table(rows));
  }
}
