/**
 * Training checkpoints: OUT/checkpoints/step-N/{weights.safetensors, optimizer.safetensors, state.json},
 * each written into a dot-named temp dir and renamed, so a crash leaves either the whole checkpoint or
 * none; the newest `keep` are kept. state.json holds the step counters and the data position.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../util/errors';
import { faultPoint, recoverDir, staleTemps, tempSibling, writeDirAtomic, writeFileAtomic } from '../util/fsx';
import { readSafetensors, writeSafetensorsFd } from '../model/weights/safetensors';
import { TensorMap, TensorSource } from '../model/weights/types';

export interface CheckpointState {
  /** Optimizer steps taken. */
  step: number;
  /** Micro-batches consumed (step × grad_accum unless the run ended mid-accumulation). */
  microStep: number;
  /** Where the data reader resumes. */
  dataPosition: unknown;
  /** Anything else a stage needs (e.g. best eval metric). */
  extra?: Record<string, unknown>;
}

export interface Checkpoint {
  dir: string;
  state: CheckpointState;
  weights: TensorMap;
  optimizer: TensorMap;
}

const STEP_DIR = /^step-(\d+)$/;

type Writable = TensorMap | Map<string, TensorSource>;

/** A file inside the checkpoint's temp dir (the dir's rename makes the whole checkpoint atomic). */
function streamSafetensors(file: string, tensors: Writable): void {
  const fd = fs.openSync(file, 'w');
  try {
    writeSafetensorsFd(fd, tensors);
  } finally {
    fs.closeSync(fd);
  }
}

export function checkpointsDir(outputDir: string): string {
  return path.join(outputDir, 'checkpoints');
}

/** Complete checkpoints, oldest first (temp dirs are dot-named and never match). */
export function listCheckpoints(outputDir: string): { step: number; dir: string }[] {
  const root = checkpointsDir(outputDir);
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root)
    .map((name) => ({ m: STEP_DIR.exec(name), name }))
    .filter((x): x is { m: RegExpExecArray; name: string } => !!x.m && fs.existsSync(path.join(root, x.name, 'state.json')))
    .map(({ m, name }) => ({ step: Number(m[1]), dir: path.join(root, name) }))
    .sort((a, b) => a.step - b.step);
}

/** Weights and moments stream to disk tensor by tensor (sources read on demand), so a save adds about one tensor to memory. */
export async function saveCheckpoint(outputDir: string, state: CheckpointState, weights: Writable, optimizer: Writable, keep: number): Promise<string> {
  const dir = path.join(checkpointsDir(outputDir), `step-${state.step}`);
  await writeDirAtomic(dir, (tmp) => {
    streamSafetensors(path.join(tmp, 'weights.safetensors'), weights);
    streamSafetensors(path.join(tmp, 'optimizer.safetensors'), optimizer);
    // state.json last: its presence marks a complete checkpoint even if the rename were not atomic
    fs.writeFileSync(path.join(tmp, 'state.json'), JSON.stringify(state, null, 2));
  });
  if (keep > 0) {
    const all = listCheckpoints(outputDir);
    for (const old of all.slice(0, Math.max(0, all.length - keep))) {
      // renamed to a dot name first: a crash mid-removal never leaves a half-deleted step-N that looks complete
      const trash = tempSibling(old.dir);
      faultPoint('prune', old.dir);
      fs.renameSync(old.dir, trash);
      fs.rmSync(trash, { recursive: true, force: true });
    }
  }
  // temp dirs of checkpoints that a crash interrupted
  const root = checkpointsDir(outputDir);
  for (const n of staleTemps(root)) fs.rmSync(path.join(root, n), { recursive: true, force: true });
  return dir;
}

export function loadCheckpoint(dir: string): Checkpoint {
  let state: CheckpointState;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
  } catch (e) {
    throw new UserError(`${dir}/state.json: unreadable checkpoint state (${(e as Error).message})`);
  }
  return {
    dir,
    state,
    weights: readSafetensors(path.join(dir, 'weights.safetensors')),
    optimizer: readSafetensors(path.join(dir, 'optimizer.safetensors')),
  };
}

/** Appends one JSON line to OUT/metrics.jsonl. */
export function appendMetrics(outputDir: string, row: Record<string, unknown>): void {
  fs.mkdirSync(outputDir, { recursive: true });
  fs.appendFileSync(path.join(outputDir, 'metrics.jsonl'), JSON.stringify(row) + '\n');
}

/** The `eval/…` metrics of the newest evaluation row at or before `step` in OUT/metrics.jsonl, or null. */
export function lastEvaluation(outputDir: string, step: number): Record<string, number> | null {
  const file = path.join(outputDir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return null;
  let found: Record<string, number> | null = null;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(line);
    } catch {
      continue; // blank, or cut by a crash
    }
    const ev = Object.entries(row).filter((e): e is [string, number] => e[0].startsWith('eval/') && typeof e[1] === 'number');
    if (ev.length && Number(row.step) <= step) found = Object.fromEntries(ev);
  }
  return found;
}

/** Marks a finished stage: resume of a finished run is a no-op. */
export function markFinished(outputDir: string, info: Record<string, unknown>): void {
  writeFileAtomic(path.join(outputDir, 'finished.json'), JSON.stringify(info, null, 2));
}

export function isFinished(outputDir: string): boolean {
  return readFinished(outputDir) !== null;
}

/** What `markFinished` recorded for a finished stage (with its `final/` present), else null. */
export function readFinished(outputDir: string): Record<string, unknown> | null {
  recoverDir(path.join(outputDir, 'final'));
  const file = path.join(outputDir, 'finished.json');
  if (!fs.existsSync(file) || !fs.existsSync(path.join(outputDir, 'final'))) return null;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    throw new UserError(`${file}: damaged (not JSON); remove it to train the stage again`);
  }
}

/** On resume, drops metric rows logged after the checkpoint (they will be logged again). */
export function truncateMetrics(outputDir: string, step: number): void {
  const file = path.join(outputDir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return;
  const keep = fs.readFileSync(file, 'utf8').split('\n').filter((l) => {
    if (!l.trim()) return false;
    try {
      const r = JSON.parse(l) as { step?: number };
      return r.step === undefined || r.step <= step;
    } catch {
      return false; // a line cut by a crash
    }
  });
  writeFileAtomic(file, keep.map((l) => l + '\n').join(''));
}
