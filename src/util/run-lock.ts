/**
 * One writer per run dir (and per data-cache entry): an exclusive lock, `OUT/.m3-lock`, that a second
 * `m3 train` / `--resume` on the same dir meets with a one-line error instead of both writing checkpoints
 * and metrics.jsonl over each other.
 *
 * The lock is a directory holding one owner file (`owner-PID-….json`: host, pid, started, command). It is
 * taken by renaming a complete temp dir onto the lock path, which succeeds only while that path is absent or
 * an empty dir — so the lock is never seen half-written, and of two takers only one can win. A holder that is
 * gone (a dead pid on this host, or an unreadable owner file) is taken over by deleting exactly its owner
 * file — the name is unique, so a slow taker can never delete a newer holder's — and renaming again.
 * A holder on another host cannot be checked and is never taken over. Release deletes our owner file and
 * the then-empty dir; a process 'exit' hook does the same if the holder forgot. Under data parallelism only
 * rank 0 takes the run lock (the caller decides).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from './errors';
import { alive, ensureWritableDir, recoverDir, tempSibling } from './fsx';

/** The lock's name inside a run dir (dot-named: listings ignore it). */
export const RUN_LOCK = '.m3-lock';

export interface LockHolder { host: string; pid: number; started: string; command: string; what?: string }

export interface Lock {
  readonly path: string;
  /** Removes the lock if it is still ours; idempotent. */
  release(): void;
}

/** Owner files this process holds (so a pid equal to ours in a lock we do not hold is a previous process's). */
const held = new Set<string>();

const OWNER = /^owner-.*\.json$/;

/** The command line of this process, as a user would recognise it (`m3 train x.yaml ...`). */
export function commandLine(): string {
  const script = process.argv[1] ? path.basename(process.argv[1]).replace(/\.[cm]?[jt]s$/, '') : 'node';
  const s = [script, ...process.argv.slice(2)].join(' ');
  return s.length > 200 ? `${s.slice(0, 197)}...` : s;
}

/** ISO time without milliseconds. */
const isoNow = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

/** 'alive' (refuse), 'foreign' (another host: cannot tell, refuse) or 'gone' (take over). */
function holderState(h: LockHolder, file: string): 'alive' | 'foreign' | 'gone' {
  if (h.host !== os.hostname()) return 'foreign';
  if (h.pid === process.pid) return held.has(file) ? 'alive' : 'gone';
  return alive(h.pid) ? 'alive' : 'gone';
}

/** An owner file's holder; null when unreadable, 'released' when it vanished as we looked (its holder let go). */
function readHolder(file: string): LockHolder | null | 'released' {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'released' : null;
  }
  try {
    const h = JSON.parse(text) as LockHolder;
    return h && typeof h.host === 'string' && Number.isInteger(h.pid) && h.pid > 0 && typeof h.started === 'string' ? h : null;
  } catch {
    return null;
  }
}

/**
 * A live holder of `lock`, or null after removing whatever stale holders it had (with a notice each, prefixed
 * by `label`). Removal is by unique name and ignores ENOENT, so concurrent takers cannot harm each other.
 */
function liveHolderOrClear(lock: string, label: string): LockHolder | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(lock);
  } catch {
    return null;
  }
  if (!st.isDirectory()) {
    // not ours (we only ever create dirs there): it can never become a live lock by itself, so deleting it is safe
    process.stderr.write(`${label}: ${lock} is not a lock m3 wrote; treating it as stale and taking it over\n`);
    fs.rmSync(lock, { force: true });
    return null;
  }
  let names: string[];
  try {
    names = fs.readdirSync(lock);
  } catch {
    return null;
  }
  const stale: string[] = [];
  for (const n of names) {
    const file = path.join(lock, n);
    const h = OWNER.test(n) ? readHolder(file) : null;
    if (h === 'released') continue;
    if (h && holderState(h, file) !== 'gone') return h;
    stale.push(n);
    process.stderr.write(h
      ? `${label} was locked by PID ${h.pid} on ${h.host}, which is gone; taking it over\n`
      : `${label}: the lock file ${file} is unreadable; treating it as stale and taking it over\n`);
  }
  for (const n of stale) fs.rmSync(path.join(lock, n), { recursive: true, force: true });
  return null;
}

