/**
 * The training loop shared by every stage: gradient accumulation, global-norm clipping, AdamW with a
 * warmup/decay schedule, a NaN/∞ guard, checkpoints every `save_steps` (and at the end), exact resume,
 * graceful stop on SIGINT/SIGTERM, metrics.jsonl and a progress bar. A stage supplies the parameters,
 * the data and one micro-batch's loss + gradients; everything random derives from (seed, step, micro).
 *
 * Data parallel (a process group joined by the stage runner): each rank's gradients are averaged over
 * ranks before clipping, the logged loss and gradient norm are global, a stop (signal) is agreed by all
 * ranks at the same step, and rank 0 alone writes checkpoints, metrics, evaluations and the final model
 * while the others wait at a barrier.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../util/errors';
import { ensureWritableDir } from '../util/fsx';
import { Progress } from '../util/progress';
import { deriveSeed } from '../util/rng';
import { AdamW, adamwStep, clipGradNorm, createAdamW, disposeAdamW, exportAdamW, importAdamW } from './adamw';
import { appendMetrics, isFinished, lastEvaluation, listCheckpoints, loadCheckpoint, markFinished, saveCheckpoint, truncateMetrics } from './checkpoint';
import { reportsToTensorboard, TrainConfig } from './config';
import { EventLog, openEventLog, resetEventFiles } from './tensorboard';
import { lrAt, warmupSteps } from './schedule';
import { barrier, currentGroup, Group, LostRankError } from '../backend/dist';
import { setBf16Autocast } from '../backend';
import { averageGradients, checkSameRun, ioWaitS, sumOverRanks } from './distributed';
import { estimatePlan, formatPlan, Plan, refuseUnfit, StageResources } from './plan';

export type { TrainConfig };
import { toSource } from '../model/variables';
import { TensorMap, TensorSource } from '../model/weights/types';

export interface MicroResult {
  loss: tf.Scalar;
  grads: Map<string, tf.Tensor>;
  /** Loss terms to log (detached scalars). */
  parts?: Record<string, tf.Scalar>;
  tokens: number;
}

/** A saved model's steps and its latest evaluation (`eval/<mode>/<metric>`, null when none ran). */
export interface Trained {
  steps: number;
  eval: Record<string, number> | null;
}

/** What a stage provides to the loop. */
export interface Stage<B> {
  name: string;
  /** Every parameter, by checkpoint name; `trainable` marks what the optimizer updates. */
  params: Map<string, tf.Variable>;
  /** Batches per epoch (for max_steps = −1 and the progress bar). */
  batchesPerEpoch(): number;
  /** The next batch; after the last of an epoch comes the first of the next. */
  next(): Promise<B>;
  /** Where the data resumes ({epoch, batch}); saved with every checkpoint. */
  position(): { epoch: number; batch: number };
  seek(p: { epoch: number; batch: number }): void;
  /** Loss and gradients of one micro-batch; `seed` drives its dropout and masking. */
  micro(batch: B, ctx: { step: number; micro: number; seed: number }): MicroResult;
  /** Writes the finished model to `dir` (HF layout): `trained` says how far and how it scored, for its model card. */
  saveFinal(dir: string, trained: Trained): Promise<void>;
  /** Optional evaluation, run after optimizer steps where `due` says so (on rank 0). `score` picks the best model. */
  evaluate?: { due(step: number, totalSteps: number): boolean; run(): Promise<{ metrics: Record<string, number>; score: number }> };
  /** What every rank must share with rank 0 besides the parameters (checked at start under data parallelism). */
  identity?: { config: unknown; data: string };
  /** Model and batch shapes for the resource plan printed (and checked) before the first step. */
  resources?: StageResources;
}

export interface RunOptions {
  outputDir: string;
  resume?: boolean;
  /** Stop after this many optimizer steps in this process (tests simulate a crash with it). */
  stopAfter?: number;
  /** Run even when the plan says memory or disk will not suffice. */
  force?: boolean;
  /** Return the resource plan without training (`m3 plan`). */
  planOnly?: boolean;
  /** Write no checkpoint (the plan's probe, in a scratch dir). */
  noCheckpoint?: boolean;
}

export interface RunResult {
  steps: number;
  finalDir: string;
  stoppedEarly: boolean;
  alreadyFinished?: boolean;
  plan?: Plan;
}

