/**
 * The training loop shared by every stage: gradient accumulation, global-norm clipping, AdamW with a
 * warmup/decay schedule, a NaN/∞ guard, checkpoints every `save_steps` (and at the end), exact resume,
 * graceful stop on SIGINT/SIGTERM, metrics.jsonl and a progress bar. A stage supplies the parameters,
 * the data and one micro-batch's loss + gradients; everything random derives from (seed, step, micro).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../util/errors';
import { ensureWritableDir } from '../util/fsx';
import { Progress } from '../util/progress';
import { deriveSeed } from '../util/rng';
import { adamwStep, clipGradNorm, createAdamW, disposeAdamW, exportAdamW, importAdamW } from './adamw';
import { appendMetrics, isFinished, listCheckpoints, loadCheckpoint, markFinished, saveCheckpoint, truncateMetrics } from './checkpoint';
import { TrainConfig } from './config';
import { lrAt, warmupSteps } from './schedule';

export type { TrainConfig };
import { toHost } from '../model/variables';
import { TensorMap } from '../model/weights/types';

export interface MicroResult {
  loss: tf.Scalar;
  grads: Map<string, tf.Tensor>;
  /** Loss terms to log (detached scalars). */
  parts?: Record<string, tf.Scalar>;
  tokens: number;
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
  /** Writes the finished model to `dir` (HF layout). */
  saveFinal(dir: string): Promise<void>;
  /** Optional evaluation after optimizer step `step`; null when none is due. `score` picks the best model. */
  evaluate?(step: number, totalSteps: number): Promise<{ metrics: Record<string, number>; score: number } | null>;
}

export interface RunOptions {
  outputDir: string;
  resume?: boolean;
  /** Stop after this many optimizer steps in this process (tests simulate a crash with it). */
  stopAfter?: number;
}

export interface RunResult {
  steps: number;
  finalDir: string;
  stoppedEarly: boolean;
  alreadyFinished?: boolean;
}

