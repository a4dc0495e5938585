/**
 * One writer per run dir, through the CLI (`m3 train` on the wasm backend, real processes): a second run, or
 * a `--resume`, on a dir another run is writing is refused in one line and the first run's metrics stay one
 * run; a SIGKILLed run's lock is taken over by the next; two runs preparing the same raw JSONL into one
 * cache at once prepare it once.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { killAll, Proc, startCli } from '../helpers/fault';

const CONFIG = 'configs/tiny/unified.yaml';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-lock-cli-'));
const cache = path.join(tmp, 'cache');
const trainArgs = (out: string, extra: string[] = [], cacheDir = cache) =>
  ['train', CONFIG, '--set', `output_dir=${out}`, '--set', `data.cache_dir=${cacheDir}`, ...extra];

afterAll(() => {
  killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Exit code and seconds from start to exit. */
async function timed(p: Proc): Promise<{ code: number | null; s: number }> {
  const t0 = Date.now();
  const { code } = await p.exit;
  return { code, s: (Date.now() - t0) / 1000 };
}

const errorLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('m3: error:'));

test('a second run and a --resume on a dir being written are refused in one line; the first run finishes alone', async () => {
  const out = path.join(tmp, 'busy');
  const N = 12;
  // the first run freezes 12 s inside its first checkpoint write: it holds the lock meanwhile
  const first = startCli(trainArgs(out, ['--set', `train.max_steps=${N}`, '--set', 'train.save_steps=4']), {
    env: { M3_FAULT_DELAY_MS: '12000', M3_FAULT_AT: '^fill .*checkpoints/step-4$' },
  });
  await first.waitFor(/^m3-fault: fill /);
  const second = startCli(trainArgs(out, ['--set', `train.max_steps=${N}`, '--set', 'train.save_steps=4']));
  const resume = startCli(trainArgs(out, ['--set', `train.max_steps=${N}`, '--set', 'train.save_steps=4', '--resume']));
  const [a, b] = await Promise.all([timed(second), timed(resume)]);
  for (const [p, r] of [[second, a], [resume, b]] as const) {
    expect(r.code).not.toBe(0);
    expect(r.s).toBeLessThan(10);
    const errs = errorLines(p.stderr);
    expect(errs).toHaveLength(1);
    expect(errs[0]).toContain(`m3: error: ${out} is in use by PID ${first.child.pid} on ${os.hostname()} since `);
    expect(errs[0]).toMatch(/\(.*m3 train .*\); wait for it to finish or stop it$/);
  }
  const { code } = await first.exit;
  expect(code).toBe(0);
  const steps = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean)
    .map((l) => JSON.parse(l)).filter((r) => typeof r.step === 'number' && 'loss' in r).map((r) => r.step);
  expect(steps).toEqual(Array.from({ length: N }, (_, i) => i + 1));
  expect(fs.existsSync(path.join(out, '.m3-lock'))).toBe(false); // released
}, 60_000);

test('after a kill -9 the next run takes the lock over, with a notice, and succeeds', async () => {
  const out = path.join(tmp, 'killed');
  const victim = startCli(trainArgs(out), { env: { M3_FAULT_DELAY_MS: '120000', M3_FAULT_AT: '^fill .*checkpoints/step-4$' } });
  await victim.afterFaultPoint(0);
  expect(fs.readdirSync(path.join(out, '.m3-lock'))).toHaveLength(1); // the lock is held while it runs
  victim.child.kill('SIGKILL');
  await victim.exit;
  const next = startCli(trainArgs(out, ['--resume']));
  const { code } = await next.exit;
  expect(code).toBe(0);
  expect(next.stderr).toContain(`${out} was locked by PID ${victim.child.pid} on ${os.hostname()}, which is gone; taking it over\n`);
  expect(fs.readdirSync(out).filter((n) => n.startsWith('.'))).toEqual([]);
}, 60_000);

test('two runs preparing the same raw JSONL into one empty cache at once: prepared once, both succeed', async () => {
  const shared = path.join(tmp, 'cache2');
  // whoever prepares pauses 4 s inside the write, so the other one surely arrives meanwhile
  const env = { M3_FAULT_DELAY_MS: '4000', M3_FAULT_AT: '^fill .*/finetune-[0-9a-f]+$' };
  const ps = [0, 1].map((i) => startCli(trainArgs(path.join(tmp, `prep${i}`), ['--set', 'train.max_steps=1'], shared), { env }));
  const codes = await Promise.all(ps.map((p) => p.exit.then((e) => e.code)));
  expect(codes).toEqual([0, 0]);
  const preparer = ps.findIndex((p) => /^data: prepared /m.test(p.stderr));
  expect(preparer).toBeGreaterThanOrEqual(0);
  const other = ps[1 - preparer];
  expect(other.stderr).not.toMatch(/^data: prepared /m);
  expect(other.stderr).toMatch(new RegExp(`^data: waiting for PID ${ps[preparer].child.pid}, which is preparing \\S+/finetune-[0-9a-f]+$`, 'm'));
  expect(other.stderr).toMatch(/^data: reusing /m);
  const entries = fs.readdirSync(shared);
  expect(entries).toHaveLength(1); // one entry; no temp dir, no lock left
  expect(entries[0]).toMatch(/^finetune-[0-9a-f]{16}$/);
}, 60_000);
