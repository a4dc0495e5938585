/**
 * `m3 train|pipeline CONFIG --nproc-per-node N`: a data-parallel launcher for users without Python, with
 * torchrun's contract. It starts N workers running the same m3 command minus these flags, each with RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT set as torchrun sets them
 * (src/util/dist-env.ts reads them back); labels worker output by rank, forwards SIGINT/SIGTERM, and stops
 * the others when one worker fails.
 */
import { spawn, ChildProcess } from 'child_process';
import { StringDecoder } from 'string_decoder';
import type { Argv, Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { DEFAULT_MASTER_PORT } from '../util/dist-env';
import { UserError } from '../util/errors';
import { CommonArgs, handler } from './run';

/** The launcher flags as yargs parses them (strings: checked by `launchPlan`, which names the bad value). */
export interface LaunchArgs { nprocPerNode?: string; nnodes?: string; nodeRank?: string; masterAddr?: string; masterPort?: string }

export interface LaunchPlan { nprocPerNode: number; nnodes: number; nodeRank: number; masterAddr: string; masterPort: number }

export const DEFAULT_MASTER_ADDR = '127.0.0.1';

/** How long workers get to stop after SIGTERM (sent when another worker failed) before SIGKILL. */
export const KILL_AFTER_MS = 10000;

const FLAGS: Record<string, Options & { alias?: string }> = {
  'nproc-per-node': { alias: 'nproc_per_node', describe: 'start this many data-parallel workers here (one per GPU) instead of training in this process' },
  nnodes: { describe: 'number of nodes; run the same command on each', defaultDescription: '1' },
  'node-rank': { alias: 'node_rank', describe: "this node's index, 0 .. nnodes-1", defaultDescription: '0' },
  'master-addr': { alias: 'master_addr', describe: 'address of the node with --node-rank 0, reachable from every node', defaultDescription: DEFAULT_MASTER_ADDR },
  'master-port': { alias: 'master_port', describe: 'a free TCP port on that node', defaultDescription: String(DEFAULT_MASTER_PORT) },
};

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const KEYS = Object.keys(FLAGS).map(camel) as (keyof LaunchArgs)[];

/** Adds the launcher flags (with torchrun's underscore spellings as aliases) to a command. */
export function launchOptions<T>(y: Argv<T>): Argv<T & LaunchArgs> {
  for (const [flag, o] of Object.entries(FLAGS)) y = y.option(flag, { type: 'string', requiresArg: true, ...o });
  return y.group(Object.keys(FLAGS), "Data-parallel launch (torchrun's flags; --nproc_per_node etc. work too):") as Argv<T & LaunchArgs>;
}

function count(flag: string, v: string, min: number): number {
  if (/^\d+$/.test(v) && Number(v) >= min) return Number(v);
  const hint = flag === 'nnodes' && v.includes(':') ? ' (elastic node ranges need torchrun)' : '';
  throw new UserError(`--${flag}=${v} is not a ${min ? 'positive' : 'non-negative'} integer${hint}`);
}

/** The checked launch, or null when no launcher flag was given. */
export function launchPlan(args: LaunchArgs): LaunchPlan | null {
  const given = Object.keys(FLAGS).filter((f) => args[camel(f) as keyof LaunchArgs] !== undefined);
  if (!given.length) return null;
  if (args.nprocPerNode === undefined) throw new UserError(`--${given[0]} needs --nproc-per-node (how many workers to start on this node)`);
  const nprocPerNode = count('nproc-per-node', args.nprocPerNode, 1);
  const nnodes = args.nnodes === undefined ? 1 : count('nnodes', args.nnodes, 1);
  const nodeRank = args.nodeRank === undefined ? 0 : count('node-rank', args.nodeRank, 0);
  if (nodeRank >= nnodes) throw new UserError(`--node-rank=${nodeRank} is not below --nnodes=${nnodes}`);
  if (nnodes > 1 && args.masterAddr === undefined) throw new UserError(`--master-addr is needed with --nnodes=${nnodes}: the address of the node with --node-rank 0, the same on every node`);
  const masterAddr = args.masterAddr ?? DEFAULT_MASTER_ADDR;
  if (masterAddr.trim() === '') throw new UserError('--master-addr is empty');
  const port = args.masterPort ?? String(DEFAULT_MASTER_PORT);
  const masterPort = /^\d+$/.test(port) ? Number(port) : NaN;
  if (!(masterPort >= 1 && masterPort <= 65535)) throw new UserError(`--master-port=${port} is not a port (1..65535)`);
  return { nprocPerNode, nnodes, nodeRank, masterAddr, masterPort };
}

const STRIP = new Set(Object.entries(FLAGS).flatMap(([flag, o]) => [flag, camel(flag), ...(o.alias ? [o.alias] : [])]));

/** The command line minus the launcher flags (`--flag V` and `--flag=V`, any spelling), for the workers. */
export function workerArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') { out.push(...argv.slice(i)); break; }
    const m = /^--([^=]+)(=.*)?$/.exec(argv[i]);
    if (m && STRIP.has(m[1])) {
      if (m[2] === undefined) i++; // skip the value
      continue;
    }
    out.push(argv[i]);
  }
  return out;
}

