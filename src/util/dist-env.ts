/**
 * Who this process is in a data-parallel run, read from the launch environment with no side effects:
 * torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, ..., MASTER_ADDR/PORT; `m3 train --nproc-per-node` sets
 * the same ones), else a Slurm job step's (`srun`: SLURM_PROCID, SLURM_NTASKS, ...). A bad value is a
 * one-line UserError naming the variable, so a misconfigured job fails at start instead of hanging in the
 * rendezvous.
 */
import { UserError } from './errors';

export interface DistEnv {
  rank: number; worldSize: number; localRank: number; localWorldSize: number;
  masterAddr: string; masterPort: number;
  /** TORCHELASTIC_RESTART_COUNT (0 when absent) */
  restartCount: number;
  /** torchrun's static rendezvous hosts the store itself (TORCHELASTIC_USE_AGENT_STORE=True): workers connect as clients under the prefix `/worker/attempt_<restartCount>` */
  agentStore: boolean;
  source: 'torchrun' | 'slurm';
}

type Env = NodeJS.ProcessEnv;

/** torchrun's default port, and the one a Slurm step uses without MASTER_PORT. */
export const DEFAULT_MASTER_PORT = 29500;

/** A variable's value; an empty one counts as unset (`RANK= m3 train` is a single process). */
function value(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** An integer variable, at least `min`. */
function int(env: Env, name: string, min = 0): number | undefined {
  const v = value(env, name);
  if (v === undefined) return undefined;
  if (!/^[+-]?\d+$/.test(v.trim())) throw new UserError(`${name}=${v} is not an integer`);
  const n = Number(v);
  if (n < 0 && min >= 0) throw new UserError(`${name}=${v} is negative`);
  if (n < min) throw new UserError(`${name}=${v} must be at least ${min}`);
  return n;
}

function port(env: Env, name: string): number | undefined {
  const v = value(env, name);
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new UserError(`${name}=${v} is not a port (1..65535)`);
  return n;
}

function bool(env: Env, name: string): boolean {
  const v = value(env, name);
  if (v === undefined) return false;
  if (/^(true|1)$/i.test(v)) return true;
  if (/^(false|0)$/i.test(v)) return false;
  throw new UserError(`${name}=${v} is not True or False`);
}

function below(a: string, av: number, b: string, bv: number): void {
  if (av >= bv) throw new UserError(`${a}=${av} is not below ${b}=${bv}`);
}

/** null when this is a single process (no RANK/WORLD_SIZE, and no Slurm job step with more than one task). */
export function distEnvFrom(env: NodeJS.ProcessEnv): DistEnv | null {
  if (value(env, 'RANK') !== undefined) return fromTorchrun(env);
  if (value(env, 'SLURM_STEP_ID') !== undefined || value(env, 'SLURM_STEPID') !== undefined) {
    const fromSlurm = slurm(env);
    if (fromSlurm !== undefined) return fromSlurm;
  }
  const world = int(env, 'WORLD_SIZE', 1);
  if (world !== undefined && world > 1) throw new UserError(`WORLD_SIZE=${world} is set but RANK is not (a launcher sets both, with MASTER_ADDR and MASTER_PORT)`);
  return null;
}

/** torchrun (or anything that sets its variables). Without LOCAL_* the whole world is taken as one node. */
function fromTorchrun(env: Env): DistEnv | null {
  const rank = int(env, 'RANK')!;
  const worldSize = int(env, 'WORLD_SIZE', 1);
  if (worldSize === undefined) throw new UserError(`RANK=${rank} is set but WORLD_SIZE is not`);
  below('RANK', rank, 'WORLD_SIZE', worldSize);
  if (worldSize === 1) return null;
  const localWorldSize = int(env, 'LOCAL_WORLD_SIZE', 1) ?? worldSize;
  if (localWorldSize > worldSize) throw new UserError(`LOCAL_WORLD_SIZE=${localWorldSize} is above WORLD_SIZE=${worldSize}`);
  const localRank = int(env, 'LOCAL_RANK') ?? rank % localWorldSize;
  below('LOCAL_RANK', localRank, 'LOCAL_WORLD_SIZE', localWorldSize);
  const masterAddr = value(env, 'MASTER_ADDR');
  if (masterAddr === undefined) throw new UserError(`MASTER_ADDR is not set (RANK=${rank} of WORLD_SIZE=${worldSize} needs rank 0's host)`);
  const masterPort = port(env, 'MASTER_PORT');
  if (masterPort === undefined) throw new UserError(`MASTER_PORT is not set (RANK=${rank} of WORLD_SIZE=${worldSize} needs rank 0's port)`);
  return {
    rank, worldSize, localRank, localWorldSize, masterAddr, masterPort,
    restartCount: int(env, 'TORCHELASTIC_RESTART_COUNT') ?? 0,
    agentStore: bool(env, 'TORCHELASTIC_USE_AGENT_STORE'),
    source: 'torchrun',
  };
}

/**
 * An `srun` job step (SLURM_STEP_ID set: the batch script itself also carries SLURM_NTASKS and SLURM_PROCID=0,
 * but it is one process). undefined when the step has a single task.
 */
function slurm(env: Env): DistEnv | undefined {
  const worldSize = int(env, 'SLURM_NTASKS', 1);
  if (worldSize === undefined || worldSize === 1) return undefined;
  const rank = int(env, 'SLURM_PROCID');
  if (rank === undefined) throw new UserError(`SLURM_PROCID is not set in a job step of SLURM_NTASKS=${worldSize}`);
  below('SLURM_PROCID', rank, 'SLURM_NTASKS', worldSize);
  const localRank = int(env, 'SLURM_LOCALID');
  if (localRank === undefined) throw new UserError(`SLURM_LOCALID is not set in a job step of SLURM_NTASKS=${worldSize}`);
  const [localWorldSize, from] = slurmLocalWorldSize(env);
  if (localRank >= localWorldSize) throw new UserError(`SLURM_LOCALID=${localRank} is not below this node's task count ${localWorldSize} (from ${from})`);
  return {
    rank, worldSize, localRank, localWorldSize,
    masterAddr: value(env, 'MASTER_ADDR') ?? slurmFirstHost(env),
    masterPort: port(env, 'MASTER_PORT') ?? DEFAULT_MASTER_PORT,
    restartCount: int(env, 'TORCHELASTIC_RESTART_COUNT') ?? 0,
    agentStore: false,
    source: 'slurm',
  };
}

/** SLURM_NTASKS_PER_NODE, else this node's (SLURM_NODEID's, the first without it) entry of SLURM_TASKS_PER_NODE. */
function slurmLocalWorldSize(env: Env): [number, string] {
  const perNode = int(env, 'SLURM_NTASKS_PER_NODE', 1);
  if (perNode !== undefined) return [perNode, `SLURM_NTASKS_PER_NODE=${perNode}`];
  const list = value(env, 'SLURM_TASKS_PER_NODE');
  if (list === undefined) throw new UserError('SLURM_TASKS_PER_NODE is not set (nor SLURM_NTASKS_PER_NODE): cannot tell how many tasks share this node');
  const counts = expandTasksPerNode(list, 'SLURM_TASKS_PER_NODE');
  const node = int(env, 'SLURM_NODEID') ?? 0;
  return [counts[Math.min(node, counts.length - 1)], `SLURM_TASKS_PER_NODE=${list}`];
}

/** The first host of the step's node list (the job's without it): where SLURM_PROCID=0 runs. */
function slurmFirstHost(env: Env): string {
  for (const name of ['SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST', 'SLURM_NODELIST']) {
    const list = value(env, name);
    if (list !== undefined && list !== '(null)') return firstHost(list, name);
  }
  throw new UserError('SLURM_JOB_NODELIST is not set: set MASTER_ADDR to the host of SLURM_PROCID=0');
}

/** Slurm's task counts per node, `4(x2),3` → [4, 4, 3]. `name` is the variable named in errors. */
export function expandTasksPerNode(list: string, name = 'SLURM_TASKS_PER_NODE'): number[] {
  const out: number[] = [];
  for (const part of list.split(',')) {
    const m = /^\s*(\d+)(?:\(x(\d+)\))?\s*$/.exec(part);
    if (!m || Number(m[1]) < 1 || (m[2] !== undefined && Number(m[2]) < 1)) throw new UserError(`${name}=${list} is not a Slurm task count list like 4(x2),3`);
    for (let i = 0; i < Number(m[2] ?? 1); i++) out.push(Number(m[1]));
  }
  return out;
}

type Part = string | { lo: string; hi: string }[];

/** Expanding more names than this is refused (a typo like `node[1-99999999]`). */
const MAX_HOSTS = 100000;

/**
 * Slurm's compressed hostlist, expanded in order: `node[01-03,07],gpu5` → node01 node02 node03 node07 gpu5;
 * zero-padding follows the range's start, several brackets in one name multiply (`r[1-2]n[1-2]`).
 * `name` is the variable named in errors.
 */
export function expandHostlist(list: string, name = 'SLURM_JOB_NODELIST'): string[] {
  const hosts: string[] = [];
  for (const parts of parseHostlist(list, name)) {
    let names = [''];
    for (const p of parts) {
      if (typeof p === 'string') { names = names.map((n) => n + p); continue; }
      const count = p.reduce((k, { lo, hi }) => k + Number(hi) - Number(lo) + 1, 0);
      if (hosts.length + names.length * count > MAX_HOSTS) throw new UserError(`${name}=${list} names more than ${MAX_HOSTS} hosts`);
      const suffixes = p.flatMap(({ lo, hi }) => {
        const out: string[] = [];
        for (let i = Number(lo); i <= Number(hi); i++) out.push(String(i).padStart(lo.length, '0'));
        return out;
      });
      names = names.flatMap((n) => suffixes.map((s) => n + s));
    }
    hosts.push(...names);
  }
  return hosts;
}

/** The first host of a Slurm hostlist (rank 0's under block and cyclic distribution alike), without expanding the rest. */
export function firstHost(list: string, name = 'SLURM_JOB_NODELIST'): string {
  return parseHostlist(list, name)[0].map((p) => (typeof p === 'string' ? p : p[0].lo)).join('');
}

/** Each comma-separated name as its literal text and bracketed range lists, validated. */
function parseHostlist(list: string, name: string): Part[][] {
  const bad = (why: string) => new UserError(`${name}=${list} is not a Slurm hostlist (${why})`);
  return splitTopLevel(list.trim(), bad).map((item) => {
    if (item === '') throw bad('an empty host name');
    return [...item.matchAll(/\[([^\]]*)\]|[^[\]]+/g)].map((m): Part => {
      if (m[1] === undefined) return m[0];
      return m[1].split(',').map((r) => {
        const rm = /^(\d+)(?:-(\d+))?$/.exec(r.trim());
        if (!rm) throw bad(`range '${r}'`);
        if (Number(rm[2] ?? rm[1]) < Number(rm[1])) throw bad(`range '${r}' runs backwards`);
        return { lo: rm[1], hi: rm[2] ?? rm[1] };
      });
    });
  });
}

/** Splits at commas outside brackets; rejects unbalanced and nested brackets. */
function splitTopLevel(s: string, bad: (why: string) => Error): string[] {
  const items: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '[') { if (depth++) throw bad('nested brackets'); }
    else if (c === ']') { if (!depth--) throw bad("a ']' without '['"); }
    else if (c === ',' && !depth) { items.push(s.slice(start, i).trim()); start = i + 1; }
  }
  if (depth) throw bad("a '[' without ']'");
  items.push(s.slice(start).trim());
  return items;
}
