/**
 * The resource plan of a training stage, before its first step: parameters, memory (weights, gradients,
 * AdamW state, activations of the largest batch, the step's peak and the checkpoint write on top of it),
 * checkpoint and final-model sizes, the disk `save_total_limit` checkpoints need, tokens per step.
 *
 * The activation model is fitted to what the torch backend holds at the peak of a training step (libtorch's
 * large blocks, measured with the addon's allocator statistics over 8 shapes: d 128–512, 2–6 layers, vocab
 * 8k–60k, 1.2k–8.5k tokens, every one within 3 %; and the bge-m3 shape), in floats. The fused ops free what
 * they saved as the backward pass goes, so a step peaks either at the end of the forward pass (activations)
 * or at its end (the embedding gradients of the passes), whichever holds more:
 *   per encoder pass   T·layers·(4.05·d + 2.57·ffn [+ 24.6·d with hidden dropout]) + 1.73·heads·layers·Σ rows·len²
 *   per step           max(passes + 17.6·T·d (unified heads), 2.6·vocab·d)
 *   RetroMAE           + the one-layer decoder as another pass + 3.5·vocab·d + 3.5·T·vocab (the MLM output layers)
 * The process's peak RSS adds the runtime (≈ 380 MB: Node, TF.js, libtorch) and, while the final model and
 * checkpoints are written, a host copy of the weights (the model export) and a couple of tensors in flight
 * (checkpoints stream tensor by tensor) on top of the step's peak, which libtorch's caching allocator keeps
 * mapped. bench/plan.ts prints estimate vs measured peak RSS.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { BatchShape } from '../data';
import { UserError } from '../util/errors';

const MB = 1024 * 1024;
const RUNTIME_MB = 380;

/** What a stage knows before its first step (the runner fills it in from its model and data). */
export interface PlanInput {
  stage: string;
  kind: 'retromae' | 'finetune';
  unified: boolean;
  model: { vocab: number; hidden: number; layers: number; heads: number; ffn: number; hiddenDropout: boolean };
  params: number;
  trainable: number;
  /** Elements of the largest parameter (a checkpoint streams tensors, a few in flight at once). */
  largestParam: number;
  /** Parameters the final model dir holds (encoder and heads; RetroMAE adds its decoder). */
  finalParams: number;
  shapes: BatchShape[];
  /** GradCache sub-batch (0: one pass). */
  subBatchSize: number;
  maxGradNorm: number;
  gradAccum: number;
  saveSteps: number;
  saveTotalLimit: number;
  totalSteps: number;
  worldSize: number;
  /** A best model is written beside final/ (evaluation on). */
  keepsBest: boolean;
}

export interface Plan {
  stage: string;
  params: number;
  trainable_params: number;
  frozen_params: number;
  weights_mb: number;
  gradients_mb: number;
  optimizer_mb: number;
  activations_mb: number;
  /** The most memory one training step holds (RSS), per process. */
  step_peak_mb: number;
  /** What writing the final model and checkpoints adds on top of it. */
  checkpoint_write_mb: number;
  /** The run's expected peak RSS per process. */
  peak_memory_mb: number;
  checkpoint_mb: number;
  final_mb: number;
  checkpoints_kept: number;
  disk_needed_mb: number;
  tokens_per_step: number;
  largest_batch: { dataset: string; bucket: string; rows: number; group: number; query_length: number; passage_length: number; sub_batch: number | null };
  steps: number;
}

/** Floats of activations (and gradients) one training step of this batch shape holds at its peak. */
function activationFloats(i: PlanInput, s: BatchShape): number {
  const { vocab: V, hidden: d, layers, heads, ffn, hiddenDropout } = i.model;
  const perToken = 4.05 * d + 2.57 * ffn + (hiddenDropout ? 24.6 * d : 0);
  const pass = (rows: number, len: number, l = layers) => rows * len * l * perToken + 1.73 * heads * l * rows * len * len;
  // the step's one word-embedding gradient (both encoders share a gather) and the block cache's slack around it
  const embeddingGrads = 2.6 * V * d;
  if (i.kind === 'retromae') {
    const t = s.batchSize * s.passageLength;
    return pass(s.batchSize, s.passageLength) + pass(s.batchSize, s.passageLength, 1) + 3.5 * V * d + 3.5 * t * V;
  }
  const q = s.batchSize;
  const p = s.batchSize * s.groupSize;
  const tokens = q * s.queryLength + p * s.passageLength;
  const heads3 = i.unified ? 17.6 * tokens * d : 0;
  if (i.subBatchSize > 0 && i.subBatchSize < p) {
    // GradCache: one sub-batch under a tape at a time, plus every row's cached representation and its gradient
    const sub = Math.min(i.subBatchSize, q);
    const chunk = Math.max(pass(sub, s.queryLength), pass(Math.min(i.subBatchSize, p), s.passageLength));
    return Math.max(chunk + 3 * tokens * d + heads3, embeddingGrads);
  }
  return Math.max(pass(q, s.queryLength) + pass(p, s.passageLength) + heads3, embeddingGrads);
}