/** A worker's environment: the launcher's, plus torchrun's variables for global rank `nodeRank·N + localRank`. */
export function workerEnv(plan: LaunchPlan, localRank: number, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env = { ...base };
  delete env.TORCHELASTIC_USE_AGENT_STORE; // rank 0 hosts the store, not this launcher
  return Object.assign(env, {
    RANK: String(plan.nodeRank * plan.nprocPerNode + localRank),
    WORLD_SIZE: String(plan.nnodes * plan.nprocPerNode),
    LOCAL_RANK: String(localRank),
    LOCAL_WORLD_SIZE: String(plan.nprocPerNode),
    GROUP_RANK: String(plan.nodeRank),
    MASTER_ADDR: plan.masterAddr,
    MASTER_PORT: String(plan.masterPort),
    TORCHELASTIC_RESTART_COUNT: '0',
  });
}

export interface WorkerCommand { file: string; args: string[] }

/** This m3 command again (same node, flags and script), minus the launcher flags. */
export function selfCommand(argv: string[] = hideBin(process.argv)): WorkerCommand {
  return { file: process.execPath, args: [...process.execArgv, process.argv[1], ...workerArgs(argv)] };
}

/** Where the launcher writes and listens; tests pass their own. */
export interface LaunchIo {
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** the launcher's environment, which workers inherit */
  env?: NodeJS.ProcessEnv;
  /** SIGINT/SIGTERM received here are forwarded to every worker */
  signals?: Pick<NodeJS.EventEmitter, 'on' | 'off'>;
  killAfterMs?: number;
}

/**
 * Writes `src` to `out` a line at a time, each prefixed by `label`. `\r` ends a line too (a progress bar's
 * redraws become lines); empty lines are dropped (spacing means nothing once ranks interleave), and a partial
 * last line is flushed at the end.
 */
export function prefixLines(src: NodeJS.ReadableStream, label: string, out: NodeJS.WritableStream): void {
  const decoder = new StringDecoder('utf8');
  let buf = '';
  const flush = (end: boolean) => {
    let text = '';
    let start = 0;
    for (const m of buf.matchAll(/\r\n|\n|\r/g)) {
      if (m[0] === '\r' && m.index === buf.length - 1 && !end) break; // maybe the first half of \r\n
      const line = buf.slice(start, m.index);
      if (line !== '') text += label + line + '\n';
      start = m.index + m[0].length;
    }
    buf = buf.slice(start);
    if (end && buf !== '') text += label + buf + '\n';
    if (end) buf = '';
    if (text) out.write(text);
  };
  src.on('data', (d: Buffer | string) => { buf += typeof d === 'string' ? d : decoder.write(d); flush(false); });
  src.on('end', () => { buf += decoder.end(); flush(true); });
}

