import { EventEmitter } from 'events';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PassThrough, Writable } from 'stream';
import { launchPlan, launchWorkers, LaunchPlan, prefixLines, workerArgs, workerEnv } from '../../src/cli/launch';
import { UserError } from '../../src/util/errors';
import { runCli } from '../helpers/cli';

/**
 * A stand-in for an m3 worker: prints its argv and launch variables as JSON on stdout, some stderr (a `\r`
 * progress bar, a partial last line), then does what FAKE_ROLES (comma-separated, indexed by RANK) says.
 */
const FAKE_WORKER = `
const vars = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'TORCHELASTIC_RESTART_COUNT'];
process.stdout.write(JSON.stringify({ argv: process.argv.slice(2), env: Object.fromEntries(vars.map((k) => [k, process.env[k]])) }) + '\\n');
const role = (process.env.FAKE_ROLES || '').split(',')[Number(process.env.RANK)] || 'ok';
const delay = Number(process.env.FAKE_DELAY || 200);
const idle = () => setInterval(() => {}, 1000);
if (role === 'ok') process.stderr.write('hello\\rbar 1\\rbar 2\\r\\nline two\\npartial');
if (role === 'fail') setTimeout(() => process.exit(3), delay);
if (role === 'killed') process.kill(process.pid, 'SIGKILL');
if (role === 'wait') {
  process.on('SIGTERM', () => { process.stderr.write('got SIGTERM\\n'); process.exit(0); });
  process.stderr.write('ready\\n');
  idle();
}
if (role === 'stubborn') {
  process.on('SIGTERM', () => process.stderr.write('ignoring SIGTERM\\n'));
  process.stderr.write('ready\\n');
  idle();
}
`;

let worker: string;
beforeAll(() => {
  worker = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm3-launch-')), 'worker.js');
  fs.writeFileSync(worker, FAKE_WORKER);
});

function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({ write(chunk, _enc, done) { chunks.push(String(chunk)); done(); } });
  return Object.assign(w, { text: () => chunks.join('') });
}

const plan = (p: Partial<LaunchPlan> = {}): LaunchPlan => ({ nprocPerNode: 2, nnodes: 1, nodeRank: 0, masterAddr: '127.0.0.1', masterPort: 29500, ...p });

/** Launches the fake worker with `extra` env; resolves with the exit code, both streams and the time taken. */
async function launch(p: LaunchPlan, extra: Record<string, string>, opts: { signals?: EventEmitter; killAfterMs?: number; file?: string } = {}) {
  const stdout = sink();
  const stderr = sink();
  const t0 = Date.now();
  const code = await launchWorkers(p, { file: opts.file ?? process.execPath, args: [worker, 'train', 'c.yaml'] }, {
    stdout, stderr, env: { ...process.env, ...extra }, signals: opts.signals ?? new EventEmitter(), killAfterMs: opts.killAfterMs,
  });
  return { code, stdout: stdout.text(), stderr: stderr.text(), ms: Date.now() - t0 };
}

const lastLine = (s: string) => s.trimEnd().split('\n').pop();