export async function runTraining<B>(stage: Stage<B>, cfg: TrainConfig, opts: RunOptions): Promise<RunResult> {
  const out = opts.outputDir;
  const finalDir = path.join(out, 'final');
  if (opts.resume && isFinished(out)) {
    process.stderr.write(`${stage.name}: already finished (${finalDir}); nothing to do\n`);
    return { steps: 0, finalDir, stoppedEarly: false, alreadyFinished: true };
  }
  const group = currentGroup();
  const lead = !group || group.rank === 0;
  const { total, warmup } = planSteps(stage, cfg);
  const plan = stage.resources ? estimatePlan({
    ...stage.resources, stage: stage.name, totalSteps: total, gradAccum: cfg.grad_accum, saveSteps: cfg.save_steps,
    saveTotalLimit: cfg.save_total_limit, maxGradNorm: cfg.max_grad_norm, worldSize: group?.worldSize ?? 1,
  }) : undefined;
  if (opts.planOnly) return { steps: 0, finalDir, stoppedEarly: false, plan };
  setBf16Autocast(cfg.bf16);
  if (lead) ensureWritableDir(out);
  if (group) checkSameRun(group, stage.name, { config: stage.identity?.config ?? null, data: stage.identity?.data ?? '', params: stage.params });
  if (plan && lead) process.stderr.write(formatPlan(plan) + '\n');
  if (plan && !opts.force) refuseUnfit(plan, out, { localWorldSize: group?.localWorldSize ?? 1, checkDisk: lead && !opts.noCheckpoint });
  const opt = createAdamW({ lr: cfg.learning_rate, betas: [cfg.adam_beta1, cfg.adam_beta2], eps: cfg.adam_epsilon, weightDecay: cfg.weight_decay });
  const stop = watchStopSignals(stage.name);
  const progress = new Progress(stage.name, total, 'step', lead);
  const run: Run<B> = { stage, cfg, out, opt, total, warmup, progress, group, lead, noCheckpoint: !!opts.noCheckpoint, events: null };
  try {
    const state = resumeOrStartFresh(run, opts.resume);
    if (lead && reportsToTensorboard(cfg.report_to)) run.events = openEventLog(out, state.lastSaved >= 0 ? state.step : null);
    progress.update(state.step);
    return await trainSteps(run, state, finalDir, stop, opts.stopAfter);
  } catch (e) {
    if (!(e instanceof LostRankError)) throw e;
    const good = listCheckpoints(out).pop();
    throw new UserError(`${stage.name}: ${e.message}; ${good ? `last checkpoint: ${good.dir} (continue with --resume)` : 'no checkpoint was written yet'}`);
  } finally {
    run.events?.close();
    stop.remove();
    disposeAdamW(opt);
    setBf16Autocast(false);
  }
}

/** The loop proper: steps until max_steps, an agreed stop, or `stopAfter` steps in this process. */
async function trainSteps<B>(run: Run<B>, state: LoopState, finalDir: string, stop: StopSignals, stopAfter?: number): Promise<RunResult> {
  const { stage, cfg, out } = run;
  let stepsThisRun = 0;
  while (state.step < run.total) {
    const stopping = await outOfMemoryAsUserError(run, state.step + 1, () => trainStep(run, state, stop.requested));
    stepsThisRun += 1;
    if (cfg.save_steps > 0 && state.step % cfg.save_steps === 0) await checkpoint(run, state);
    if (stopping || (stopAfter !== undefined && stepsThisRun >= stopAfter)) {
      await checkpoint(run, state);
      run.progress.done();
      if (stopping) process.stderr.write(`${stage.name}: stopped at step ${state.step}; continue with the same command and --resume\n`);
      return { steps: state.step, finalDir, stoppedEarly: true };
    }
  }
  run.progress.done();
  await checkpoint(run, state);
  if (run.lead) {
    await stage.saveFinal(finalDir, { steps: state.step, eval: lastEvaluation(out, state.step) });
    markFinished(out, { stage: stage.name, steps: state.step, final: finalDir });
  }
  if (run.group) barrier('the final save', ioWaitS(run.group));
  return { steps: state.step, finalDir, stoppedEarly: false };
}

/** What libtorch, our allocator, V8 and CUDA say when memory runs out. */
const OUT_OF_MEMORY = /bad_alloc|can't allocate memory|out of memory|Array buffer allocation failed|Cannot allocate memory/i;

