/**
 * The run-dir lock (src/util/run-lock.ts): taken and released; a second taker refused in one line naming
 * the holder; stale (dead pid, unreadable, our own pid left by an earlier process) taken over with a notice;
 * a holder on another host refused; several processes racing for one stale lock: exactly one wins; waiting
 * for a held lock.
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../../src/util/errors';
import { acquireRunLock, LockHolder, RUN_LOCK, waitForLock } from '../../src/util/run-lock';

const ROOT = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-run-lock-'));
let n = 0;
const freshDir = () => path.join(tmp, `run${n++}`);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A lock as another process would have left it (owner file inside the lock dir). */
function plantLock(dir: string, holder: Partial<LockHolder>, raw?: string): void {
  fs.mkdirSync(path.join(dir, RUN_LOCK), { recursive: true });
  const h = { host: os.hostname(), pid: 1, started: '2026-11-30T14:02:03Z', command: 'm3 train x.yaml', ...holder };
  fs.writeFileSync(path.join(dir, RUN_LOCK, `owner-${h.pid}-planted.json`), raw ?? JSON.stringify(h));
}

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  expect(r.status).toBe(0);
  return r.pid;
}

/** Runs `fn`, returning what it wrote on stderr. */
function stderrOf(fn: () => void): string {
  let s = '';
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((s += String(c)), true));
  try {
    fn();
  } finally {
    spy.mockRestore();
  }
  return s;
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('not refused');
}