function tokensOf(i: PlanInput, s: BatchShape): number {
  return i.kind === 'retromae' ? s.batchSize * s.passageLength : s.batchSize * (s.queryLength + s.groupSize * s.passageLength);
}

export function estimatePlan(i: PlanInput): Plan {
  if (!i.shapes.length) throw new Error('estimatePlan: no batch shape');
  const largest = i.shapes.reduce((a, b) => (activationFloats(i, b) > activationFloats(i, a) ? b : a));
  const mb = (bytes: number) => Math.ceil(bytes / MB);
  const weights = 4 * i.params;
  const optimizer = 8 * i.trainable;
  const clip = i.maxGradNorm > 0 ? 4 * i.trainable : 0; // the clipped copy of every gradient
  const nonEmbeddingGrads = 4 * Math.max(0, i.trainable - i.model.vocab * i.model.hidden);
  const activations = 4 * activationFloats(i, largest) + nonEmbeddingGrads;
  const stepPeak = RUNTIME_MB * MB + weights + optimizer + clip + activations;
  const checkpoint = weights + optimizer;
  const checkpointWrite = weights + 2 * 4 * i.largestParam;
  const finalBytes = 4 * i.finalParams;
  const written = (i.saveSteps > 0 ? Math.floor(i.totalSteps / i.saveSteps) : 0) + (i.saveSteps > 0 && i.totalSteps % i.saveSteps === 0 ? 0 : 1);
  // a new checkpoint is complete before the oldest is removed: limit + 1 exist for a moment
  const kept = i.saveTotalLimit > 0 ? Math.min(i.saveTotalLimit + 1, written) : written;
  return {
    stage: i.stage,
    params: i.params,
    trainable_params: i.trainable,
    frozen_params: i.params - i.trainable,
    weights_mb: mb(weights),
    gradients_mb: mb(4 * i.trainable),
    optimizer_mb: mb(optimizer),
    activations_mb: mb(activations),
    step_peak_mb: mb(stepPeak),
    checkpoint_write_mb: mb(checkpointWrite),
    peak_memory_mb: mb(stepPeak) + mb(checkpointWrite),
    checkpoint_mb: mb(checkpoint),
    final_mb: mb(finalBytes),
    checkpoints_kept: kept,
    disk_needed_mb: mb(kept * checkpoint + finalBytes * (i.keepsBest ? 2 : 1)),
    tokens_per_step: tokensOf(i, largest) * i.gradAccum * i.worldSize,
    largest_batch: {
      dataset: largest.dataset, bucket: largest.bucket, rows: largest.batchSize, group: largest.groupSize,
      query_length: largest.queryLength, passage_length: largest.passageLength, sub_batch: i.subBatchSize > 0 ? i.subBatchSize : null,
    },
    steps: i.totalSteps,
  };
}

/** The plan in a few lines for stderr (and `m3 plan`'s table). */
export function formatPlan(p: Plan): string {
  const m = (v: number) => (v >= 10240 ? `${(v / 1024).toFixed(1)} GB` : `${v} MB`);
  const b = p.largest_batch;
  const shape = b.query_length ? `${b.rows} × (1 + ${b.group} passages), ${b.query_length}/${b.passage_length} tokens` : `${b.rows} × ${b.passage_length} tokens`;
  return [
    `${p.stage}: plan — ${(p.params / 1e6).toFixed(1)} M parameters (${(p.trainable_params / 1e6).toFixed(1)} M trainable), ${p.steps} steps, ${p.tokens_per_step} tokens per step`,
    `  memory per process: weights ${m(p.weights_mb)}, gradients ${m(p.gradients_mb)}, AdamW ${m(p.optimizer_mb)}, activations ${m(p.activations_mb)} ` +
      `(largest batch: ${shape}, bucket ${b.bucket}${b.sub_batch ? `, GradCache sub-batch ${b.sub_batch}` : ''})`,
    `  peak: ${m(p.step_peak_mb)} in a step, ${m(p.peak_memory_mb)} while saving the model or a checkpoint`,
    `  disk: checkpoint ${m(p.checkpoint_mb)}, final ${m(p.final_mb)}; ${m(p.disk_needed_mb)} for ${p.checkpoints_kept} checkpoint(s) + final`,
  ].join('\n');
}