/** A step whose tensors cannot be allocated ends with one line naming the step and the last checkpoint. */
async function outOfMemoryAsUserError<T>(run: Run<unknown>, step: number, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const msg = (e as Error)?.message ?? String(e);
    if (e instanceof UserError || !OUT_OF_MEMORY.test(msg)) throw e;
    const good = listCheckpoints(run.out).pop();
    throw new UserError(`${run.stage.name}: out of memory in step ${step} (${msg.split('\n')[0].slice(0, 160)}); ` +
      `${good ? `last checkpoint: ${good.dir}` : 'no checkpoint was written yet'}; lower data.batch_size or set train.sub_batch_size (see m3 plan)`);
  }
}

/** What stays fixed for the whole run; the parts of the loop below share it. */
interface Run<B> {
  stage: Stage<B>;
  cfg: TrainConfig;
  out: string;
  opt: AdamW;
  total: number;
  warmup: number;
  progress: Progress;
  /** The process group under data parallelism, else null; `lead` is rank 0 (or the only process). */
  group: Group | null;
  lead: boolean;
  noCheckpoint: boolean;
  /** TensorBoard event files (train.report_to), on rank 0; null when off. */
  events: EventLog | null;
}

/** Where the loop is: exactly what a checkpoint records besides weights, optimizer and data position. */
interface LoopState {
  step: number;
  micro: number;
  /** Best evaluation score so far (−∞ before the first). */
  best: number;
  /** The step of the newest checkpoint on disk, −1 for none: a step is never saved twice. */
  lastSaved: number;
}

/** The run's length in optimizer steps (max_steps, else epochs × batches / grad_accum) and its warmup. */
function planSteps<B>(stage: Stage<B>, cfg: TrainConfig): { total: number; warmup: number } {
  const perEpoch = stage.batchesPerEpoch();
  if (perEpoch <= 0) throw new UserError(`${stage.name}: the training data yields no batch (too few rows for the batch size?)`);
  const stepsPerEpoch = Math.max(1, Math.floor(perEpoch / cfg.grad_accum));
  const total = cfg.max_steps > 0 ? cfg.max_steps : Math.max(1, Math.ceil(cfg.epochs * stepsPerEpoch));
  return { total, warmup: warmupSteps(total, cfg.warmup_ratio, cfg.warmup_steps) };
}

/**
 * Exact resume: weights, optimizer moments, counters, best score and data position come back from the
 * newest checkpoint, and metrics logged after it are dropped (event files too). A fresh run starts with empty metrics.
 */
function resumeOrStartFresh<B>(run: Run<B>, resume: boolean | undefined): LoopState {
  const { stage, opt, out, total } = run;
  const ckpts = resume ? listCheckpoints(out) : [];
  if (!ckpts.length) {
    if (resume && run.lead) process.stderr.write(`${stage.name}: no checkpoint in ${out}; starting fresh\n`);
    if (run.lead) {
      fs.rmSync(path.join(out, 'metrics.jsonl'), { force: true });
      resetEventFiles(out, null);
    }
    return { step: 0, micro: 0, best: -Infinity, lastSaved: -1 };
  }
  const ck = loadCheckpoint(ckpts[ckpts.length - 1].dir);
  // A data position counts global batches of world × per-process rows: it means the same data only at the same world size.
  const savedWorld = (ck.state.extra?.world_size as number | undefined) ?? 1;
  const world = run.group?.worldSize ?? 1;
  if (savedWorld !== world) {
    throw new UserError(`${ck.dir}: written by a run of ${savedWorld} process(es); resume it with the same number (this run has ${world}), or start a new output_dir from its weights`);
  }
  loadWeights(stage.params, ck.weights, ck.dir);
  importAdamW(opt, ck.state.step, ck.optimizer);
  const step = ck.state.step;
  const state: LoopState = { step, micro: ck.state.microStep, best: (ck.state.extra?.best as number | undefined) ?? -Infinity, lastSaved: step };
  stage.seek(ck.state.dataPosition as { epoch: number; batch: number });
  if (run.lead) {
    truncateMetrics(out, step);
    resetEventFiles(out, step);
    process.stderr.write(`${stage.name}: resuming from ${ck.dir} (step ${step} of ${total})\n`);
  }
  return state;
}

/** SIGINT/SIGTERM let the current step finish and checkpoint instead of killing the process mid-write. */
interface StopSignals {
  requested: () => boolean;
  remove: () => void;
}

function watchStopSignals(name: string): StopSignals {
  let stopRequested = false;
  const onSignal = (sig: string) => {
    if (stopRequested) return;
    stopRequested = true;
    process.stderr.write(`\n${name}: ${sig} received; finishing the current step and writing a checkpoint\n`);
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);
  return {
    requested: () => stopRequested,
    remove: () => {
      process.off('SIGINT', sigint);
      process.off('SIGTERM', sigterm);
    },
  };
}

