/** Runs the `m3` command from source (bin/m3.js with M3_FROM_SRC=1) and captures its streams. */
import { spawnSync } from 'child_process';
import * as path from 'path';

export interface CliResult { code: number | null; stdout: string; stderr: string }

export function runCli(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [path.resolve(__dirname, '../../bin/m3.js'), ...args], {
    cwd: opts.cwd ?? path.resolve(__dirname, '../..'),
    env: { ...process.env, M3_FROM_SRC: '1', M3_BACKEND: 'wasm', M3_PROGRESS: '0', ...opts.env },
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
