/**
 * Data-parallel training across real processes (Gloo over localhost, one intra-op thread each): N ranks
 * with cross-device negatives train the model one process trains on the global batch; the same through
 * torchrun and through two launcher "nodes"; without cross-device negatives the logged loss is the mean of
 * the ranks' own losses; a killed rank stops the others with one line and --resume finishes the run
 * exactly; bad launches fail with one line each. Where the addon has no Gloo, the refusal is checked.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as tf from '@tensorflow/tfjs';
import { distributedSupport } from '../../src/backend/dist';
import { openDataset, PairBatch } from '../../src/data';
import { m3Step } from '../../src/finetune/m3-step';
import { disposeModel, loadOrInitModel } from '../../src/model/m3';
import { readSafetensors } from '../../src/model/weights/safetensors';
import { FinetuneConfig } from '../../src/finetune/config';
import { loadStageConfig } from '../../src/recipes/stage-config';
import { stageDatasets } from '../../src/train/stage-data';
import { deriveSeed } from '../../src/util/rng';
import { describeTorch } from '../backend/torch/setup';
import { killAll, Proc, ROOT, startCli } from '../helpers/fault';
import { eventFiles, scalars } from '../helpers/tensorboard';
import { sharedDir } from '../helpers/shared';

jest.setTimeout(240_000);

const UNIFIED = path.join(ROOT, 'configs/tiny/unified.yaml');
const PAIRS = path.join(ROOT, 'configs/tiny/pairs.yaml');
const ENV = { M3_BACKEND: 'torch', M3_TORCH_THREADS: '1,1' };
const STEPS = ['--set', 'train.max_steps=3', '--set', 'train.save_steps=0', '--set', 'train.warmup_ratio=0'];
const ALL_HEADS = ['--set', 'loss.negatives_cross_device=true', '--set', 'loss.negatives_cross_device_modes=[dense,sparse,colbert]'];
const LR = 5e-4; // configs/tiny/unified.yaml and pairs.yaml

let tmp: string;
beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-dist-'))));
afterAll(() => {
  killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** `world` processes of `m3 train` with torchrun's variables; resolves when all have exited. */
async function ranks(world: number, args: string[], env: Record<string, string> = {}, perRank: (r: number) => string[] = () => []): Promise<Proc[]> {
  const port = String(await freePort());
  const procs = Array.from({ length: world }, (_, r) => startCli(['train', ...args, ...perRank(r)], {
    env: { ...ENV, RANK: String(r), WORLD_SIZE: String(world), LOCAL_RANK: String(r), LOCAL_WORLD_SIZE: String(world), MASTER_ADDR: '127.0.0.1', MASTER_PORT: port, ...env },
  }));
  await Promise.all(procs.map((p) => p.exit));
  return procs;
}

async function ok(procs: Proc[] | Proc): Promise<void> {
  for (const p of Array.isArray(procs) ? procs : [procs]) {
    const { code, signal } = await p.exit;
    if (code !== 0) throw new Error(`exit ${code ?? signal}\n${p.stderr}`);
  }
}

async function single(config: string, out: string, extra: string[] = []): Promise<void> {
  await ok(startCli(['train', config, ...STEPS, '--set', `output_dir=${out}`, ...extra], { env: ENV }));
}

type Row = Record<string, number>;
const metrics = (dir: string): Row[] => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);

function maxDiff(a: string, b: string): number {
  const x = readSafetensors(path.join(a, 'final/model.safetensors'));
  const y = readSafetensors(path.join(b, 'final/model.safetensors'));
  let m = 0;
  for (const [k, t] of x) {
    const u = y.get(k)!;
    for (let i = 0; i < t.data.length; i++) m = Math.max(m, Math.abs(t.data[i] - u.data[i]));
  }
  return m;
}

/** The bar for "the same run": step-1 loss and norm to 1e-5, later losses to 1e-4, weights to 1e-5 + 2·lr. */
function expectSameRun(many: string, one: string): void {
  const a = metrics(many);
  const b = metrics(one);
  expect(a.map((r) => r.step)).toEqual(b.map((r) => r.step));
  expect(rel(a[0].loss, b[0].loss)).toBeLessThan(1e-5);
  expect(rel(a[0].grad_norm, b[0].grad_norm)).toBeLessThan(1e-5);
  for (let i = 1; i < a.length; i++) expect(rel(a[i].loss, b[i].loss)).toBeLessThan(1e-4);
  expect(maxDiff(many, one)).toBeLessThan(1e-5 + 2 * LR);
}