describe('launchWorkers', () => {
  test("rank 0's stdout passes through; stderr and other ranks' stdout are prefixed lines", async () => {
    const r = await launch(plan(), { FAKE_ROLES: 'ok,ok' });
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l))).toEqual([{
      argv: ['train', 'c.yaml'],
      env: { RANK: '0', WORLD_SIZE: '2', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '2', GROUP_RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', TORCHELASTIC_RESTART_COUNT: '0' },
    }]);
    const lines = r.stderr.split('\n');
    for (const rank of [0, 1]) {
      expect(lines.filter((l) => l.startsWith(`[rank ${rank}] `) && !l.includes('{')).map((l) => l.slice(9)))
        .toEqual(['hello', 'bar 1', 'bar 2', 'line two', 'partial']);
    }
    const rank1 = JSON.parse(lines.find((l) => l.startsWith('[rank 1] {'))!.slice(9));
    expect(rank1.env).toMatchObject({ RANK: '1', LOCAL_RANK: '1', WORLD_SIZE: '2' });
    expect(r.stderr).not.toMatch(/m3: error/);
  });

  test('ranks on the second node: RANK = node_rank·N + local, GROUP_RANK, master address and port', async () => {
    const r = await launch(plan({ nnodes: 2, nodeRank: 1, masterAddr: 'node0', masterPort: 1234 }), { FAKE_ROLES: 'ok,ok,ok,ok' });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    const envs = r.stderr.split('\n').filter((l) => l.includes('{')).map((l) => [l.slice(0, 9), JSON.parse(l.slice(9)).env]);
    expect(Object.fromEntries(envs)).toEqual({
      '[rank 2] ': { RANK: '2', WORLD_SIZE: '4', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '2', GROUP_RANK: '1', MASTER_ADDR: 'node0', MASTER_PORT: '1234', TORCHELASTIC_RESTART_COUNT: '0' },
      '[rank 3] ': { RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', GROUP_RANK: '1', MASTER_ADDR: 'node0', MASTER_PORT: '1234', TORCHELASTIC_RESTART_COUNT: '0' },
    });
  });

  test('a failing worker stops the others and the launcher exits with its code and one line', async () => {
    const r = await launch(plan({ nprocPerNode: 3 }), { FAKE_ROLES: 'wait,fail,wait' });
    expect(r.code).toBe(3);
    expect(lastLine(r.stderr)).toBe('m3: error: rank 1 exited with code 3; stopped the other workers');
    expect(r.stderr.match(/m3: error/g)).toHaveLength(1);
    expect(r.ms).toBeLessThan(8000);
  });

  test('a worker ignoring SIGTERM gets SIGKILL after the grace period', async () => {
    const r = await launch(plan(), { FAKE_ROLES: 'fail,stubborn', FAKE_DELAY: '1000' }, { killAfterMs: 300 });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('[rank 1] ignoring SIGTERM');
    expect(lastLine(r.stderr)).toBe('m3: error: rank 0 exited with code 3; stopped the other workers');
    expect(r.ms).toBeLessThan(8000);
  });

  test('a worker killed by a signal exits the launcher with 1', async () => {
    const r = await launch(plan(), { FAKE_ROLES: 'wait,killed' });
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toBe('m3: error: rank 1 exited with signal SIGKILL; stopped the other workers');
  });

  test('a worker that cannot start', async () => {
    const r = await launch(plan({ nprocPerNode: 1 }), {}, { file: path.join(os.tmpdir(), 'no-such-node-binary') });
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/^m3: error: rank 0 could not start: spawn .*no-such-node-binary ENOENT$/);
  });

  test('SIGTERM to the launcher is forwarded to every worker, which stop by themselves', async () => {
    const signals = new EventEmitter();
    const stderr = sink();
    const done = launchWorkers(plan(), { file: process.execPath, args: [worker] }, {
      stdout: sink(), stderr, env: { ...process.env, FAKE_ROLES: 'wait,wait' }, signals,
    });
    const deadline = Date.now() + 15000;
    while (!(stderr.text().includes('[rank 0] ready') && stderr.text().includes('[rank 1] ready'))) {
      if (Date.now() > deadline) throw new Error(`workers never got ready: ${stderr.text()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    signals.emit('SIGTERM');
    expect(await done).toBe(0);
    expect(stderr.text()).toContain('[rank 0] got SIGTERM');
    expect(stderr.text()).toContain('[rank 1] got SIGTERM');
    expect(stderr.text()).not.toMatch(/m3: error/);
    expect(signals.listenerCount('SIGTERM') + signals.listenerCount('SIGINT')).toBe(0);
  });
});

describe('prefixLines', () => {
  test('\\r\\n split across chunks is one break; empty lines are dropped; a partial last line is flushed', async () => {
    const src = new PassThrough();
    const out = sink();
    prefixLines(src, '[rank 1] ', out);
    for (const c of ['a\r', '\nb\r', 'c', '\n\n', 'é'.slice(0, 1), 'nd']) src.write(c);
    src.write(Buffer.from('ü').subarray(0, 1));
    src.end(Buffer.from('ü').subarray(1));
    await new Promise((r) => src.on('end', r));
    expect(out.text()).toBe('[rank 1] a\n[rank 1] b\n[rank 1] c\n[rank 1] éndü\n');
  });
});

describe('launchPlan', () => {
  test('defaults, and null without launcher flags', () => {
    expect(launchPlan({})).toBeNull();
    expect(launchPlan({ nprocPerNode: '2' })).toEqual(plan());
    expect(launchPlan({ nprocPerNode: '4', nnodes: '2', nodeRank: '1', masterAddr: 'n0', masterPort: '1234' }))
      .toEqual({ nprocPerNode: 4, nnodes: 2, nodeRank: 1, masterAddr: 'n0', masterPort: 1234 });
  });

  test.each([
    [{ nprocPerNode: '0' }, '--nproc-per-node=0 is not a positive integer'],
    [{ nprocPerNode: 'gpu' }, '--nproc-per-node=gpu is not a positive integer'],
    [{ nprocPerNode: '1.5' }, '--nproc-per-node=1.5 is not a positive integer'],
    [{ nprocPerNode: '2', nnodes: '1:2' }, '--nnodes=1:2 is not a positive integer (elastic node ranges need torchrun)'],
    [{ nprocPerNode: '2', nodeRank: '-1' }, '--node-rank=-1 is not a non-negative integer'],
    [{ nprocPerNode: '2', nodeRank: '1' }, '--node-rank=1 is not below --nnodes=1'],
    [{ nprocPerNode: '2', nnodes: '2', nodeRank: '2', masterAddr: 'n0' }, '--node-rank=2 is not below --nnodes=2'],
    [{ nprocPerNode: '2', nnodes: '2' }, '--master-addr is needed with --nnodes=2: the address of the node with --node-rank 0, the same on every node'],
    [{ nprocPerNode: '2', masterPort: '0' }, '--master-port=0 is not a port (1..65535)'],
    [{ nprocPerNode: '2', masterPort: '65536' }, '--master-port=65536 is not a port (1..65535)'],
    [{ nnodes: '2' }, '--nnodes needs --nproc-per-node (how many workers to start on this node)'],
  ])('%j → %s', (args, message) => {
    expect(() => launchPlan(args)).toThrow(new UserError(message));
  });
});

test('workerArgs drops the launcher flags in every spelling, and nothing after --', () => {
  expect(workerArgs(['train', 'c.yaml', '--nproc-per-node', '2', '--nproc_per_node=2', '--nprocPerNode', '2', '--nnodes=1',
    '--node_rank', '0', '--master-addr', 'h', '--master_port=1', '--set', 'a=1', '--resume', '--', '--nnodes', '3']))
    .toEqual(['train', 'c.yaml', '--set', 'a=1', '--resume', '--', '--nnodes', '3']);
});

test('workerEnv drops an inherited agent-store flag', () => {
  const env = workerEnv(plan(), 1, { PATH: '/bin', TORCHELASTIC_USE_AGENT_STORE: 'True' });
  expect(env).toEqual({
    PATH: '/bin', RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', GROUP_RANK: '0',
    MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', TORCHELASTIC_RESTART_COUNT: '0',
  });
});

describe('through the m3 command', () => {
  test('train --help lists the launcher flags with the torchrun spellings', () => {
    const r = runCli(['train', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--nproc-per-node, --nproc_per_node/);
    expect(r.stdout).toMatch(/--node-rank, --node_rank/);
    expect(r.stdout).toMatch(/torchrun --redirects 2 --tee 2 --nproc_per_node 2 --no_python npx m3 train CONFIG/);
  });

  test('a bad flag is one line before any worker starts', () => {
    const r = runCli(['train', 'configs/tiny/unified.yaml', '--nproc_per_node', '0']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('m3: error: --nproc-per-node=0 is not a positive integer\n');
  });

  test('workers run the same command minus the launcher flags; their failure is labelled and summed up in one line', () => {
    // the launcher never loads a backend, so an unknown one fails in the workers, after the config checked out
    const r = runCli(['pipeline', 'configs/tiny/pipeline.yaml', '--nproc-per-node', '2', '--backend', 'tpu'], { env: { RANK: '' } });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    // the first to fail is labelled; the other may be stopped before it prints its own error
    expect(r.stderr).toMatch(/^\[rank [01]\] m3: error: unknown backend 'tpu'/m);
    expect(r.stderr).not.toMatch(/launcher flags ignored/);
    expect(lastLine(r.stderr)).toMatch(/^m3: error: rank [01] exited with code 1(; stopped the other workers)?$/);
  });
});