/** Saves a checkpoint of the current step unless one exists (a stop right after a periodic save, the final save). */
async function checkpoint<B>(run: Run<B>, state: LoopState): Promise<void> {
  if (state.lastSaved === state.step || run.noCheckpoint) return;
  const { stage } = run;
  if (run.lead) {
    const adam = exportAdamW(run.opt);
    const extra = { best: state.best, world_size: run.group?.worldSize ?? 1 };
    await saveCheckpoint(run.out, { step: state.step, microStep: state.micro, dataPosition: stage.position(), extra }, exportParams(stage.params), adam.tensors, run.cfg.save_total_limit);
    run.events?.sync();
  }
  state.lastSaved = state.step;
  if (run.group) barrier(`the checkpoint of step ${state.step}`, ioWaitS(run.group));
}

/**
 * One optimizer step: accumulate, average over ranks, clip, refuse non-finite, update, log, then the
 * stage's evaluation if due. Returns whether any rank asked to stop (every rank gets the same answer).
 */
async function trainStep<B>(run: Run<B>, state: LoopState, stopRequested: () => boolean): Promise<boolean> {
  const { stage, cfg } = run;
  const t0 = performance.now();
  const sum = await accumulateMicroBatches(stage, cfg, state);
  // ranks agree on a stop when they exchange the step's metrics; one process reads its flag after the step
  const agreed = run.group ? globalStep(sum, run.group, stopRequested()) : false;
  const { norm, grads } = clipGradNorm(sum.grads, cfg.max_grad_norm);
  refuseNonFinite(run, state.step, sum, norm, grads);
  const lr = lrAt(cfg.schedule, cfg.learning_rate, state.step, run.warmup, run.total);
  adamwStep(run.opt, stage.params, grads, lr);
  if (grads !== sum.grads) tf.dispose([...grads.values()]);
  tf.dispose([...sum.grads.values()]);
  state.step += 1;
  logStep(run, state.step, sum, lr, norm, (performance.now() - t0) / 1000);
  await evaluateAndKeepBest(run, state);
  return run.group ? agreed : stopRequested();
}

/**
 * Makes a rank's step sum global, in place: gradients averaged over ranks (so N ranks × b rows give
 * the update of 1 × N·b), loss terms averaged, tokens summed; returns whether any rank asked to stop.
 */
function globalStep(sum: StepSum, group: Group, stopRequested: boolean): boolean {
  sum.grads = averageGradients(sum.grads, group);
  const keys = Object.keys(sum.parts);
  const totals = sumOverRanks([sum.loss, ...keys.map((k) => sum.parts[k]), sum.tokens, stopRequested ? 1 : 0], 'the step metrics');
  sum.loss = totals[0] / group.worldSize;
  keys.forEach((k, i) => (sum.parts[k] = totals[1 + i] / group.worldSize));
  sum.tokens = totals[1 + keys.length];
  return totals[2 + keys.length] > 0;
}

/** One step's gradients and loss, each micro-batch scaled by 1/grad_accum so they average. */
interface StepSum {
  grads: Map<string, tf.Tensor>;
  loss: number;
  parts: Record<string, number>;
  tokens: number;
}

/** Runs grad_accum micro-batches; each gets its own seed from (seed, step, micro), so resume replays them exactly. */
async function accumulateMicroBatches<B>(stage: Stage<B>, cfg: TrainConfig, state: LoopState): Promise<StepSum> {
  let tokens = 0;
  let loss = 0;
  const parts: Record<string, number> = {};
  let acc: Map<string, tf.Tensor> | null = null;
  for (let a = 0; a < cfg.grad_accum; a++) {
    const batch = await stage.next();
    const r = stage.micro(batch, { step: state.step, micro: state.micro, seed: deriveSeed(cfg.seed, state.step, state.micro) });
    state.micro += 1;
    tokens += r.tokens;
    const scale = 1 / cfg.grad_accum;
    loss += (await r.loss.data())[0] * scale;
    for (const [k, v] of Object.entries(r.parts ?? {})) parts[k] = (parts[k] ?? 0) + (await v.data())[0] * scale;
    tf.dispose([r.loss, ...Object.values(r.parts ?? {})]);
    acc = accumulate(acc, r.grads, scale);
  }
  return { grads: acc!, loss, parts, tokens };
}