export async function runTraining<B>(stage: Stage<B>, cfg: TrainConfig, opts: RunOptions): Promise<RunResult> {
  const out = opts.outputDir;
  const finalDir = path.join(out, 'final');
  if (opts.resume && isFinished(out)) {
    process.stderr.write(`${stage.name}: already finished (${finalDir}); nothing to do\n`);
    return { steps: 0, finalDir, stoppedEarly: false, alreadyFinished: true };
  }
  ensureWritableDir(out);
  const perEpoch = stage.batchesPerEpoch();
  if (perEpoch <= 0) throw new UserError(`${stage.name}: the training data yields no batch (too few rows for the batch size?)`);
  const stepsPerEpoch = Math.max(1, Math.floor(perEpoch / cfg.grad_accum));
  const total = cfg.max_steps > 0 ? cfg.max_steps : Math.max(1, Math.ceil(cfg.epochs * stepsPerEpoch));
  const warmup = warmupSteps(total, cfg.warmup_ratio, cfg.warmup_steps);
  const opt = createAdamW({ lr: cfg.learning_rate, betas: [cfg.adam_beta1, cfg.adam_beta2], eps: cfg.adam_epsilon, weightDecay: cfg.weight_decay });

  let step = 0;
  let micro = 0;
  let best = -Infinity;
  const ckpts = opts.resume ? listCheckpoints(out) : [];
  if (ckpts.length) {
    const ck = loadCheckpoint(ckpts[ckpts.length - 1].dir);
    loadWeights(stage.params, ck.weights, ck.dir);
    importAdamW(opt, ck.state.step, ck.optimizer);
    step = ck.state.step;
    micro = ck.state.microStep;
    best = (ck.state.extra?.best as number | undefined) ?? -Infinity;
    stage.seek(ck.state.dataPosition as { epoch: number; batch: number });
    truncateMetrics(out, step);
    process.stderr.write(`${stage.name}: resuming from ${ck.dir} (step ${step} of ${total})\n`);
  } else {
    if (opts.resume) process.stderr.write(`${stage.name}: no checkpoint in ${out}; starting fresh\n`);
    fs.rmSync(path.join(out, 'metrics.jsonl'), { force: true });
  }

  let stopRequested = false;
  const onSignal = (sig: string) => {
    if (stopRequested) return;
    stopRequested = true;
    process.stderr.write(`\n${stage.name}: ${sig} received; finishing the current step and writing a checkpoint\n`);
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);

  const progress = new Progress(stage.name, total, 'step');
  progress.update(step);
  let lastSaved = ckpts.length ? step : -1;
  let stepsThisRun = 0;
  const save = async () => {
    if (lastSaved === step) return;
    const adam = exportAdamW(opt);
    await saveCheckpoint(out, { step, microStep: micro, dataPosition: stage.position(), extra: { best } }, exportParams(stage.params), adam.tensors, cfg.save_total_limit);
    lastSaved = step;
  };
  try {
    while (step < total) {
      const t0 = performance.now();
      let tokens = 0;
      let lossSum = 0;
      const partSums: Record<string, number> = {};
      let acc: Map<string, tf.Tensor> | null = null;
      for (let a = 0; a < cfg.grad_accum; a++) {
        const batch = await stage.next();
        const r = stage.micro(batch, { step, micro, seed: deriveSeed(cfg.seed, step, micro) });
        micro += 1;
        tokens += r.tokens;
        const scale = 1 / cfg.grad_accum;
        lossSum += (await r.loss.data())[0] * scale;
        for (const [k, v] of Object.entries(r.parts ?? {})) partSums[k] = (partSums[k] ?? 0) + (await v.data())[0] * scale;
        tf.dispose([r.loss, ...Object.values(r.parts ?? {})]);
        acc = accumulate(acc, r.grads, scale);
      }
      const { norm, grads } = clipGradNorm(acc!, cfg.max_grad_norm);
      if (!Number.isFinite(lossSum) || !Number.isFinite(norm)) {
        tf.dispose([...acc!.values(), ...(grads === acc ? [] : grads.values())]);
        const good = listCheckpoints(out).pop();
        throw new UserError(`${stage.name}: non-finite ${Number.isFinite(lossSum) ? 'gradient norm' : 'loss'} at step ${step + 1}; stopped without applying it. ` +
          (good ? `Last good checkpoint: ${good.dir} (resume with --resume)` : 'No checkpoint was written yet.'));
      }
      const lr = lrAt(cfg.schedule, cfg.learning_rate, step, warmup, total);
      adamwStep(opt, stage.params, grads, lr);
      if (grads !== acc) tf.dispose([...grads.values()]);
      tf.dispose([...acc!.values()]);
      step += 1;
      stepsThisRun += 1;
      const secs = (performance.now() - t0) / 1000;
      const row: Record<string, unknown> = { stage: stage.name, step, epoch: stage.position().epoch, loss: lossSum, lr, grad_norm: norm, tokens_per_s: tokens / secs, step_s: secs, ...partSums };
      if (step % Math.max(1, cfg.log_steps) === 0 || step === total) appendMetrics(out, row);
      progress.update(step, `loss ${lossSum.toFixed(4)} lr ${lr.toExponential(2)} ${Math.round(tokens / secs)} tok/s`);
      const ev = stage.evaluate ? await stage.evaluate(step, total) : null;
      if (ev) {
        appendMetrics(out, { stage: stage.name, step, ...ev.metrics });
        if (ev.score > best) {
          best = ev.score;
          await stage.saveFinal(path.join(out, 'best'));
        }
      }
      if (cfg.save_steps > 0 && step % cfg.save_steps === 0) await save();
      if (stopRequested || (opts.stopAfter !== undefined && stepsThisRun >= opts.stopAfter)) {
        await save();
        progress.done();
        if (stopRequested) process.stderr.write(`${stage.name}: stopped at step ${step}; continue with the same command and --resume\n`);
        return { steps: step, finalDir, stoppedEarly: true };
      }
    }
    progress.done();
    await save();
    await stage.saveFinal(finalDir);
    markFinished(out, { stage: stage.name, steps: step, final: finalDir });
    return { steps: step, finalDir, stoppedEarly: false };
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    disposeAdamW(opt);
  }
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

export function exportParams(params: Map<string, tf.Variable>): TensorMap {
  const out: TensorMap = new Map();
  for (const [k, v] of params) out.set(k, toHost(v));
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
