/**
 * Crash-safe file output: everything is written under a dot-named temp path beside the target and renamed
 * into place, so a reader never sees a half-written file or directory. A crash can leave dot-named temp
 * siblings (`.NAME.tmp-PID-…`); readers ignore them and the next write of NAME removes them. The one window
 * where NAME is absent (between moving the old dir aside and renaming the new one in) is repaired by
 * `recoverDir`, which puts the old dir back.
 *
 * Fault injection (tests only): with M3_FAULT_DELAY_MS=N set, each step of an atomic write prints
 * `m3-fault: <point> <target> <Date.now()>` on stderr and then sleeps N ms, so a test can SIGKILL the process inside
 * the narrow windows (points: fill, filled, moved-aside, renamed, file-written, prune). M3_FAULT_AT=REGEX
 * limits this to the points whose "<point> <target>" matches.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from './errors';

export function tempSibling(target: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.${path.basename(target)}.tmp-${process.pid}-${Date.now().toString(36)}`);
}

/** The fault-injection hook (see the header); a no-op unless M3_FAULT_DELAY_MS is set. */
export function faultPoint(point: string, target: string): void {
  const ms = Number(process.env.M3_FAULT_DELAY_MS);
  if (!(ms > 0)) return;
  if (process.env.M3_FAULT_AT && !new RegExp(process.env.M3_FAULT_AT).test(`${point} ${target}`)) return;
  process.stderr.write(`m3-fault: ${point} ${target} ${Date.now()}\n`);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const TEMP_PID = /\.tmp-(\d+)-[0-9a-z]+(\.old)?$/;

/** Whether process `pid` runs on this host (EPERM: it does, as another user); this process counts. */
export function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Temp entries in `dir` (optionally only those starting with `prefix`) left by processes no longer running. */
export function staleTemps(dir: string, prefix = '.'): string[] {
  try {
    return fs.readdirSync(dir)
      .filter((n) => n.startsWith(prefix) && TEMP_PID.test(n) && !alive(Number(TEMP_PID.exec(n)![1])))
      .sort();
  } catch {
    return [];
  }
}

/**
 * Repairs what a crash in an atomic write of `target` left: when `target` is missing but its previous
 * version was moved aside (`.NAME.tmp-PID-….old`, complete by construction), it is renamed back; with
 * `clean`, temp siblings of processes no longer running are removed. Best effort: errors are ignored.
 */
export function recoverDir(target: string, clean = false): void {
  const dir = path.dirname(path.resolve(target));
  const stale = staleTemps(dir, `.${path.basename(target)}.tmp-`);
  try {
    const old = stale.filter((n) => n.endsWith('.old')).pop();
    if (old && !fs.existsSync(target)) {
      fs.renameSync(path.join(dir, old), target);
      stale.splice(stale.indexOf(old), 1);
    }
    if (clean) for (const n of stale) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}

/** Creates `dir` (and parents) when missing; a UserError naming it when that is impossible. */
export function ensureWritableDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // mkdir -p reports EEXIST (or ENOTDIR) when the path, or a folder on it, is a regular file
    const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'ENOTDIR: it or a folder on its path is a file' : code ?? (e as Error).message;
    throw new UserError(`${dir}: cannot write here (${why})`);
  }
}

/** Writes a file atomically (temp file, fsync, rename). */
export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  ensureWritableDir(path.dirname(target));
  recoverDir(target, true);
  const tmp = tempSibling(target);
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      // a write may be short (a file-size limit, a nearly full disk): loop, so the next one reports the error
      const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      for (let done = 0; done < buf.byteLength;) done += fs.writeSync(fd, buf, done, buf.byteLength - done);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    faultPoint('file-written', target);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw wrapWriteError(target, e);
  }
}

/**
 * Builds a directory atomically: `fill` writes into a temp dir, which then replaces `target`.
 * An existing `target` stays intact until the new one is complete (it is moved aside, then removed).
 */
export async function writeDirAtomic(target: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  ensureWritableDir(path.dirname(path.resolve(target)));
  recoverDir(target, true);
  const tmp = tempSibling(target);
  try {
    fs.mkdirSync(tmp);
    faultPoint('fill', target);
    await fill(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw wrapWriteError(target, e);
  }
  faultPoint('filled', target);
  replaceDir(tmp, target);
}

/** Renames a finished temp dir onto `target`, keeping the old one until the rename has happened. */
export function replaceDir(tmp: string, target: string): void {
  let old: string | null = null;
  if (fs.existsSync(target)) {
    old = tempSibling(target) + '.old';
    fs.renameSync(target, old);
    faultPoint('moved-aside', target);
  }
  fs.renameSync(tmp, target);
  if (old) {
    faultPoint('renamed', target);
    fs.rmSync(old, { recursive: true, force: true });
  }
}

function wrapWriteError(target: string, e: unknown): Error {
  if (e instanceof UserError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return new UserError(`${target}: disk full (${code}); nothing was written`);
  if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') return new UserError(`${target}: cannot write here (${code})`);
  return e as Error;
}
