/**
 * Fault-injection helpers: `m3` as a real child process (async, so a test can kill it at a chosen moment),
 * a seeded RNG for the moments, a small worker pool, and comparisons of model weights and dirs.
 * Kill moments are either a delay after spawn, or a delay after the n-th `m3-fault: <point> <target>` line
 * that src/util/fsx.ts prints when M3_FAULT_DELAY_MS is set (it then sleeps that long at the point).
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { readSafetensors } from '../../src/model/weights/safetensors';
import { createRng } from '../../src/util/rng';

export const ROOT = path.resolve(__dirname, '../..');

export interface Proc {
  child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves with the exit code (null when killed) and signal. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when stderr has a line matching `re` for the `nth` time (1-based); rejects if the process ends first. */
  waitFor(re: RegExp, nth?: number): Promise<void>;
  /** Waits for the first fault-hook line, then until `ms` after the moment the child printed it; returns the line. */
  afterFaultPoint(ms: number): Promise<string>;
}

const live = new Set<ChildProcess>();

/** SIGKILLs every child still running (for afterAll, when a failed trial left one behind). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
}

export function startCli(args: string[], opts: { env?: Record<string, string>; nodeArgs?: string[] } = {}): Proc {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), path.join(ROOT, 'bin/m3.js'), ...args], {
    cwd: ROOT,
    env: { ...process.env, M3_FROM_SRC: '1', M3_BACKEND: 'wasm', M3_PROGRESS: '0', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let stdout = '';
  let stderr = '';
  const waiters: { re: RegExp; nth: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  const check = () => {
    const lines = stderr.split('\n');
    for (const w of [...waiters]) {
      if (lines.filter((l) => w.re.test(l)).length >= w.nth) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => {
    stderr += String(d);
    check();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => {
      live.delete(child);
      for (const w of waiters.splice(0)) w.reject(new Error(`process ended before ${w.re} (#${w.nth}); stderr:\n${stderr}`));
      resolve({ code, signal });
    });
  });
  const waitFor = (re: RegExp, nth = 1) => new Promise<void>((resolve, reject) => {
    waiters.push({ re, nth, resolve, reject });
    check();
  });
  return {
    child,
    get stdout() { return stdout; },
    get stderr() { return stderr; },
    exit,
    waitFor,
    afterFaultPoint: async (ms) => {
      await waitFor(/^m3-fault: /);
      const line = stderr.split('\n').find((l) => l.startsWith('m3-fault: '))!;
      const printed = Number(line.split(' ').pop());
      await sleep(Math.max(0, printed + ms - Date.now()));
      return line;
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs to the end; throws with stderr unless it exits 0. */
export async function runOk(args: string[], env: Record<string, string> = {}): Promise<Proc> {
  const p = startCli(args, { env });
  const { code, signal } = await p.exit;
  if (code !== 0) throw new Error(`m3 ${args.join(' ')} → ${code ?? signal}\n${p.stderr}`);
  return p;
}

/** A seeded uniform [0, 1) generator (src/util/rng's mulberry32). */
export function rng(seed: number): () => number {
  const r = createRng(seed);
  return () => r.next();
}

/** Runs `fn` over `items` with at most `n` at a time; results in item order. */
export async function pool<T, R>(items: T[], n: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

/** Largest absolute difference between two safetensors files' tensors (same names and shapes required). */
export function maxWeightDiff(fileA: string, fileB: string): number {
  const a = readSafetensors(fileA);
  const b = readSafetensors(fileB);
  if ([...a.keys()].sort().join() !== [...b.keys()].sort().join()) throw new Error(`${fileA} and ${fileB} hold different tensors`);
  let max = 0;
  for (const [k, t] of a) {
    const u = b.get(k)!;
    if (t.shape.join() !== u.shape.join()) throw new Error(`${k}: shape [${t.shape}] vs [${u.shape}]`);
    for (let i = 0; i < t.data.length; i++) max = Math.max(max, Math.abs(t.data[i] - u.data[i]));
  }
  return max;
}

/** Every file under `dir` (relative path → bytes; a file is itself, under ''), dot-named entries included unless `visibleOnly`. */
export function snapshot(dir: string, visibleOnly = false): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (visibleOnly && e.name.startsWith('.')) continue;
      const p = path.join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p, r);
      else out.set(r, fs.readFileSync(p));
    }
  };
  if (fs.existsSync(dir) && fs.statSync(dir).isFile()) out.set('', fs.readFileSync(dir));
  else if (fs.existsSync(dir)) walk(dir, '');
  return out;
}

/** Whether two snapshots hold the same files with the same bytes. */
export function sameSnapshot(a: Map<string, Buffer>, b: Map<string, Buffer>, ignore: (rel: string) => boolean = () => false): boolean {
  const ka = [...a.keys()].filter((k) => !ignore(k)).sort();
  const kb = [...b.keys()].filter((k) => !ignore(k)).sort();
  return ka.join('\n') === kb.join('\n') && ka.every((k) => a.get(k)!.equals(b.get(k)!));
}

/** Names in `dir` that are not dot-named (what a reader sees). */
export function visible(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort() : [];
}