/** Memory this run may use: $M3_MEMORY_AVAILABLE_MB, else the cgroup's limit headroom, else MemAvailable (+ what this process holds already). */
export function memoryAvailable(): { mb: number; source: string } {
  const env = Number(process.env.M3_MEMORY_AVAILABLE_MB);
  if (process.env.M3_MEMORY_AVAILABLE_MB && Number.isFinite(env)) return { mb: env, source: 'M3_MEMORY_AVAILABLE_MB' };
  const own = process.memoryUsage().rss / MB;
  const read = (f: string) => {
    try {
      return fs.readFileSync(f, 'utf8').trim();
    } catch {
      return null;
    }
  };
  const limits: [string, string][] = [['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'], ['/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.usage_in_bytes']];
  let cgroup = Infinity;
  for (const [limitFile, usageFile] of limits) {
    const limit = Number(read(limitFile));
    const usage = Number(read(usageFile));
    if (Number.isFinite(limit) && limit > 0 && limit < 2 ** 60 && Number.isFinite(usage)) cgroup = Math.min(cgroup, (limit - usage) / MB + own);
  }
  const meminfo = /MemAvailable:\s+(\d+) kB/.exec(read('/proc/meminfo') ?? '');
  const avail = meminfo ? Number(meminfo[1]) / 1024 + own : Infinity;
  if (cgroup < avail) return { mb: Math.floor(cgroup), source: 'the cgroup memory limit' };
  return { mb: Math.floor(avail), source: 'MemAvailable' };
}

/** Free space of the file system `dir` is (or would be) on: $M3_DISK_FREE_MB, else statfs. */
export function diskFree(dir: string): { mb: number; source: string } {
  const env = Number(process.env.M3_DISK_FREE_MB);
  if (process.env.M3_DISK_FREE_MB && Number.isFinite(env)) return { mb: env, source: 'M3_DISK_FREE_MB' };
  let d = path.resolve(dir);
  while (!fs.existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  const s = fs.statfsSync(d);
  return { mb: Math.floor((s.bavail * s.bsize) / MB), source: `free space under ${d}` };
}

/**
 * Refuses a run that cannot fit, before its first step: the planned peak of every process on this machine
 * against the memory available, the disk it needs against the free space of its output dir.
 */
export function refuseUnfit(p: Plan, outputDir: string, o: { localWorldSize: number; checkDisk: boolean }): void {
  const mem = memoryAvailable();
  const need = p.peak_memory_mb * o.localWorldSize;
  const per = o.localWorldSize > 1 ? ` (${o.localWorldSize} processes × ${p.peak_memory_mb} MB)` : '';
  if (need > mem.mb) {
    throw new UserError(`${p.stage}: the plan needs about ${need} MB of memory at its peak${per}, but ${mem.mb} MB are available (${mem.source}); ` +
      'lower data.batch_size, set train.sub_batch_size (GradCache), shorten the max lengths, or run anyway with --force');
  }
  if (!o.checkDisk) return;
  const disk = diskFree(outputDir);
  if (p.disk_needed_mb > disk.mb) {
    throw new UserError(`${p.stage}: the run needs about ${p.disk_needed_mb} MB of disk for ${p.checkpoints_kept} checkpoint(s) of ${p.checkpoint_mb} MB and the final model, ` +
      `but ${disk.mb} MB are free (${disk.source}); lower train.save_total_limit, free some space, or run anyway with --force`);
  }
}

/** Parameter counts of a parameter map: all, and those the optimizer updates. */
export function countParams(params: Map<string, { size: number; trainable: boolean }>): { params: number; trainable: number; largestParam: number } {
  let all = 0;
  let trainable = 0;
  let largestParam = 0;
  for (const v of params.values()) {
    all += v.size;
    if (v.trainable) trainable += v.size;
    largestParam = Math.max(largestParam, v.size);
  }
  return { params: all, trainable, largestParam };
}

/** The model part of a PlanInput, from an encoder config. */
export function planModel(c: { vocabSize: number; hidden: number; layers: number; heads: number; intermediate: number; hiddenDropout: number }): PlanInput['model'] {
  return { vocab: c.vocabSize, hidden: c.hidden, layers: c.layers, heads: c.heads, ffn: c.intermediate, hiddenDropout: c.hiddenDropout > 0 };
}

/** What a stage runner supplies; the training loop adds the run's length, checkpointing and world. */
export type StageResources = Omit<PlanInput, 'stage' | 'totalSteps' | 'gradAccum' | 'saveSteps' | 'saveTotalLimit' | 'maxGradNorm' | 'worldSize'>;
