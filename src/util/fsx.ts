/**
 * Crash-safe file output: everything is written under a dot-named temp path beside the target and renamed
 * into place, so a reader never sees a half-written file or directory.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from './errors';

function tempSibling(target: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.${path.basename(target)}.tmp-${process.pid}-${Date.now().toString(36)}`);
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
  const tmp = tempSibling(target);
  fs.mkdirSync(tmp);
  try {
    await fill(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw wrapWriteError(target, e);
  }
  replaceDir(tmp, target);
}

/** Renames a finished temp dir onto `target`, keeping the old one until the rename has happened. */
export function replaceDir(tmp: string, target: string): void {
  let old: string | null = null;
  if (fs.existsSync(target)) {
    old = tempSibling(target) + '.old';
    fs.renameSync(target, old);
  }
  fs.renameSync(tmp, target);
  if (old) fs.rmSync(old, { recursive: true, force: true });
}

function wrapWriteError(target: string, e: unknown): Error {
  if (e instanceof UserError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return new UserError(`${target}: disk full (${code}); nothing was written`);
  if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') return new UserError(`${target}: cannot write here (${code})`);
  return e as Error;
}