interface Worker { rank: number; child: ChildProcess; running: boolean }

/**
 * Starts `plan.nprocPerNode` workers running `cmd` and resolves with the launcher's exit code once all have
 * exited: 0 when every worker exited 0; else the first failing worker's code (1 for a signal), after SIGTERM
 * (SIGKILL after `killAfterMs`) to the others and one `m3: error:` line on stderr.
 */
export function launchWorkers(plan: LaunchPlan, cmd: WorkerCommand, io: LaunchIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const signals = io.signals ?? process;
  return new Promise((resolve) => {
    const workers: Worker[] = [];
    let failure: { message: string; code: number } | null = null;
    let killTimer: NodeJS.Timeout | undefined;
    let open = plan.nprocPerNode;

    const signalRunning = (sig: NodeJS.Signals) => { for (const w of workers) if (w.running) w.child.kill(sig); };
    const fail = (w: Worker, message: string, code: number) => {
      w.running = false;
      if (failure) return;
      const others = workers.some((o) => o.running);
      failure = { message: `rank ${w.rank} ${message}${others ? '; stopped the other workers' : ''}`, code };
      signalRunning('SIGTERM');
      killTimer = setTimeout(() => signalRunning('SIGKILL'), io.killAfterMs ?? KILL_AFTER_MS);
    };
    const onSigint = () => signalRunning('SIGINT');
    const onSigterm = () => signalRunning('SIGTERM');
    signals.on('SIGINT', onSigint);
    signals.on('SIGTERM', onSigterm);

    const finish = () => {
      clearTimeout(killTimer);
      signals.off('SIGINT', onSigint);
      signals.off('SIGTERM', onSigterm);
      if (failure) stderr.write(`m3: error: ${failure.message}\n`);
      resolve(failure?.code ?? 0);
    };

    for (let local = 0; local < plan.nprocPerNode; local++) {
      const rank = plan.nodeRank * plan.nprocPerNode + local;
      const child = spawn(cmd.file, cmd.args, { env: workerEnv(plan, local, io.env), stdio: ['ignore', 'pipe', 'pipe'] });
      const w: Worker = { rank, child, running: true };
      workers.push(w);
      const label = `[rank ${rank}] `;
      prefixLines(child.stderr!, label, stderr);
      if (rank === 0) child.stdout!.on('data', (d: Buffer) => stdout.write(d));
      else prefixLines(child.stdout!, label, stderr);
      child.on('error', (e) => { if (w.running) fail(w, `could not start: ${e.message}`, 1); });
      child.on('exit', (code, signal) => {
        if (code === 0) w.running = false;
        else fail(w, signal ? `exited with signal ${signal}` : `exited with code ${code}`, code || 1);
      });
      child.on('close', () => { if (--open === 0) finish(); });
    }
  });
}

/**
 * Wraps a train/pipeline handler: with --nproc-per-node (and not already a launched worker, i.e. RANK unset)
 * it checks the flags and `check(args)` (the config, so a typo is one error, not one per worker) and launches
 * the workers instead of running; the backend is never loaded here.
 */
export function withLauncher<A extends CommonArgs & LaunchArgs>(check: (args: A) => unknown, run: (args: A) => Promise<void>): (args: A) => Promise<void> {
  return async (args: A) => {
    if (!KEYS.some((k) => args[k] !== undefined)) return run(args);
    if (process.env.RANK) {
      process.stderr.write(`m3: launcher flags ignored: this process is already a worker (RANK=${process.env.RANK})\n`);
      return run(args);
    }
    return handler<A>(async (a) => {
      const plan = launchPlan(a)!;
      check(a);
      process.exitCode = await launchWorkers(plan, selfCommand());
    })(args);
  };
}