const gloo = distributedSupport().gloo;

describeTorch('data parallel (2 processes, Gloo)', () => {
  if (!gloo) {
    test('the addon reports why data parallel is unavailable, and training refuses with one line', async () => {
      expect(distributedSupport().reason).toMatch(/Gloo|addon/);
      const [r0] = await ranks(1, [UNIFIED, ...STEPS, '--set', `output_dir=${tmp}/nogloo`], { WORLD_SIZE: '2' });
      expect(r0.stderr).toMatch(/m3: error: data-parallel training: .*(Gloo|addon)/);
    });
    return;
  }

  test('unified with self-distillation, all heads cross-device: 2 × 4 rows == 1 × 8 rows (env launch and torchrun)', async () => {
    await single(UNIFIED, `${tmp}/u1`, ['--set', 'data.batch_size=8']);
    const two = await ranks(2, [UNIFIED, ...STEPS, '--set', `output_dir=${tmp}/u2`, '--set', 'data.batch_size=4', ...ALL_HEADS]);
    await ok(two);
    expectSameRun(`${tmp}/u2`, `${tmp}/u1`);
    // the data check on start: rank 0 only
    expect(two[0].stderr).toMatch(/^data: checked 10 rows in 1 file: /m);
    expect(two[1].stderr).not.toContain('data: checked');
    // the README's torchrun line (Debian's torch 1.13: python3 -m torch.distributed.run), through npx
    const port = String(await freePort());
    const r = spawnSync('/usr/bin/python3', ['-m', 'torch.distributed.run', '--redirects', '2', '--tee', '2', '--nproc_per_node', '2', '--master_port', port, '--no_python',
      'npx', 'm3', 'train', UNIFIED, ...STEPS, '--set', `output_dir=${tmp}/u2t`, '--set', 'data.batch_size=4', ...ALL_HEADS],
    { cwd: ROOT, env: { ...process.env, ...ENV, M3_FROM_SRC: '1', M3_PROGRESS: '0' }, encoding: 'utf8', timeout: 180_000 });
    if (r.status !== 0) throw new Error(`torchrun exited ${r.status}\n${r.stderr}`);
    expect(r.stdout.trim().split('\n').filter((l) => l.startsWith('{'))).toHaveLength(1); // results from rank 0 only
    expectSameRun(`${tmp}/u2t`, `${tmp}/u1`);
  });

  test('GradCache sub-batches and teacher-score distillation compose with cross-device negatives', async () => {
    const kd = ['--set', `data.train=[${sharedDir('data/flagembedding/example_data/retrieval/msmarco.jsonl')}]`, '--set', 'data.knowledge_distillation=true', '--set', 'loss.kd_loss_type=m3_kd_loss'];
    await single(UNIFIED, `${tmp}/kd1`, ['--set', 'data.batch_size=8', ...kd]);
    await ok(await ranks(2, [UNIFIED, ...STEPS, '--set', `output_dir=${tmp}/kd2`, '--set', 'data.batch_size=4', '--set', 'train.sub_batch_size=2', ...ALL_HEADS, ...kd]));
    expectSameRun(`${tmp}/kd2`, `${tmp}/kd1`);
  });

  test('pairs, dense cross-device: 2 × 4 == 1 × 8; the default (dense only) matches on its dense term', async () => {
    await single(PAIRS, `${tmp}/p1`, ['--set', 'data.batch_size=8']);
    await ok(await ranks(2, [PAIRS, ...STEPS, '--set', `output_dir=${tmp}/p2`, '--set', 'data.batch_size=4', '--set', 'loss.negatives_cross_device=true']));
    expectSameRun(`${tmp}/p2`, `${tmp}/p1`);
    // unified with FlagEmbedding's default: only the dense loss spans both ranks
    await ok(await ranks(2, [UNIFIED, ...STEPS, '--set', `output_dir=${tmp}/ud`, '--set', 'data.batch_size=4', '--set', 'loss.negatives_cross_device=true']));
    const dense = metrics(`${tmp}/ud`)[0].loss_dense;
    expect(rel(dense, metrics(`${tmp}/u1`)[0].loss_dense)).toBeLessThan(1e-5);
    expect(rel(metrics(`${tmp}/ud`)[0].loss, metrics(`${tmp}/u1`)[0].loss)).toBeGreaterThan(1e-4); // the local terms differ
  });

  test('without cross-device negatives the logged loss is the mean of the ranks\' own losses', async () => {
    const out = `${tmp}/local`;
    const args = [PAIRS, '--set', 'train.max_steps=1', '--set', 'train.save_steps=0', '--set', `output_dir=${out}`, '--set', 'data.batch_size=4'];
    await ok(await ranks(2, args));
    const logged = metrics(out)[0].loss;
    // each rank's loss, recomputed here from the same config, data slice, initial weights and dropout seed
    const cfg = loadStageConfig(PAIRS, args.slice(1).filter((a) => a !== '--set')) as FinetuneConfig;
    await tf.setBackend('torch');
    const local: number[] = [];
    for (const rank of [0, 1]) {
      const model = loadOrInitModel(cfg.model, cfg.train.seed, out);
      const dirs = await stageDatasets(cfg.data.train, cfg.model.tokenizer!, { format: 'pairs', queryMaxLen: cfg.data.query_max_len, passageMaxLen: cfg.data.passage_max_len }, cfg.data.cache_dir);
      const reader = await openDataset(dirs, { seed: cfg.train.seed, batchSize: 4, trainGroupSize: cfg.data.train_group_size, tokenizer: model.tokenizer!, rank, worldSize: 2 });
      const batch = (await reader.next()) as PairBatch;
      const r = m3Step(model, { queries: batch.queries, passages: batch.passages }, {
        loss: { temperature: cfg.loss.temperature, groupSize: batch.groupSize, unified: false },
        subBatchSize: 0, seed: deriveSeed(cfg.train.seed, 0, 0), rowOffset: { queries: rank * 4, passages: rank * 4 * batch.groupSize },
      });
      local.push(r.loss.dataSync()[0]);
      tf.dispose([r.loss, ...r.grads.values(), ...Object.values(r.parts)]);
      await reader.close();
      disposeModel(model);
    }
    expect(Math.abs(local[0] - local[1])).toBeGreaterThan(1e-3); // two different halves
    expect(rel(logged, (local[0] + local[1]) / 2)).toBeLessThan(1e-5);
  });

  test('kill -9 of rank 1: rank 0 stops within 60 s naming it and the last checkpoint; --resume ends where an uninterrupted run ends', async () => {
    const args = (out: string) => [UNIFIED, '--set', 'train.max_steps=6', '--set', 'train.save_steps=2', '--set', 'train.warmup_ratio=0', '--set', `output_dir=${out}`, '--set', 'data.batch_size=4', '--set', 'train.report_to=tensorboard', ...ALL_HEADS];
    await ok(await ranks(2, args(`${tmp}/whole`)));
    const port = String(await freePort());
    const env = (r: number) => ({ ...ENV, RANK: String(r), WORLD_SIZE: '2', LOCAL_RANK: String(r), LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: port });
    // rank 0 pauses while writing the step-4 checkpoint (rank 1 waits at the barrier); rank 1 is killed meanwhile
    const r0 = startCli(['train', ...args(`${tmp}/cut`)], { env: { ...env(0), M3_FAULT_DELAY_MS: '1500', M3_FAULT_AT: 'filled .*step-4' } });
    const r1 = startCli(['train', ...args(`${tmp}/cut`)], { env: env(1) });
    await r0.waitFor(/^m3-fault: filled .*step-4/);
    r1.child.kill('SIGKILL');
    const killed = Date.now();
    const { code } = await r0.exit;
    expect(Date.now() - killed).toBeLessThan(60_000);
    expect(code).not.toBe(0);
    const lines = r0.stderr.split('\n').filter((l) => l.startsWith('m3: error:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/rank 0: lost rank 1 .*last checkpoint: .*step-4 \(continue with --resume\)/);
    // another world size cannot continue this run's data position
    const p = startCli(['train', ...args(`${tmp}/cut`).slice(0, -ALL_HEADS.length), '--resume'], { env: ENV });
    expect((await p.exit).code).toBe(1);
    expect(p.stderr).toMatch(/m3: error: .*step-4: written by a run of 2 process\(es\); resume it with the same number \(this run has 1\)/);
    const resumed = await ranks(2, [...args(`${tmp}/cut`), '--resume']);
    await ok(resumed);
    expect(maxDiff(`${tmp}/cut`, `${tmp}/whole`)).toBeLessThan(1e-6);
    expect(metrics(`${tmp}/cut`).map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6]);
    // TensorBoard: rank 0 alone writes event files (one per session); every step once across the resume
    expect(eventFiles(`${tmp}/cut`).map((f) => f.split('.').slice(-2, -1)[0])).toEqual([String(r0.child.pid), String(resumed[0].child.pid)]);
    expect(scalars(`${tmp}/cut`).steps.get('train/loss')).toEqual([1, 2, 3, 4, 5, 6]);
  });

  test('two launcher "nodes" on localhost (--nnodes 2) train what two local ranks train', async () => {
    const port = String(await freePort());
    const common = [UNIFIED, ...STEPS, '--set', `output_dir=${tmp}/nodes`, '--set', 'data.batch_size=4', ...ALL_HEADS, '--nnodes', '2', '--nproc-per-node', '1', '--master-addr', '127.0.0.1', '--master-port', port];
    const nodes = [0, 1].map((r) => startCli(['train', ...common, '--node-rank', String(r)], { env: ENV }));
    await ok(nodes);
    const a = metrics(`${tmp}/nodes`);
    const b = metrics(`${tmp}/u2`);
    a.forEach((r, i) => expect(rel(r.loss, b[i].loss)).toBeLessThan(1e-6));
    expect(maxDiff(`${tmp}/nodes`, `${tmp}/u2`)).toBeLessThan(1e-6);
    // the run dir of a multi-process run reports as any other
    const report = startCli(['report', `${tmp}/nodes`], { env: ENV });
    expect((await report.exit).code).toBe(0);
    expect(fs.existsSync(`${tmp}/nodes/report.html`)).toBe(true);
  });

  test('bad launches: one line each, exit ≠ 0', async () => {
    const base = [UNIFIED, ...STEPS, '--set', `output_dir=${tmp}/bad`, '--set', 'data.batch_size=4', '--set', 'train.dist_timeout_s=3'];
    const errorLine = (p: Proc) => {
      const lines = p.stderr.split('\n').filter((l) => l.startsWith('m3: '));
      expect(lines).toHaveLength(1);
      return lines[0];
    };
    // port in use
    const busy = net.createServer().listen(0, '0.0.0.0');
    await new Promise((r) => busy.once('listening', r));
    const busyPort = String((busy.address() as net.AddressInfo).port);
    const [inUse] = await ranks(1, base, { WORLD_SIZE: '2', MASTER_PORT: busyPort });
    busy.close();
    expect(errorLine(inUse)).toMatch(new RegExp(`rank 0: MASTER_PORT ${busyPort} is in use on this host`));
    // a world that never fills
    const [alone] = await ranks(1, base, { WORLD_SIZE: '2' });
    expect(errorLine(alone)).toMatch(/rank 0: 1 of 2 ranks joined within 3 s at 127\.0\.0\.1:\d+ \(WORLD_SIZE=2/);
    // an unreachable master (rank 1 of 2, nothing listening)
    const [lost] = await ranks(1, base, { RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_PORT: String(await freePort()) });
    expect(errorLine(lost)).toMatch(/rank 1: cannot reach the master at 127\.0\.0\.1:\d+ within 3 s/);
    // the wasm backend cannot run c10d
    const [wasm] = await ranks(1, base, { WORLD_SIZE: '2', M3_BACKEND: 'wasm' });
    expect(errorLine(wasm)).toMatch(/data-parallel training \(WORLD_SIZE=2\) needs the torch backend/);
    // cross-device negatives in one process, as FlagEmbedding refuses them
    const one = startCli(['train', ...base, '--set', 'loss.negatives_cross_device=true'], { env: ENV });
    await one.exit;
    expect(errorLine(one)).toMatch(/loss\.negatives_cross_device needs data-parallel training/);
    // a rank whose config differs from rank 0's is refused, and rank 0 stops too
    const mixed = await ranks(2, base, {}, (r) => (r === 1 ? ['--set', 'train.learning_rate=1e-3'] : []));
    expect(errorLine(mixed[1])).toMatch(/rank 1: unified: this rank's config differs from rank 0's/);
    expect(errorLine(mixed[0])).toMatch(/rank 0: unified: 1 other rank\(s\)' config differs from rank 0's/);
    for (const p of [inUse, alone, lost, wasm, one, ...mixed]) expect((await p.exit).code).not.toBe(0);
  });
});
