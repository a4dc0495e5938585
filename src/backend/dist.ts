/**
 * The process group of data-parallel training: libtorch's c10d (a TCPStore for rendezvous, Gloo on CPU
 * tensors, NCCL on CUDA) through the addon, never a protocol of our own. One group per process, like
 * torch.distributed's default group. Everything here blocks until every rank has taken part or the
 * group's timeout passes; a failure names the lost rank (from the addon's heartbeats) in one line.
 *
 * `allGatherRows` is autograd-aware, as FlagEmbedding's cross-device negatives need: the forward returns
 * every rank's rows in rank order; the backward sums the incoming gradient over ranks and hands each rank
 * the gradient of its own rows. With the same loss on every rank and gradients averaged over ranks, that
 * gives exactly the gradient one process would compute over the global batch.
 */
import * as os from 'os';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../util/errors';
import { loadAddon, TorchAddon } from './torch/addon';

export interface GroupSpec {
  rank: number;
  worldSize: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Every wait (joining, each collective) is bounded by this. */
  timeoutS: number;
  /** This rank hosts the store (rank 0, unless torchrun's agent hosts it). */
  server: boolean;
  /** Key prefix in a shared store (torchrun's `/worker/attempt_N`). */
  prefix: string;
}

export interface Group {
  rank: number;
  worldSize: number;
  /** Processes of the group on this machine (they share its memory). */
  localWorldSize: number;
  timeoutS: number;
}

/** A collective failed because a rank is gone or silent: `lost` names them (empty when none could be named). */
export class LostRankError extends UserError {
  constructor(message: string, readonly lost: number[]) {
    super(message);
  }
}

let group: Group | null = null;

/** The current group, or null in a single process. */
export function currentGroup(): Group | null {
  return group;
}

/** Whether this build can train data-parallel, and if not why (for `m3 info` and the refusal). */
export function distributedSupport(): { gloo: boolean; nccl: boolean; reason?: string } {
  const a = loadAddon();
  if (typeof a === 'string') return { gloo: false, nccl: false, reason: `the torch addon is not available (${a})` };
  const { gloo, nccl } = a.distInfo();
  return gloo ? { gloo, nccl } : { gloo, nccl, reason: 'the torch addon was built without Gloo (install libgloo-dev, then npm run build:native)' };
}

function native(): TorchAddon {
  return loadAddon() as TorchAddon;
}

/** Joins the group described by `spec`; a wrong backend, a busy port, an unreachable master or a world that never fills is one line. */
export function initProcessGroup(spec: GroupSpec): Group {
  if (group) throw new Error('initProcessGroup: a process group exists already');
  const backend = tf.getBackend();
  if (backend !== 'torch') {
    throw new UserError(`data-parallel training (WORLD_SIZE=${spec.worldSize}) needs the torch backend, which runs c10d; the active backend is ${backend} (build the torch addon: apt-get install libtorch-dev libgloo-dev, npm run build:native)`);
  }
  const support = distributedSupport();
  const device = (tf.backend() as unknown as { device: 'cpu' | 'cuda' }).device;
  if (device === 'cuda' && !support.nccl) throw new UserError('data-parallel training on CUDA needs NCCL, which this build of the addon lacks (libtorch without CUDA or nccl.h)');
  if (device === 'cpu' && !support.gloo) throw new UserError(`data-parallel training: ${support.reason}`);
  const a = native();
  // One intra-op thread per process and the BLAS threads shared out, so N processes never run more threads than cores.
  if (device === 'cpu') a.setThreads(1, Math.max(1, Math.floor((os.availableParallelism?.() ?? os.cpus().length) / spec.localWorldSize)));
  try {
    a.distInit({
      masterAddr: spec.masterAddr, masterPort: spec.masterPort, rank: spec.rank, worldSize: spec.worldSize,
      timeoutMs: spec.timeoutS * 1000, backend: device === 'cuda' ? 'nccl' : 'gloo', server: spec.server, prefix: spec.prefix,
    });
  } catch (e) {
    throw new UserError(`rank ${spec.rank}: ${describeInitFailure((e as Error).message, spec)}`);
  }
  group = { rank: spec.rank, worldSize: spec.worldSize, localWorldSize: spec.localWorldSize, timeoutS: spec.timeoutS };
  return group;
}

