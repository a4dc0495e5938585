/**
 * Fault injection on `m3 train configs/tiny/unified.yaml` as shipped (8 steps, a checkpoint every 4):
 * real processes SIGKILLed by this one at seeded random moments — anywhere in the run, inside checkpoint
 * writing / renaming / pruning, inside the final model save, and while an existing final model is being
 * replaced. After each kill: nothing partial is visible (only dot-named temp entries), every visible
 * checkpoint is complete and equals the uninterrupted run's, `--resume` uses the newest one, and the resumed
 * run ends with the weights of the uninterrupted run (≤ 1e-6). A fixed number of trials, two at a time.
 * The narrow windows are hit through src/util/fsx.ts's M3_FAULT_DELAY_MS / M3_FAULT_AT hook.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import { listCheckpoints, loadCheckpoint } from '../../src/train/checkpoint';
import { readModelWeights } from '../../src/model/weights/modeldir';
import { recoverDir } from '../../src/util/fsx';
import { killAll, maxWeightDiff, pool, ROOT, rng, runOk, sameSnapshot, sleep, snapshot, startCli, visible } from '../helpers/fault';

const CONFIG = 'configs/tiny/unified.yaml';
const { max_steps: STEPS, save_steps: SAVE } = YAML.parse(fs.readFileSync(path.join(ROOT, CONFIG), 'utf8')).train as { max_steps: number; save_steps: number };
// M3_FAULT_DELAY_MS at the one hooked write step (M3_FAULT_AT): the process freezes there until the kill, so
// the kill lands inside the window however busy this test process is
const FREEZE = 120_000;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-fault-train-'));
const cache = path.join(tmp, 'cache');
const ref = path.join(tmp, 'ref');
const trainArgs = (out: string, extra: string[] = []) => ['train', CONFIG, '--set', `output_dir=${out}`, '--set', `data.cache_dir=${cache}`, ...extra];
const hook = (at: string, ms = FREEZE) => ({ M3_FAULT_DELAY_MS: String(ms), M3_FAULT_AT: at });

afterAll(() => {
  killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

let refFinal: Map<string, Buffer>;
beforeAll(async () => {
  // the uninterrupted run, keeping every checkpoint to compare with
  await runOk(trainArgs(ref, ['--set', 'train.save_total_limit=0']));
  expect(listCheckpoints(ref).map((c) => c.step)).toEqual([SAVE, 2 * SAVE]);
  refFinal = snapshot(path.join(ref, 'final'));
}, 120_000);

const TOP = ['checkpoints', 'final', 'finished.json', 'metrics.jsonl'];

/** What a reader sees after the kill: no partial checkpoint, final model or file. Returns the newest checkpoint step. */
function checkNothingPartial(out: string): number | null {
  for (const n of visible(out)) expect(TOP).toContain(n);
  const ckRoot = path.join(out, 'checkpoints');
  for (const n of visible(ckRoot)) {
    expect(n).toMatch(/^step-\d+$/);
    const ck = loadCheckpoint(path.join(ckRoot, n)); // complete: state + both safetensors parse and hold every byte
    expect(ck.state.step).toBe(Number(n.slice(5)));
    expect(maxWeightDiff(path.join(ckRoot, n, 'weights.safetensors'), path.join(ref, 'checkpoints', n, 'weights.safetensors'))).toBeLessThanOrEqual(1e-6);
  }
  const final = path.join(out, 'final');
  if (fs.existsSync(final)) checkCompleteFinal(final);
  if (fs.existsSync(path.join(out, 'finished.json'))) JSON.parse(fs.readFileSync(path.join(out, 'finished.json'), 'utf8'));
  const cks = listCheckpoints(out);
  return cks.length ? cks[cks.length - 1].step : null;
}

/** A final model dir with every file of the reference's (an old one may carry an extra OLD marker file). */
function checkCompleteFinal(dir: string): void {
  const got = snapshot(dir);
  expect([...got.keys()].filter((k) => k !== 'OLD').sort()).toEqual([...refFinal.keys()].sort());
  for (const [k, b] of got) if (k !== 'OLD' && k !== 'model.safetensors' && !k.endsWith('.pt')) expect(b.equals(refFinal.get(k)!)).toBe(true);
  readModelWeights(dir); // parses: safetensors and both torch heads
  expect(maxWeightDiff(path.join(dir, 'model.safetensors'), path.join(ref, 'final/model.safetensors'))).toBeLessThanOrEqual(1e-6);
}