/**
 * One attempt at the lock dir `lock` (its parent is created): the lock, or the live holder (on this host, or
 * on another one, where `foreign` is set). Stale holders are taken over, with a notice prefixed by `label`.
 */
export function tryLock(lock: string, opts: { label: string; what?: string }): { lock: Lock } | { holder: LockHolder; foreign: boolean } {
  ensureWritableDir(path.dirname(path.resolve(lock)));
  recoverDir(lock, true); // temp dirs of takers that died before their rename
  const me: LockHolder = { host: os.hostname(), pid: process.pid, started: isoNow(), command: commandLine(), ...(opts.what && { what: opts.what }) };
  const name = `owner-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}.json`;
  const tmp = tempSibling(lock);
  fs.mkdirSync(tmp);
  try {
    fs.writeFileSync(path.join(tmp, name), JSON.stringify(me) + '\n');
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        fs.renameSync(tmp, lock);
        return { lock: holding(lock, path.join(lock, name)) };
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (!['ENOTEMPTY', 'EEXIST', 'ENOTDIR', 'EISDIR'].includes(code ?? '')) throw e;
      }
      const h = liveHolderOrClear(lock, opts.label);
      if (h) return { holder: h, foreign: h.host !== os.hostname() };
    }
    throw new UserError(`${lock}: could not take the lock (it kept changing hands); try again`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true }); // gone already when the rename succeeded
  }
}

function holding(lock: string, file: string): Lock {
  held.add(file);
  const remove = () => {
    held.delete(file);
    try {
      fs.unlinkSync(file); // ENOENT: someone took it over (they judged us gone); nothing of theirs is touched
    } catch { /* not ours any more */ }
    try {
      fs.rmdirSync(lock); // only when empty: a new holder's owner file keeps it
    } catch { /* another holder, or already gone */ }
  };
  process.on('exit', remove);
  let released = false;
  return {
    path: lock,
    release: () => {
      if (released) return;
      released = true;
      process.off('exit', remove);
      remove();
    },
  };
}

const holderText = (h: LockHolder) => `PID ${h.pid} on ${h.host} since ${h.started}${h.command ? ` (${h.command})` : ''}`;

/** The exclusive lock on run dir `dir` (created if missing), or a UserError naming the live holder. */
export function acquireRunLock(dir: string, what?: string): Lock {
  ensureWritableDir(dir);
  const lock = path.join(dir, RUN_LOCK);
  const r = tryLock(lock, { label: dir, what });
  if ('lock' in r) return r.lock;
  if (r.foreign) {
    throw new UserError(`${dir} is in use by ${holderText(r.holder)}; m3 cannot check a process on another host: if that run is gone, delete ${lock}`);
  }
  throw new UserError(`${dir} is in use by ${holderText(r.holder)}; wait for it to finish or stop it`);
}

const waited = (ms: number) => (ms >= 120_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 100) / 10} s`);

/**
 * The lock `lock`, waiting while another process holds it: `waiting` is printed once, then the lock is tried
 * every `pollMs` until it is free or stale (taken over), or `timeoutMs` has passed (a UserError).
 */
export async function waitForLock(
  lock: string,
  opts: { label: string; what?: string; waiting: (h: LockHolder) => string; timeoutMs: number; pollMs?: number },
): Promise<Lock> {
  const t0 = Date.now();
  let told = false;
  for (;;) {
    const r = tryLock(lock, opts);
    if ('lock' in r) return r.lock;
    if (Date.now() - t0 >= opts.timeoutMs) {
      throw new UserError(`${opts.label}: still locked by ${holderText(r.holder)} after ${waited(opts.timeoutMs)}; if that process is gone, delete ${lock}`);
    }
    if (!told) process.stderr.write(`${opts.waiting(r.holder)}\n`);
    told = true;
    await new Promise((res) => setTimeout(res, opts.pollMs ?? 200));
  }
}
