/**
 * What `m3 demo` says at its start: which backend runs it and roughly how long it will take there, from
 * measured figures (seconds per optimizer step of each stage kind at the shipped demo shapes, seconds per
 * evaluation of NFCorpus dev) times the steps and evaluations the configs ask for.
 *
 * The figures come from the 2-core development machine (README, "Two commands"): torch — an evaluation
 * (37.6 s) and RetroMAE's steps (0.55 s) measured at load < 1, pairs and unified the rest of the demo's
 * measured 8.3-minute total, split by the pairs bench (0.136 s at half the width); wasm — a partial run
 * (149 s per evaluation, RetroMAE 4.3 s/step, pairs 0.29 steps/s) and its "near 50 minutes" total for unified.
 */
import { StageConfig, StageKind } from './stage-config';

/** Seconds per optimizer step by stage kind, and per evaluation of NFCorpus dev (EVAL_TEXTS texts encoded). */
export interface StageTimes { perStep: Record<StageKind, number>; perEval: number }

/** NFCorpus dev as the demo evaluates it: 3,633 documents and 324 queries; other sets scale by their size. */
export const EVAL_TEXTS = 3633 + 324;

/** Measured on 2 cores (see the file comment); keyed by backend and device. */
export const MEASURED_TIMES: Readonly<Record<string, StageTimes>> = {
  'torch/cpu': { perStep: { retromae: 0.55, pairs: 0.35, unified: 1.1 }, perEval: 37.6 },
  'wasm/cpu': { perStep: { retromae: 4.3, pairs: 3.45, unified: 6.0 }, perEval: 149 },
};

/** What the demo will run: stage configs (its own, then its ablation arms'), evaluations and their size. */
export interface DemoWork { stages: StageConfig[]; evaluations: number; evalTexts: number }

/** Seconds the demo's work takes on `backend` (`torch/cpu`, `wasm/cpu`, ...) from an empty run dir; null where nothing was measured. */
export function estimateSeconds(backend: string, w: DemoWork): number | null {
  const t = MEASURED_TIMES[backend];
  if (!t) return null;
  return w.stages.reduce((s, c) => s + Math.max(c.train.max_steps, 0) * t.perStep[c.stage], 0) + w.evaluations * t.perEval * (w.evalTexts / EVAL_TEXTS);
}

/** The line `m3 demo` prints first (stderr). */
export function estimateLine(backend: string, w: DemoWork): string {
  const s = estimateSeconds(backend, w);
  const torch = minutes(estimateSeconds('torch/cpu', w)!);
  if (s === null) return `demo: backend ${backend}; no measured demo time for it (torch on 2 CPU cores: about ${torch})\n`;
  const other = backend === 'torch/cpu' ? '' : `; torch on the same cores: about ${torch} — see npm install's line on libtorch`;
  return `demo: backend ${backend}; about ${minutes(s)} on 2 cores (measured step and evaluation times; more cores are faster, a loaded machine slower)${other}\n`;
}

const minutes = (s: number) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);