const IN_USE = /^(\S+) is in use by PID (\d+) on (\S+) since (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \((.*)\); wait for it to finish or stop it$/;

test('taken, refused to a second taker in one line naming pid, host, time and command, released', () => {
  const dir = freshDir(); // does not exist yet: created
  const lock = acquireRunLock(dir, 'test');
  const files = fs.readdirSync(path.join(dir, RUN_LOCK));
  expect(files).toHaveLength(1);
  const h = JSON.parse(fs.readFileSync(path.join(dir, RUN_LOCK, files[0]), 'utf8'));
  expect(h).toMatchObject({ host: os.hostname(), pid: process.pid, what: 'test' });
  expect(typeof h.command).toBe('string');
  const msg = refusal(() => acquireRunLock(dir));
  expect(msg).not.toContain('\n');
  const m = IN_USE.exec(msg)!;
  expect(m).not.toBeNull();
  expect([m[1], Number(m[2]), m[3], m[4], m[5]]).toEqual([dir, process.pid, os.hostname(), h.started, h.command]);
  lock.release();
  lock.release(); // idempotent
  expect(fs.readdirSync(dir)).toEqual([]);
  acquireRunLock(dir).release(); // free again
  expect(fs.readdirSync(dir)).toEqual([]);
});

test('a lock held by another live process on this host is refused', () => {
  const dir = freshDir();
  plantLock(dir, { pid: process.ppid }); // jest's parent process: alive
  const msg = refusal(() => acquireRunLock(dir));
  expect(msg).toBe(`${dir} is in use by PID ${process.ppid} on ${os.hostname()} since 2026-11-30T14:02:03Z (m3 train x.yaml); wait for it to finish or stop it`);
});

test('a lock left by a process that is gone is taken over with a one-line notice', () => {
  const dir = freshDir();
  const pid = deadPid();
  plantLock(dir, { pid });
  let lock: ReturnType<typeof acquireRunLock> | undefined;
  const err = stderrOf(() => (lock = acquireRunLock(dir)));
  expect(err).toBe(`${dir} was locked by PID ${pid} on ${os.hostname()}, which is gone; taking it over\n`);
  const files = fs.readdirSync(path.join(dir, RUN_LOCK));
  expect(files).toHaveLength(1);
  expect(JSON.parse(fs.readFileSync(path.join(dir, RUN_LOCK, files[0]), 'utf8')).pid).toBe(process.pid);
  lock!.release();
  expect(fs.readdirSync(dir)).toEqual([]);
});

test('our own pid in a lock this process does not hold is an earlier process\'s (a restarted container): taken over', () => {
  const dir = freshDir();
  plantLock(dir, { pid: process.pid });
  let lock: ReturnType<typeof acquireRunLock> | undefined;
  expect(stderrOf(() => (lock = acquireRunLock(dir)))).toContain('which is gone; taking it over');
  lock!.release();
});

test('an unreadable lock, or a plain file in its place, is treated as stale with a notice', () => {
  const dir = freshDir();
  plantLock(dir, {}, '{"host": "vm", "pi');
  let lock: ReturnType<typeof acquireRunLock> | undefined;
  expect(stderrOf(() => (lock = acquireRunLock(dir)))).toMatch(/^\S+: the lock file \S+ is unreadable; treating it as stale and taking it over\n$/);
  lock!.release();
  fs.writeFileSync(path.join(dir, RUN_LOCK), 'junk');
  expect(stderrOf(() => (lock = acquireRunLock(dir)))).toContain('is not a lock m3 wrote; treating it as stale');
  lock!.release();
  expect(fs.readdirSync(dir)).toEqual([]);
});

test('a lock from another host is refused, telling the user to delete it if that run is gone', () => {
  const dir = freshDir();
  plantLock(dir, { host: 'some-other-host', pid: deadPid() });
  const msg = refusal(() => acquireRunLock(dir));
  expect(msg).toMatch(/ is in use by PID \d+ on some-other-host since /);
  expect(msg).toContain(`m3 cannot check a process on another host: if that run is gone, delete ${path.join(dir, RUN_LOCK)}`);
  expect(msg).not.toContain('\n');
});

/** A child process that, once `go` exists, tries the lock and prints `won` or `refused <message>`, holding a won lock until its stdin ends. */
function contender(dir: string, go: string): { child: ChildProcess; ready: Promise<void>; result: Promise<string> } {
  const code = `
    const fs = require('fs');
    const { acquireRunLock } = require(${JSON.stringify(path.join(ROOT, 'src/util/run-lock.ts'))});
    process.stdout.write('ready\\n');
    const t = setInterval(() => {
      if (!fs.existsSync(process.env.GO)) return;
      clearInterval(t);
      let lock = null;
      try { lock = acquireRunLock(process.env.DIR); process.stdout.write('won\\n'); }
      catch (e) { process.stdout.write('refused ' + e.message + '\\n'); }
      process.stdin.on('end', () => { if (lock) lock.release(); process.exit(0); });
      process.stdin.resume();
    }, 1);`;
  const child = spawn(process.execPath, ['-r', path.join(ROOT, 'bin/register.js'), '-e', code], { env: { ...process.env, DIR: dir, GO: go }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const lines: ((l: string[]) => void)[] = [];
  child.stdout!.on('data', (d) => {
    out += String(d);
    for (const f of lines) f(out.split('\n').filter(Boolean));
  });
  child.stderr!.on('data', (d) => (err += String(d)));
  const nth = (i: number) => new Promise<string>((resolve, reject) => {
    lines.push((l) => l.length > i && resolve(l[i]));
    child.on('close', (c) => reject(new Error(`contender exited ${c} before line ${i + 1}: ${out} ${err}`)));
  });
  return { child, ready: nth(0).then(() => undefined), result: nth(1) };
}

test('several processes taking over the same stale lock at once: exactly one wins', async () => {
  for (let round = 0; round < 3; round++) {
    const dir = freshDir();
    plantLock(dir, { pid: deadPid() });
    const go = path.join(tmp, `go${round}`);
    const cs = Array.from({ length: 4 }, () => contender(dir, go));
    try {
      await Promise.all(cs.map((c) => c.ready));
      fs.writeFileSync(go, '');
      const results = await Promise.all(cs.map((c) => c.result));
      const winners = cs.filter((_, i) => results[i] === 'won');
      expect(winners).toHaveLength(1);
      for (const r of results.filter((x) => x !== 'won')) expect(r).toMatch(new RegExp(`^refused \\S+ is in use by PID ${winners[0].child.pid} on `));
      await Promise.all(cs.map((c) => new Promise((res) => {
        c.child.on('exit', res);
        c.child.stdin!.end();
      })));
    } finally {
      for (const c of cs) if (c.child.exitCode === null) c.child.kill('SIGKILL');
    }
    expect(fs.readdirSync(dir)).toEqual([]); // released, and no temp dir of a loser left behind
  }
}, 30_000);

test('waitForLock waits (one notice) while the lock is held, takes it when released, and gives up after its bound', async () => {
  const dir = freshDir();
  const file = path.join(dir, '.entry.lock');
  const held = await waitForLock(file, { label: 'x', waiting: () => 'unused', timeoutMs: 1000 });
  let notices = '';
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((notices += String(c)), true));
  try {
    setTimeout(() => held.release(), 500);
    const t0 = Date.now();
    const second = await waitForLock(file, { label: 'x', waiting: (h) => `waiting for PID ${h.pid}`, timeoutMs: 10_000, pollMs: 50 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect(notices).toBe(`waiting for PID ${process.pid}\n`);
    await expect(waitForLock(file, { label: 'x', waiting: () => 'w', timeoutMs: 300, pollMs: 50 })).rejects.toThrow(/^x: still locked by PID \d+ on \S+ since .* after 0.3 s; if that process is gone, delete /);
    second.release();
  } finally {
    spy.mockRestore();
  }
  expect(fs.readdirSync(dir)).toEqual([]);
});
