/**
 * TensorBoard event files across a kill -9: `m3 train configs/tiny/unified.yaml` with report_to tensorboard
 * (12 steps, a checkpoint every 4) is frozen while it writes the step-8 checkpoint — steps 1-8 logged,
 * step-4 the newest complete checkpoint — and SIGKILLed there; `--resume` drops steps 5-8 from the first
 * file, opens a second with SessionLog START at step 5, and TensorBoard sees every step once. The files are
 * read by the tests' own decoder (test/helpers/tensorboard.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { killAll, runOk, startCli } from '../helpers/fault';
import { eventFiles, readEventFile, scalars } from '../helpers/tensorboard';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-fault-tb-'));
afterAll(() => {
  killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('kill -9 mid-run, then --resume: every step once, the steps after the checkpoint logged again', async () => {
  const out = path.join(tmp, 'run');
  const args = ['train', 'configs/tiny/unified.yaml', '--set', `output_dir=${out}`, '--set', `data.cache_dir=${path.join(tmp, 'cache')}`,
    '--set', 'train.max_steps=12', '--set', 'train.save_steps=4', '--set', 'train.report_to=tensorboard'];
  const p = startCli(args, { env: { M3_FAULT_DELAY_MS: '120000', M3_FAULT_AT: '^filled .*step-8$' } });
  await p.waitFor(/^m3-fault: filled .*step-8/);
  p.child.kill('SIGKILL');
  await p.exit;
  expect(scalars(out).steps.get('train/loss')).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);

  const r = await runOk([...args, '--resume']);
  expect(r.stderr).toContain('resuming from');
  expect(r.stderr).toContain('step-4 (step 4 of 12)');
  const files = eventFiles(out);
  expect(files).toHaveLength(2);
  expect(readEventFile(files[1]).events[1]).toMatchObject({ step: 5, sessionLog: { status: 'START' } });
  const { steps } = scalars(out);
  expect(steps.size).toBeGreaterThanOrEqual(8); // loss, its parts, learning rate, grad norm, tokens/s, ...
  for (const s of steps.values()) expect(s).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
}, 120_000);