/** A NaN/∞ update would poison the weights and every later checkpoint: stop before applying it, naming the last good one. */
function refuseNonFinite<B>(run: Run<B>, step: number, sum: StepSum, norm: number, clipped: Map<string, tf.Tensor>): void {
  if (Number.isFinite(sum.loss) && Number.isFinite(norm)) return;
  tf.dispose([...sum.grads.values(), ...(clipped === sum.grads ? [] : clipped.values())]);
  const good = listCheckpoints(run.out).pop();
  throw new UserError(`${run.stage.name}: non-finite ${Number.isFinite(sum.loss) ? 'gradient norm' : 'loss'} at step ${step + 1}; stopped without applying it. ` +
    (good ? `Last good checkpoint: ${good.dir} (resume with --resume)` : 'No checkpoint was written yet.'));
}

/** A metrics row every log_steps and at the last step; the progress bar every step. */
function logStep<B>(run: Run<B>, step: number, sum: StepSum, lr: number, norm: number, secs: number): void {
  const { stage } = run;
  const row: Record<string, unknown> = { stage: stage.name, step, epoch: stage.position().epoch, loss: sum.loss, lr, grad_norm: norm, tokens_per_s: sum.tokens / secs, step_s: secs, ...sum.parts };
  if (run.lead && (step % Math.max(1, run.cfg.log_steps) === 0 || step === run.total)) logRow(run, row);
  run.progress.update(step, `loss ${sum.loss.toFixed(4)} lr ${lr.toExponential(2)} ${Math.round(sum.tokens / secs)} tok/s`);
}

/** A row of metrics.jsonl, and of the event files when TensorBoard is on. */
function logRow<B>(run: Run<B>, row: Record<string, unknown>): void {
  appendMetrics(run.out, row);
  run.events?.log(row);
}

/** Logs the stage's evaluation when one is due and keeps the best-scoring model so far in <out>/best. */
async function evaluateAndKeepBest<B>(run: Run<B>, state: LoopState): Promise<void> {
  const { stage } = run;
  if (!stage.evaluate?.due(state.step, run.total)) return;
  if (run.lead) {
    const ev = await stage.evaluate.run();
    logRow(run, { stage: stage.name, step: state.step, ...ev.metrics });
    if (ev.score > state.best) {
      state.best = ev.score;
      await stage.saveFinal(path.join(run.out, 'best'), { steps: state.step, eval: ev.metrics });
    }
  }
  if (run.group) barrier(`the evaluation after step ${state.step}`, ioWaitS(run.group));
}

function accumulate(acc: Map<string, tf.Tensor> | null, grads: Map<string, tf.Tensor>, scale: number): Map<string, tf.Tensor> {
  const out = acc ?? new Map<string, tf.Tensor>();
  for (const [k, g] of grads) {
    const scaled = scale === 1 ? g : tf.mul(g, scale);
    if (scaled !== g) g.dispose();
    const prev = out.get(k);
    if (prev) {
      out.set(k, tf.add(prev, scaled));
      tf.dispose([prev, scaled]);
    } else out.set(k, scaled);
  }
  return out;
}

/** The parameters by checkpoint name, read one at a time as they are written. */
export function exportParams(params: Map<string, tf.Variable>): Map<string, TensorSource> {
  const out = new Map<string, TensorSource>();
  for (const [k, v] of params) out.set(k, toSource(v));
  return out;
}

export function loadWeights(params: Map<string, tf.Variable>, weights: TensorMap, where: string): void {
  for (const [k, v] of params) {
    const t = weights.get(k);
    if (!t) throw new UserError(`${where}: checkpoint lacks parameter '${k}' (was the config changed?)`);
    if (t.shape.join() !== v.shape.join()) throw new UserError(`${where}: parameter '${k}' has shape [${t.shape}], the model has [${v.shape}]`);
    tf.tidy(() => v.assign(tf.tensor(t.data, t.shape, 'float32')));
  }
}

/** variableGrads keys gradients by TF.js variable name; the framework speaks checkpoint names. */
export function renameGrads(params: Map<string, tf.Variable>, grads: Record<string, tf.Tensor>): Map<string, tf.Tensor> {
  const byVar = new Map([...params].map(([n, v]) => [v.name, n]));
  const out = new Map<string, tf.Tensor>();
  for (const [k, g] of Object.entries(grads)) out.set(byVar.get(k) ?? k, g);
  return out;
}
