/**
 * Fault injection on `m3 data prepare` replacing an existing dataset dir: real processes SIGKILLed at
 * seeded random moments and inside each step of the atomic replace (temp dir filled, manifest written,
 * complete, old moved aside, new renamed in). After each kill the output is the old dataset byte for byte or
 * the complete new one — never partial; between the two renames the old one sits under a dot name and any
 * reader puts it back. A rerun then completes and equals an uninterrupted prepare. 8 trials, two at a time.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { readManifest } from '../../src/data/manifest';
import { killAll, pool, rng, runOk, sameSnapshot, snapshot, startCli, visible } from '../helpers/fault';

const DELAY = 1000; // time trials: every write step pauses this long, stretching the run to ~6 s
const FREEZE = 120_000; // point trials: frozen at the one hooked step until the kill
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-fault-prepare-'));
const prepareArgs = (out: string, qlen: number) => [
  'data', 'prepare', '--format', 'finetune', '--input', 'configs/tiny/data/toy_finetune_data.jsonl', '--model', 'configs/tiny/tokenizer',
  '--output', out, '--query-max-len', String(qlen), '--passage-max-len', '64',
];
const OLD_LEN = 32;
const NEW_LEN = 16;

afterAll(() => {
  killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

let oldSnap: Map<string, Buffer>;
let newSnap: Map<string, Buffer>;
beforeAll(async () => {
  await Promise.all([runOk(prepareArgs(path.join(tmp, 'old'), OLD_LEN)), runOk(prepareArgs(path.join(tmp, 'new'), NEW_LEN))]);
  oldSnap = snapshot(path.join(tmp, 'old'));
  newSnap = snapshot(path.join(tmp, 'new'));
}, 60_000);

/** The complete new dataset: every data file byte-identical, the manifest equal but for its creation time. */
function isCompleteNew(dir: string): boolean {
  const got = snapshot(dir);
  const strip = (b: Buffer) => ({ ...JSON.parse(b.toString('utf8')), createdAt: null });
  return sameSnapshot(got, newSnap, (k) => k === 'manifest.json') && got.has('manifest.json') &&
    JSON.stringify(strip(got.get('manifest.json')!)) === JSON.stringify(strip(newSnap.get('manifest.json')!));
}

type Trial = { kind: 'time'; ms: number } | { kind: 'point'; at: string };
const R = rng(5);
const at = (lo: number, hi: number) => Math.round(lo + (hi - lo) * R());
const TRIALS: Trial[] = [
  // anywhere in the replace (every write step paused DELAY ms, so it lasts ~5 s from the first step on)
  ...Array.from({ length: 3 }, () => ({ kind: 'time' as const, ms: at(0, 5000) })),
  { kind: 'point', at: '^fill .*/ds$' },
  { kind: 'point', at: '^file-written .*/manifest\\.json$' },
  { kind: 'point', at: '^filled .*/ds$' },
  { kind: 'point', at: '^moved-aside .*/ds$' },
  { kind: 'point', at: '^renamed .*/ds$' },
];

async function trial(t: Trial, i: number): Promise<string> {
  const root = path.join(tmp, `t${i}`);
  const out = path.join(root, 'ds');
  fs.cpSync(path.join(tmp, 'old'), out, { recursive: true });
  const env: Record<string, string> = t.kind === 'point' ? { M3_FAULT_DELAY_MS: String(FREEZE), M3_FAULT_AT: t.at } : { M3_FAULT_DELAY_MS: String(DELAY) };
  const p = startCli(prepareArgs(out, NEW_LEN), { env });
  await p.afterFaultPoint(t.kind === 'time' ? t.ms : 0);
  p.child.kill('SIGKILL');
  const { signal } = await p.exit;
  if (t.kind === 'point') expect(signal).toBe('SIGKILL');
  const point = /m3-fault: (\S+)/.exec(p.stderr.split('\n').filter((l) => l.startsWith('m3-fault: ')).pop() ?? '')?.[1] ?? 'start-up';

  // what a reader sees: only ds (and dot-named temp entries); ds old and whole, or new and complete
  expect(visible(root).filter((n) => n !== 'ds')).toEqual([]);
  if (!fs.existsSync(out)) {
    expect(point).toBe('moved-aside');
    expect(readManifest(out).maxLengths.query).toBe(OLD_LEN); // the reader put the old dataset back
  }
  const state = sameSnapshot(snapshot(out), oldSnap) ? 'old' : isCompleteNew(out) ? 'new' : 'PARTIAL';
  expect(state).not.toBe('PARTIAL');
  if (t.kind === 'point') expect(state).toBe(t.at.startsWith('^renamed') ? 'new' : 'old');

  // the rerun completes, equals an uninterrupted prepare and leaves nothing else behind
  await runOk(prepareArgs(out, NEW_LEN));
  expect(isCompleteNew(out)).toBe(true);
  expect(fs.readdirSync(root)).toEqual(['ds']);
  fs.rmSync(root, { recursive: true, force: true });
  const line = `${t.kind === 'time' ? `${t.ms} ms after the first write step` : t.at}: ${signal === 'SIGKILL' ? `killed at ${point}` : 'had finished'}, left the ${state} dataset`;
  process.stderr.write(`  trial ${i + 1}: ${line}\n`);
  return line;
}

test(`SIGKILL at ${TRIALS.length} seeded moments of m3 data prepare over an existing dataset: old or new, never partial`, async () => {
  const log = await pool(TRIALS, 2, trial);
  process.stdout.write(`prepare fault trials:\n  ${log.join('\n  ')}\n`);
  expect(log.filter((l) => l.includes('had finished')).length).toBeLessThanOrEqual(1);
}, 300_000);
