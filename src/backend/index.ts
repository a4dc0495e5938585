/**
 * Backend selection. TF.js is the modelling API; the compute engine is chosen at start-up:
 *   torch       our native backend over libtorch (fast path; built by `npm install` when libtorch exists)
 *   tensorflow  tfjs-node / tfjs-node-gpu when the user installed it (experimental, not a dependency)
 *   wasm        @tensorflow/tfjs-backend-wasm: no native dependencies, always works
 *   cpu         TF.js's pure-JS kernels (slowest; for debugging)
 * A backend is available when it loads and passes a quick numeric self-check; `auto` takes the fastest one.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { UserError } from '../util/errors';
import { registerGradients } from './gradients';
import { setFusedOps } from './ops';
import { patchWasmKernels } from './wasm-fixes';

export const BACKENDS = ['torch', 'tensorflow', 'wasm', 'cpu'] as const; // fastest first
export type BackendName = (typeof BACKENDS)[number];
export type Device = 'cpu' | 'cuda';

export interface BackendStatus {
  available: boolean;
  reason?: string;
  experimental?: boolean;
  device?: Device;
}

// Silence TF.js's "install tfjs-node" banner and other notices: stdout must carry only results.
tf.env().set('PROD', true);
registerGradients();

const loaders: Record<BackendName, (device: Device) => Promise<string | null>> = {
  async torch(device) {
    let mod: { loadTorchBackend(d: Device): { ok: true } | { ok: false; reason: string } };
    try {
      mod = require('./torch');
    } catch (e) {
      return `torch backend module failed to load: ${(e as Error).message.split('\n')[0]}`;
    }
    const r = mod.loadTorchBackend(device);
    if (!r.ok) return r.reason;
    setFusedOps('torch', require('./torch/fused').torchFusedOps);
    return null;
  },
  async tensorflow() {
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
      try {
        require.resolve(pkg);
      } catch {
        continue;
      }
      try {
        require(pkg);
        return null;
      } catch (e) {
        return `${pkg} is installed but failed to load: ${(e as Error).message.split('\n')[0]}`;
      }
    }
    return 'not installed (npm install @tensorflow/tfjs-node or @tensorflow/tfjs-node-gpu to enable it)';
  },
  async wasm() {
    patchWasmKernels();
    return null;
  },
  async cpu() {
    return null;
  },
};

const statusCache = new Map<string, BackendStatus>();

/** Loads a backend and checks it computes a matmul and a gradient correctly. Never throws. */
export async function probeBackend(name: BackendName, device: Device = 'cpu'): Promise<BackendStatus> {
  const key = `${name}/${device}`;
  const cached = statusCache.get(key);
  if (cached) return cached;
  const status: BackendStatus = { available: false, ...(name === 'tensorflow' ? { experimental: true } : {}), ...(name === 'torch' ? { device } : {}) };
  try {
    const reason = await loaders[name](device);
    if (reason) status.reason = reason;
    else {
      const err = await selfCheck(name);
      if (err) status.reason = `self-check failed: ${err}`;
      else status.available = true;
    }
  } catch (e) {
    status.reason = (e as Error).message.split('\n')[0];
  }
  statusCache.set(key, status);
  return status;
}

async function selfCheck(name: BackendName): Promise<string | null> {
  const previous = tf.getBackend();
  if (!(await tf.setBackend(name))) return 'could not initialise';
  try {
    const x = tf.tensor2d([[1, 2], [3, 4]]);
    const w = tf.tensor2d([[0.5, -1], [2, 0.25]]);
    const y = tf.matMul(x, w, false, true).dataSync(); // x · wᵀ = [[-1.5, 2.5], [-2.5, 7]]
    const g = tf.grad((v: tf.Tensor) => tf.gather(v, tf.tensor1d([1, 1, 0], 'int32')).sum())(w).dataSync(); // row counts 1, 2
    tf.dispose([x, w]);
    const want = [-1.5, 2.5, -2.5, 7];
    if (!want.every((v, i) => Math.abs(y[i] - v) < 1e-5)) return `matmul gave ${Array.from(y)}`;
    if (![1, 1, 2, 2].every((v, i) => Math.abs(g[i] - v) < 1e-6)) return `gather gradient gave ${Array.from(g)}`;
    return null;
  } finally {
    if (previous && previous !== name) await tf.setBackend(previous);
  }
}

