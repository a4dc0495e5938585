/**
 * `npm run bench -- overhead [--device cuda]`: the host cost of one op on the torch backend, which bounds a
 * step of a small model on a GPU (kernels queue asynchronously, so the host's time per op is what shows):
 * a TF.js op (tf.add: engine, tape bookkeeping, kernel, addon), the bare ATen call through the addon, and
 * the upload of a scalar. Microseconds per op over 20,000 ops of [4, 4] tensors, after a warm-up.
 */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../src/backend';
import { addon } from '../src/backend/torch/addon';
import { aten } from '../src/backend/torch/aten';
import type { TorchBackend } from '../src/backend/torch/backend';

export async function run(args: { json?: boolean; device?: string }): Promise<void> {
  const device = args.device === 'cuda' ? 'cuda' : 'cpu';
  await useBackend('torch', device);
  const b = tf.backend() as unknown as TorchBackend;
  const x = tf.ones([4, 4]);
  const y = tf.ones([4, 4]);
  const add = aten('add.Tensor');
  const [hx, hy] = [b.h(x), b.h(y)];
  const time = (f: () => void, n = 20000): number => {
    for (let i = 0; i < 200; i++) f();
    addon().cudaSynchronize();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) f();
    addon().cudaSynchronize();
    return ((performance.now() - t0) / n) * 1000;
  };
  const row = {
    bench: 'overhead', device,
    tfjs_op_us: time(() => tf.add(x, y).dispose()),
    aten_op_us: time(() => addon().free(add(hx, hy, 1))),
    scalar_upload_us: time(() => tf.scalar(0.5).dispose()),
    tidy_linear_us: time(() => tf.tidy(() => tf.add(tf.matMul(x, y), y)), 5000),
  };
  if (args.json) process.stdout.write(JSON.stringify(row) + '\n');
  else process.stdout.write(Object.entries(row).map(([k, v]) => `${k}: ${typeof v === 'number' ? v.toFixed(1) : v}`).join('\n') + '\n');
}
