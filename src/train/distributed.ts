/**
 * Data parallelism for the training loop (the DistributedDataParallel part of torch, done explicitly):
 * joining the process group torchrun / Slurm / `m3 train --nproc-per-node` describe in the environment,
 * averaging gradients over ranks in flat buckets, global step metrics, and the start-up check that
 * every rank runs the same config, data and model as rank 0.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { allReduceSum, barrier, currentGroup, Group, initProcessGroup, setGroupTimeout, valueOfRank0 } from '../backend/dist';
import { MANIFEST_FILE } from '../data/manifest';
import { distEnvFrom } from '../util/dist-env';
import { UserError } from '../util/errors';

/** Gradients are all-reduced in flat buckets of at most this many bytes (DDP's default bucket_cap_mb). */
export const BUCKET_BYTES = 25 * 1024 * 1024;

/**
 * The group this process belongs to, joined on first use from the launch environment (RANK, WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT or Slurm's variables); null for a single process. Later stages of a pipeline
 * reuse the group with their own timeout.
 */
export function joinProcessGroup(timeoutS: number, env: NodeJS.ProcessEnv = process.env): Group | null {
  const existing = currentGroup();
  if (existing) {
    setGroupTimeout(timeoutS);
    return existing;
  }
  const d = distEnvFrom(env);
  if (!d) return null;
  return initProcessGroup({
    rank: d.rank, worldSize: d.worldSize, localWorldSize: d.localWorldSize, masterAddr: d.masterAddr, masterPort: d.masterPort,
    timeoutS, server: d.rank === 0 && !d.agentStore, prefix: d.agentStore ? `/worker/attempt_${d.restartCount}` : '',
  });
}

/** torchrun restarts a failed job with TORCHELASTIC_RESTART_COUNT > 0: such a run continues from its last checkpoint. */
export function isRestart(env: NodeJS.ProcessEnv = process.env): boolean {
  return Number(env.TORCHELASTIC_RESTART_COUNT ?? 0) > 0;
}

/**
 * The mean of every rank's gradients, in place of `grads` (which are disposed). Tensors are flattened
 * into buckets of at most BUCKET_BYTES in the map's order (the parameters' order, the same on every rank),
 * each bucket all-reduced once.
 */
export function averageGradients(grads: Map<string, tf.Tensor>, group: Group): Map<string, tf.Tensor> {
  const names = [...grads.keys()];
  const out = new Map<string, tf.Tensor>();
  let bucket: string[] = [];
  let bytes = 0;
  const flush = () => {
    if (!bucket.length) return;
    const members = bucket;
    const parts = tf.tidy(() => {
      const flat = tf.concat(members.map((n) => grads.get(n)!.reshape([-1])));
      const mean = tf.mul(allReduceSum(flat, 'the gradient all_reduce', true), 1 / group.worldSize);
      return tf.split(mean, members.map((n) => grads.get(n)!.size)).map((p, i) => p.reshape(grads.get(members[i])!.shape));
    });
    members.forEach((n, i) => {
      out.set(n, parts[i]);
      grads.get(n)!.dispose();
    });
    bucket = [];
    bytes = 0;
  };
  for (const n of names) {
    const size = grads.get(n)!.size * 4;
    if (bytes > 0 && bytes + size > BUCKET_BYTES) flush();
    bucket.push(n);
    bytes += size;
  }
  flush();
  return out;
}

/** Every rank's numbers summed (one small all_reduce): step metrics, token counts and stop requests travel together. */
export function sumOverRanks(values: number[], what: string): number[] {
  return tf.tidy(() => Array.from(allReduceSum(tf.tensor1d(values, 'float32'), what).dataSync()));
}

/** A fingerprint of the parameters (names, shapes, sums) — equal models give equal prints without hashing gigabytes. */
function paramsFingerprint(params: Map<string, tf.Variable>): string {
  const h = createHash('sha256');
  for (const [name, v] of params) {
    const [s, a] = tf.tidy(() => [tf.sum(v).dataSync()[0], tf.sum(tf.abs(v)).dataSync()[0]]);
    h.update(`${name}:${v.shape.join('x')}:${v.trainable}:${s}:${a}\n`);
  }
  return h.digest('hex');
}

let checks = 0;

/**
 * Refuses to start when this rank's config, data or model differs from rank 0's: each part is hashed
 * and rank 0's hashes are shared through the store.
 */
export function checkSameRun(group: Group, stage: string, parts: { config: unknown; data: string; params: Map<string, tf.Variable> }): void {
  const mine = {
    config: createHash('sha256').update(JSON.stringify(parts.config)).digest('hex'),
    data: createHash('sha256').update(parts.data).digest('hex'),
    model: paramsFingerprint(parts.params),
  };
  const theirs = JSON.parse(valueOfRank0(`${stage}/identity/${checks++}`, JSON.stringify(mine))) as typeof mine;
  const kinds = ['config', 'data', 'model'] as const;
  const differs = kinds.map((k) => (mine[k] === theirs[k] ? 0 : 1));
  // shared, so that rank 0 (to whom its own hashes always match) stops too, with the reason
  const counts = sumOverRanks(differs, 'the start-up check');
  const label = { config: 'config', data: 'training data (manifest)', model: 'model' };
  const k = kinds.find((_, i) => differs[i]) ?? kinds.find((_, i) => counts[i] > 0);
  if (!k) return;
  const i = kinds.indexOf(k);
  const who = differs[i] ? 'this rank\'s' : `${counts[i]} other rank(s)'`;
  throw new UserError(`rank ${group.rank}: ${stage}: ${who} ${label[k]} differs from rank 0's; every rank must run the same config, data and model`);
}

/**
 * How long ranks wait at a barrier while rank 0 writes a checkpoint, evaluates or prepares data: long,
 * since a rank that dies meanwhile is noticed at once anyway (its connection closes); the bound only
 * catches a silent hang.
 */
export function ioWaitS(group: Group): number {
  return Math.max(group.timeoutS, 3600);
}

/**
 * Work whose result lands on a shared disk (preparing a dataset into the cache): rank 0 does it while
 * the others wait, then they find it done (so no two processes prepare the same entry at once).
 */
export async function rank0First<T>(group: Group | null, what: string, fn: () => Promise<T>): Promise<T> {
  if (!group) return fn();
  if (group.rank === 0) {
    const r = await fn();
    barrier(what, ioWaitS(group));
    return r;
  }
  barrier(what, ioWaitS(group));
  return fn();
}

/** The part of the run every rank must share with rank 0 for `checkSameRun`: the manifests of its datasets. */
export function manifestsOf(dirs: string[]): string {
  return dirs.map((d) => fs.readFileSync(path.join(d, MANIFEST_FILE), 'utf8')).join('\n');
}