/** Every backend's status (for `m3 info`). */
export async function probeAll(device: Device = 'cpu'): Promise<Record<BackendName, BackendStatus>> {
  const out = {} as Record<BackendName, BackendStatus>;
  for (const b of BACKENDS) out[b] = await probeBackend(b, device);
  return out;
}

/**
 * Makes `name` (or, for `auto`, the fastest available backend) the active TF.js backend and returns it.
 * The `M3_BACKEND` environment variable stands in when `name` is not given.
 */
export async function useBackend(name: string = process.env.M3_BACKEND ?? 'auto', device: Device = (process.env.M3_DEVICE as Device) ?? 'cpu'): Promise<BackendName> {
  if (name === 'auto') {
    for (const b of BACKENDS) {
      const s = await probeBackend(b, device);
      if (s.available) {
        if (b === 'tensorflow') process.stderr.write('m3: using the experimental tensorflow backend (tfjs-node)\n');
        await tf.setBackend(b);
        return b;
      }
      if (b === 'torch') process.stderr.write(`m3: torch backend unavailable (${s.reason}); falling back\n`);
    }
    throw new Error('no TF.js backend is available');
  }
  if (!(BACKENDS as readonly string[]).includes(name)) {
    throw new UserError(`unknown backend '${name}' (choose one of auto, ${BACKENDS.join(', ')})`);
  }
  const s = await probeBackend(name as BackendName, device);
  if (!s.available) throw new UserError(`backend '${name}' is not available: ${s.reason}`);
  await tf.setBackend(name);
  return name as BackendName;
}

/** The active backend and its device, as `torch/cpu`, `torch/cuda`, `wasm/cpu`. */
export function activeBackend(): string {
  const name = tf.getBackend();
  return `${name}/${name === 'torch' ? (tf.backend() as unknown as { device: Device }).device : 'cpu'}`;
}

/** Names of the backends that are available here (tests run on each). */
export async function availableBackends(): Promise<BackendName[]> {
  const all = await probeAll();
  return BACKENDS.filter((b) => all[b].available && b !== 'cpu');
}

/**
 * bf16 autocast on the torch backend (train.bf16, HF TrainingArguments' name): matmuls and attention run in
 * bfloat16 inside the kernels while weights, optimizer state, softmax, norms and losses stay float32, as
 * torch.autocast does. Other backends have no bf16 kernels: asking for it there is a one-line error.
 */
export function setBf16Autocast(on: boolean): void {
  const active = tf.getBackend();
  if (active !== 'torch') {
    if (on) throw new UserError(`train.bf16 needs the torch backend (the active backend is ${active}); use --backend torch or set train.bf16: false`);
    return;
  }
  const torch = tf.backend() as unknown as { autocast: boolean; clearParamCasts(): void };
  torch.autocast = on;
  if (!on) torch.clearParamCasts();
}

/**
 * The CUDA caching allocator's bytes on the torch backend's device (torch.cuda.memory_allocated and
 * max_memory_allocated), or null off CUDA. `reset` restarts the peak from what is allocated now.
 */
export function deviceMemory(reset = false): { allocatedBytes: number; peakAllocatedBytes: number; reservedBytes: number } | null {
  if (tf.getBackend() !== 'torch' || (tf.backend() as unknown as { device: Device }).device !== 'cuda') return null;
  const { addon } = require('./torch/addon') as typeof import('./torch/addon');
  const m = addon().cudaMemory(reset);
  if (m.allocatedBytes === undefined) return null;
  return { allocatedBytes: m.allocatedBytes, peakAllocatedBytes: m.peakAllocatedBytes ?? 0, reservedBytes: m.reservedBytes ?? 0 };
}
