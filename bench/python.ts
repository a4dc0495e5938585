/** Running the PyTorch baselines: the pythons tried, in order, and a script's one-JSON-line answer. */
import { spawnSync } from 'child_process';

/** $M3_PYTHON, Debian's /usr/bin/python3 (python3-torch), then whatever python3 is on PATH. */
export function pythons(): string[] {
  return [process.env.M3_PYTHON, '/usr/bin/python3', 'python3'].filter(Boolean) as string[];
}

/**
 * Runs `script args` with each python in turn until one exits 0, and parses the last line of its stdout as
 * JSON; when none does, `{ error }` on one line, with each python's last line of stderr.
 */
export function runPythonJson(script: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Record<string, unknown> | { error: string } {
  const errors: string[] = [];
  for (const py of pythons()) {
    const r = spawnSync(py, [script, ...args], { encoding: 'utf8', timeout: opts.timeoutMs ?? 1800_000, env: { ...process.env, ...opts.env }, maxBuffer: 64 << 20 });
    if (r.status === 0) {
      // Python's json writes NaN (a diverged loss) where JSON has none
      const last = r.stdout.trim().split('\n').pop() ?? '';
      try {
        return JSON.parse(last.replace(/\bNaN\b/g, 'null'));
      } catch {
        errors.push(`${py}: printed no JSON line (${last.slice(0, 100)})`);
        continue;
      }
    }
    const why = (r.stderr ?? '').trim().split('\n').pop() || (r.error ? r.error.message : `exit ${r.status ?? r.signal}`);
    errors.push(`${py}: ${why}`);
  }
  return { error: `no python3 with torch ran ${script} (apt-get install python3-torch, or set M3_PYTHON): ${errors.join('; ')}` };
}