/** Resumes after a kill and checks the newest checkpoint is used and the end matches the uninterrupted run. */
async function resumeAndCompare(out: string, newest: number | null, finished: boolean): Promise<string> {
  const r = await runOk(trainArgs(out, ['--resume']));
  if (finished) expect(r.stderr).toContain('unified: already finished');
  else if (newest === null) expect(r.stderr).toContain(`unified: no checkpoint in ${out}; starting fresh`);
  else expect(r.stderr).toContain(`unified: resuming from ${path.join(out, 'checkpoints', `step-${newest}`)} (step ${newest} of ${STEPS})`);
  expect(maxWeightDiff(path.join(out, 'final/model.safetensors'), path.join(ref, 'final/model.safetensors'))).toBeLessThanOrEqual(1e-6);
  expect(fs.existsSync(path.join(out, 'finished.json'))).toBe(true);
  // a finished resume leaves no temp entries behind (the next write of a name cleans that name's leftovers)
  if (!finished) {
    expect(fs.readdirSync(out).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(fs.readdirSync(path.join(out, 'checkpoints')).filter((n) => n.startsWith('.'))).toEqual([]);
  }
  return r.stderr;
}

type Trial =
  | { kind: 'time'; ms: number; from?: number }
  | { kind: 'point'; at: string; target: string; from?: number; extra?: string[] }
  | { kind: 'overwrite'; point: string };

const R = rng(8);
const at = (lo: number, hi: number) => Math.round(lo + (hi - lo) * R());
const first = `checkpoints/step-${SAVE}`;
const second = `checkpoints/step-${2 * SAVE}`;
const TRIALS: Trial[] = [
  // anywhere from the data check on: model set-up, steps, checkpoints, final save (~3 s on an idle machine)
  ...Array.from({ length: 2 }, () => ({ kind: 'time' as const, ms: at(0, 3000) })),
  { kind: 'time', ms: at(0, 2000), from: SAVE }, // from the first checkpoint's state, with --resume
  // inside checkpoint writing: the temp dir complete but not yet renamed; pruning an old checkpoint
  { kind: 'point', at: `^filled .*${first}$`, target: first },
  { kind: 'point', at: `^filled .*${second}$`, target: second, from: SAVE },
  { kind: 'point', at: `^prune .*${first}$`, target: first, from: SAVE, extra: ['--set', 'train.save_total_limit=1'] },
  // after the first checkpoint is in place, steps past it done (the acceptance case: kill, resume, same weights)
  { kind: 'point', at: `^fill .*${second}$`, target: second },
  // inside the final model save (a fresh final dir): half filled (weights written, tokenizer not yet), complete but not renamed
  { kind: 'point', at: '^file-written .*/\\.final\\.tmp-[^/]*/tokenizer\\.json$', target: 'final', from: STEPS },
  { kind: 'point', at: '^filled .*/final$', target: 'final', from: STEPS },
  // an existing final dir being replaced: between each step of the swap
  { kind: 'overwrite', point: 'filled' },
  { kind: 'overwrite', point: 'moved-aside' },
  { kind: 'overwrite', point: 'renamed' },
];

/** An output dir as a run leaves it after checkpoint `step` (copied from the uninterrupted run). */
function stateAt(out: string, step: number): void {
  fs.mkdirSync(path.join(out, 'checkpoints'), { recursive: true });
  for (const c of listCheckpoints(ref)) if (c.step <= step) fs.cpSync(c.dir, path.join(out, 'checkpoints', path.basename(c.dir)), { recursive: true });
  const rows = fs.readFileSync(path.join(ref, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l && JSON.parse(l).step <= step);
  fs.writeFileSync(path.join(out, 'metrics.jsonl'), rows.map((l) => l + '\n').join(''));
}

/** An output dir whose run reached the last step and whose final/ holds an older model (marked by an OLD file). */
function overwriteSetup(out: string): Map<string, Buffer> {
  stateAt(out, STEPS);
  fs.cpSync(path.join(ref, 'final'), path.join(out, 'final'), { recursive: true });
  fs.writeFileSync(path.join(out, 'final/OLD'), 'the previous model\n');
  return snapshot(path.join(out, 'final'));
}

async function trial(t: Trial, i: number): Promise<string> {
  const t0 = Date.now();
  const out = path.join(tmp, `t${i}`);
  let oldFinal: Map<string, Buffer> | null = null;
  let p;
  if (t.kind === 'time') {
    if (t.from) stateAt(out, t.from);
    p = startCli(trainArgs(out, t.from ? ['--resume'] : []));
    await p.waitFor(/^data: reusing /).catch(() => undefined);
    await Promise.race([sleep(t.ms), p.exit]);
  } else if (t.kind === 'point') {
    if (t.from) stateAt(out, t.from);
    p = startCli(trainArgs(out, [...(t.from ? ['--resume'] : []), ...(t.extra ?? [])]), { env: hook(t.at) });
    await p.afterFaultPoint(0);
  } else {
    oldFinal = overwriteSetup(out);
    p = startCli(trainArgs(out, ['--resume']), { env: hook(`^${t.point} .*/final$`) });
    await p.afterFaultPoint(0);
  }
  p.child.kill('SIGKILL');
  const { signal } = await p.exit;
  if (t.kind !== 'time') expect(signal).toBe('SIGKILL');
  const killed = signal === 'SIGKILL';
  if (t.kind === 'point') {
    // killed inside the window: the new dir exists only under its dot name; a pruned one is still whole
    const target = path.join(out, t.target);
    expect(fs.existsSync(target)).toBe(t.at.startsWith('^prune'));
    if (!t.at.startsWith('^prune')) expect(fs.readdirSync(path.dirname(target)).some((n) => n.startsWith(`.${path.basename(target)}.tmp-`))).toBe(true);
  }

  if (oldFinal) {
    const final = path.join(out, 'final');
    // the old model stays whole until the new one is complete: on disk it is the old, the new, or (between the
    // two renames) aside under a dot name, from where any reader puts it back
    if (!fs.existsSync(final)) {
      expect(t.kind === 'overwrite' && t.point).toBe('moved-aside');
      recoverDir(final);
    }
    const now = snapshot(final);
    expect(now.has('OLD')).toBe(t.kind === 'overwrite' && t.point !== 'renamed');
    if (now.has('OLD')) expect(sameSnapshot(now, oldFinal)).toBe(true);
    else checkCompleteFinal(final);
  }
  const newest = checkNothingPartial(out);
  const finished = fs.existsSync(path.join(out, 'finished.json')) && fs.existsSync(path.join(out, 'final'));
  await resumeAndCompare(out, newest, finished);
  fs.rmSync(out, { recursive: true, force: true });
  const line = `${t.kind}${t.kind === 'time' ? ` ${t.ms} ms after the data check` : t.kind === 'point' ? ` ${t.at}` : ` ${t.point}`}: ` +
    `${killed ? 'killed' : 'had finished'}, resumed from ${finished ? 'finished' : newest === null ? 'scratch' : `step ${newest}`} (${((Date.now() - t0) / 1000).toFixed(1)} s)`;
  process.stderr.write(`  trial ${i + 1}: ${line}\n`);
  return line;
}

test(`SIGKILL at ${TRIALS.length} seeded moments, then --resume: same final weights as never killed`, async () => {
  const log = await pool(TRIALS, 2, trial);
  process.stdout.write(`train fault trials:\n  ${log.join('\n  ')}\n`);
  // the random moments must mostly land inside the run (not after it ended)
  expect(log.filter((l) => l.includes('had finished')).length).toBeLessThanOrEqual(2);
}, 400_000);

describe.each(['SIGINT', 'SIGTERM'] as const)('%s during training', (sig) => {
  test('finishes the step, writes a checkpoint, exits 0 saying how to resume; the resumed run matches', async () => {
    const out = path.join(tmp, sig);
    // from the first checkpoint's state; the signal comes as the run resumes, before or during its first step
    stateAt(out, SAVE);
    const p = startCli(trainArgs(out, ['--resume']));
    await p.waitFor(/^unified: resuming from /);
    await sleep(sig === 'SIGINT' ? 0 : 200);
    p.child.kill(sig);
    const { code } = await p.exit;
    expect(code).toBe(0);
    const stopped = JSON.parse(p.stdout);
    expect(stopped).toMatchObject({ stage: 'unified', final: null, stopped_early: true });
    const step = stopped.steps as number;
    expect(step).toBeGreaterThan(SAVE);
    expect(step).toBeLessThan(STEPS);
    expect(p.stderr).toContain(`unified: ${sig} received; finishing the current step and writing a checkpoint`);
    expect(p.stderr).toContain(`unified: stopped at step ${step}; continue with the same command and --resume`);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([SAVE, step]);
    expect(fs.existsSync(path.join(out, 'final'))).toBe(false);
    const r = await runOk(trainArgs(out, ['--resume']));
    expect(r.stderr).toContain(`unified: resuming from ${path.join(out, 'checkpoints', `step-${step}`)} (step ${step} of ${STEPS})`);
    expect(maxWeightDiff(path.join(out, 'final/model.safetensors'), path.join(ref, 'final/model.safetensors'))).toBeLessThanOrEqual(1e-6);
  }, 120_000);
});