function describeInitFailure(msg: string, s: GroupSpec): string {
  const at = `${s.masterAddr}:${s.masterPort}`;
  if (/address already in use|EADDRINUSE/i.test(msg)) return `MASTER_PORT ${s.masterPort} is in use on this host (rank 0 hosts the store there); choose a free port with --master-port or MASTER_PORT`;
  if (/world did not fill/.test(msg)) return `${msg.replace('world did not fill: ', '')} at ${at} (WORLD_SIZE=${s.worldSize}: were all ranks started, with the same MASTER_ADDR and MASTER_PORT?)`;
  if (/timed out|timeout|connect|refused|resolve|getaddrinfo|unreachable/i.test(msg)) return `cannot reach the master at ${at} within ${s.timeoutS} s (is rank 0 running there, and are MASTER_ADDR / MASTER_PORT right?)`;
  return `joining the process group at ${at} failed: ${msg.split('\n')[0]}`;
}

/** Leaves the group (after a final barrier the caller does); safe to call when there is none. */
export function destroyProcessGroup(): void {
  if (!group) return;
  group = null;
  native().distDestroy();
}

function active(): Group {
  if (!group) throw new Error('no process group');
  return group;
}

/** Sets the bound on each wait from now on (each stage of a pipeline has its own train.dist_timeout_s). */
export function setGroupTimeout(timeoutS: number): void {
  active().timeoutS = timeoutS;
}

/** Runs a collective with a timeout; on failure asks the heartbeats which rank is gone and throws one line naming it. */
function collective<T>(what: string, fn: (timeoutMs: number) => T, timeoutS?: number): T {
  const g = active();
  const limit = timeoutS ?? g.timeoutS;
  try {
    return fn(limit * 1000);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const reason = (e as Error).message.split('\n')[0];
    let lost: number[] = [];
    try {
      lost = native().lostRanks(1500);
    } catch {
      // the probe itself failing says nothing more
    }
    const who = lost.length ? `lost rank ${lost.join(', ')}` : `no answer within ${limit} s`;
    throw new LostRankError(`rank ${g.rank}: ${who} during ${what} (${reason})`, lost);
  }
}

/**
 * Elementwise sum over ranks (no gradient). `consume`: x is a temporary the caller never reads again, so
 * it may be reduced in place (no copy) when nothing else shares its memory.
 */
export function allReduceSum(x: tf.Tensor, what = 'all_reduce', consume = false): tf.Tensor {
  return collective(what, (timeoutMs) => tf.engine().runKernel('TorchAllReduce', { x }, { timeoutMs, inPlace: consume }) as tf.Tensor);
}

/** Every rank's rows concatenated in rank order, and where this rank's rows start; no gradient. */
export function allGatherConst(x: tf.Tensor, what = 'all_gather'): { gathered: tf.Tensor; offset: number; sizes: number[] } {
  const g = active();
  const [gathered, sizesT] = collective(what, (timeoutMs) => tf.engine().runKernel('TorchAllGather', { x }, { timeoutMs }) as tf.Tensor[]);
  const sizes = Array.from(sizesT.dataSync());
  sizesT.dispose();
  return { gathered, offset: sizes.slice(0, g.rank).reduce((a, b) => a + b, 0), sizes };
}

/** tf.customGrad's parameter type (not exported by @tensorflow/tfjs). */
type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

/** All ranks' rows with a gradient: d(own rows) = Σ over ranks of d(gathered)[own rows]. */
export function allGatherRows(x: tf.Tensor, what = 'all_gather'): tf.Tensor {
  const f = tf.customGrad(((xx: tf.Tensor) => {
    const { gathered, offset } = allGatherConst(xx, what);
    return {
      value: gathered,
      gradFunc: (dy: tf.Tensor) => tf.tidy(() => {
        const summed = allReduceSum(dy, `${what} (backward)`);
        return tf.slice(summed, offset, xx.shape[0]);
      }),
    };
  }) as unknown as CustomGradientFunc) as (x: tf.Tensor) => tf.Tensor;
  return f(x);
}

/** Rank `root`'s values of a tensor every rank passes with the same shape and dtype. */
export function broadcastFrom(x: tf.Tensor, root = 0, what = 'broadcast'): tf.Tensor {
  return collective(what, (timeoutMs) => tf.engine().runKernel('TorchBroadcast', { x }, { root, timeoutMs }) as tf.Tensor);
}

/**
 * Waits for every rank, bounded by the group's timeout or `timeoutS` (longer where rank 0 writes or
 * evaluates meanwhile: a rank that dies is still noticed at once, when its connection closes).
 */
export function barrier(what: string, timeoutS?: number): void {
  collective(what, (timeoutMs) => native().barrier(timeoutMs), timeoutS);
}

/** Rank 0 publishes `value` under `key`; every rank returns rank 0's value (waits up to the timeout for it). */
export function valueOfRank0(key: string, value: string): string {
  const g = active();
  return collective(`sharing ${key}`, () => {
    if (g.rank === 0) native().storeSet(key, value);
    return g.rank === 0 ? value : native().storeGet(key);
  });
}
