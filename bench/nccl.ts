/**
 * `npm run bench -- nccl [--device cuda]`: a world-size-1 process group smoke test through the dist API the
 * trainer uses (src/backend/dist.ts, src/train/distributed.ts). `m3 train` with WORLD_SIZE=1 forms no group
 * at all (a single process), so this joins one directly: rank 0 hosts the TCPStore on a free local port,
 * the group is NCCL on the torch backend's cuda device (Gloo on cpu, chosen by initProcessGroup), then
 * all_reduce (copying and in place), the autograd-free all_gather, broadcast, barrier, bucketed gradient
 * averaging and the metric sum run on device tensors and are checked against their inputs (with one rank
 * each is the identity). Prints one JSON line {ok, device, backend, nccl_built, checks, ...}; exits 1 when
 * a check fails. Run with NCCL_DEBUG=INFO to see NCCL's own lines on stderr.
 */
import * as net from 'net';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../src/backend';
import { allGatherConst, allReduceSum, barrier, broadcastFrom, destroyProcessGroup, distributedSupport, initProcessGroup } from '../src/backend/dist';
import { averageGradients, sumOverRanks } from '../src/train/distributed';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((v, i) => Math.abs(v - b[i]) < 1e-6);

async function checks(): Promise<Record<string, boolean | number>> {
  const out: Record<string, boolean | number> = {};
  const x = tf.tensor2d([[1, 2, 3], [4, 5, 6]]);
  const vx = await x.data();
  const r = allReduceSum(x);
  out.all_reduce = same(await r.data(), vx);
  const big = tf.fill([16 << 20], 0.5); // 64 MiB, reduced in place as the gradient buckets are
  const t0 = performance.now();
  const rb = allReduceSum(big, 'all_reduce 64 MiB', true);
  const v = await rb.data();
  out.all_reduce_64mib_ms = performance.now() - t0;
  out.all_reduce_in_place = v[0] === 0.5 && v[v.length - 1] === 0.5;
  const g = allGatherConst(x);
  out.all_gather = same(await g.gathered.data(), vx) && g.offset === 0 && same(g.sizes, [2]);
  out.broadcast = same(await broadcastFrom(x, 0).data(), vx);
  barrier('smoke barrier', 30);
  out.barrier = true;
  const grads = new Map<string, tf.Tensor>([['a', tf.tensor1d([1, -2])], ['b', tf.ones([3, 2])]]);
  const avg = averageGradients(grads, { rank: 0, worldSize: 1, localWorldSize: 1, timeoutS: 60 });
  out.average_gradients = same(await avg.get('a')!.data(), [1, -2]) && same(await avg.get('b')!.data(), [1, 1, 1, 1, 1, 1]);
  out.sum_over_ranks = same(sumOverRanks([3, 4.5], 'smoke metrics'), [3, 4.5]);
  tf.dispose([x, r, rb, g.gathered, ...avg.values()]);
  return out;
}

export async function run(args: { device?: string; json?: boolean }): Promise<void> {
  const device = args.device === 'cuda' ? 'cuda' : 'cpu';
  const t0 = performance.now();
  const row: Record<string, unknown> = { bench: 'nccl', device, backend: device === 'cuda' ? 'nccl' : 'gloo' };
  try {
    await useBackend('torch', device);
    const support = distributedSupport();
    Object.assign(row, { gloo_built: support.gloo, nccl_built: support.nccl });
    const port = await freePort();
    initProcessGroup({ rank: 0, worldSize: 1, localWorldSize: 1, masterAddr: '127.0.0.1', masterPort: port, timeoutS: 60, server: true, prefix: '' });
    row.tensor_device = (tf.backend() as unknown as { device: string }).device;
    const c = await checks();
    row.checks = c;
    destroyProcessGroup();
    row.ok = Object.values(c).every((v) => v !== false);
  } catch (e) {
    row.ok = false;
    row.error = (e as Error).message.split('\n')[0];
  }
  row.seconds = (performance.now() - t0) / 1000;
  process.stdout.write(JSON.stringify(row) + '\n');
  if (!row.ok) process.exitCode = 1;
}
