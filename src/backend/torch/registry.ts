/**
 * Kernel registration for the `torch` backend. Kernel families (kernels/*.ts) call `kernel(name, fn)`;
 * `registerKernels()` registers them with TF.js. Every TF.js kernel the cpu backend has and torch does
 * not is registered as a *fallback*: inputs are read into JS, the cpu kernel runs, results are uploaded.
 * Fallbacks keep rarely used ops working (strings, image ops, convolutions) and are counted so tests can
 * assert a training step never takes one.
 */
import * as tf from '@tensorflow/tfjs';
import { addon } from './addon';
import type { TorchBackend } from './backend';

export const BACKEND_NAME = 'torch';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Attrs = any;
/** Kernel inputs by name; TF.js's NamedTensorInfoMap allows undefined entries, kernels check optional ones. */
export type Inputs = Record<string, tf.TensorInfo>;
export type TorchKernelFunc = (inputs: Inputs, backend: TorchBackend, attrs: Attrs) => tf.TensorInfo | tf.TensorInfo[];

const nativeKernels = new Map<string, TorchKernelFunc>();

/**
 * Under bf16 autocast (TorchBackend.autocast) these kernels take bfloat16-stored inputs as they are: the
 * matmul family, attention and the output layer of linearCrossEntropy compute in bf16 (torch.autocast's
 * lower-precision list; the latter's softmax and loss in float32), GELU, views and Add
 * keep their inputs' type (bf16 + bf16 is bf16, with float32 it is float32: gradient sums stay bf16, as
 * autograd's). Every other kernel gets float32 copies (softmax, norms, reductions, losses and the optimizer
 * run in float32, as under torch.autocast).
 */
const BF16_KERNELS = new Set([
  'Reshape', 'Transpose', 'Identity', 'Add', 'BatchMatMul', '_FusedMatMul', 'TorchLinear', 'TorchLinearGrad', 'TorchAttention', 'TorchAttentionGrad',
  'TorchGelu', 'TorchGeluGrad', 'TorchLinearCrossEntropy', 'TorchLinearCrossEntropyGrad',
]);
const fallbackCounts = new Map<string, number>();

/** Declares a native kernel (called at module load by the kernel family files). */
export function kernel(kernelName: string, fn: TorchKernelFunc): void {
  nativeKernels.set(kernelName, fn);
}

export function nativeKernelNames(): string[] {
  return [...nativeKernels.keys()].sort();
}

/** How many times each kernel ran through the cpu fallback since the last reset. */
export function fallbackStats(): Record<string, number> {
  return Object.fromEntries(fallbackCounts);
}

export function resetFallbackStats(): void {
  fallbackCounts.clear();
}

function cpuBackend(): tf.KernelBackend {
  const cpu = tf.engine().findBackend('cpu');
  if (!cpu) throw new Error('the cpu backend (needed for torch fallbacks) is not available');
  return cpu;
}

/**
 * Runs TF.js's cpu kernel on copies of the inputs and uploads the results. Native kernels call this too
 * for attribute combinations libtorch cannot express (counted the same way).
 */
export function runOnCpu(kernelName: string, inputs: tf.NamedTensorInfoMap, backend: TorchBackend, attrs: Attrs): tf.TensorInfo | tf.TensorInfo[] {
  const config = tf.getKernel(kernelName, 'cpu');
  if (!config) throw new Error(`kernel ${kernelName} is implemented neither by torch nor by cpu`);
  fallbackCounts.set(kernelName, (fallbackCounts.get(kernelName) ?? 0) + 1);
  const cpu = cpuBackend();
  const cpuIds = new Set<object>();
  // Some cpu kernels read `rank`/`size` (they were handed Tensors by their ops), and list-input kernels
  // (Concat, Pack, Einsum, ...) receive an array, which must stay an array.
  const move = (t: tf.TensorInfo) => {
    const values = backend.readSync(t.dataId);
    let dataId: object;
    if (t.dtype === 'complex64') {
      // The cpu backend keeps complex tensors as separate real and imaginary parts; its Complex kernel
      // builds one from two float tensors.
      const { real, imag } = tf.backend_util.splitRealAndImagArrays(values as Float32Array);
      const parts = [cpu.write(real, t.shape, 'float32'), cpu.write(imag, t.shape, 'float32')];
      const info = tf.getKernel('Complex', 'cpu')!.kernelFunc({
        inputs: { real: { dataId: parts[0], shape: t.shape, dtype: 'float32' }, imag: { dataId: parts[1], shape: t.shape, dtype: 'float32' } },
        backend: cpu,
        attrs: {},
      }) as tf.TensorInfo;
      parts.forEach((id) => cpuIds.add(id));
      dataId = info.dataId;
    } else dataId = cpu.write(values, t.shape, t.dtype);
    cpuIds.add(dataId);
    return { dataId, shape: t.shape, dtype: t.dtype, rank: t.shape.length, size: tf.util.sizeFromShape(t.shape) };
  };
  // Inputs are a name -> tensor map whose entries may be lists (RaggedGather's splits), or a plain list.
  const moveEntry = (t: tf.TensorInfo | tf.TensorInfo[]) => (Array.isArray(t) ? t.map(move) : move(t));
  let moved: tf.NamedTensorInfoMap;
  if (Array.isArray(inputs)) moved = (inputs as tf.TensorInfo[]).map(move) as unknown as tf.NamedTensorInfoMap;
  else {
    moved = {};
    for (const [name, t] of Object.entries(inputs)) if (t != null) moved[name] = moveEntry(t) as tf.TensorInfo;
  }
  try {
    const result = config.kernelFunc({ inputs: moved, attrs, backend: cpu });
    const outs = Array.isArray(result) ? result : [result];
    const uploaded = outs.map((o) => {
      cpuIds.add(o.dataId);
      return backend.makeTensorInfo(o.shape, o.dtype, cpu.readSync(o.dataId));
    });
    return Array.isArray(result) ? uploaded : uploaded[0];
  } finally {
    for (const id of cpuIds) cpu.disposeData(id, true);
  }
}

// M3_TORCH_PROFILE=1: time every torch kernel (wall time; kernels run synchronously on the CPU; on CUDA this
// is the time to queue it) and print the totals on stderr at exit, one row per kernel, to see where a step
// spends its time. M3_TORCH_PROFILE=sync also waits for the device around each kernel: on CUDA, its GPU time too.
const profile = process.env.M3_TORCH_PROFILE ? new Map<string, { calls: number; ms: number }>() : null;
const syncEach = process.env.M3_TORCH_PROFILE === 'sync';
/**
 * Host-cost counters (the bench's tfjs_kernels_per_step and host_ms_per_step): TF.js kernel invocations on
 * this backend (native and fallback, counted always), and, while timing is on (the profile, or
 * setKernelTiming), the kernels' own wall time — outermost kernels only, so a kernel run inside another is
 * not counted twice.
 */
const counters = { kernels: 0, kernelMs: 0 };
let timing = profile !== null;
let depth = 0;

/** Times every kernel from now on (or stops); the profile always does. */
export function setKernelTiming(on: boolean): void {
  timing = on || profile !== null;
}

/** TF.js kernel invocations so far, and the kernels' own milliseconds while timing was on. */
export function kernelCounts(): { kernels: number; kernelMs: number } {
  return { ...counters };
}

/** Restarts the kernel profile (e.g. after a warm-up step). */
export function resetKernelProfile(): void {
  profile?.clear();
}
if (profile) {
  process.on('exit', () => {
    const rows = [...profile].sort((a, b) => b[1].ms - a[1].ms);
    const total = rows.reduce((a, [, r]) => a + r.ms, 0);
    process.stderr.write(`torch kernel profile (${total.toFixed(0)} ms in kernels)\n`);
    for (const [name, r] of rows) {
      process.stderr.write(`${name.padEnd(28)} ${r.ms.toFixed(1).padStart(10)} ms ${String(r.calls).padStart(8)} calls\n`);
    }
  });
}

/** Runs `fn` timed as kernel `name` while timing is on (the profile's row, and kernel time outside nested kernels). */
function timed<T>(name: string, cuda: boolean, fn: () => T): T {
  if (cuda) addon().cudaSynchronize();
  const start = performance.now();
  depth++;
  try {
    return fn();
  } finally {
    depth--;
    if (cuda) addon().cudaSynchronize();
    const ms = performance.now() - start;
    if (depth === 0) counters.kernelMs += ms;
    if (profile) {
      const r = profile.get(name) ?? { calls: 0, ms: 0 };
      r.calls++;
      r.ms += ms;
      profile.set(name, r);
    }
  }
}

/**
 * Device work the backend runs outside TF.js's kernels (the one-call optimizer update and gradient norm):
 * timed and profiled as a kernel row `name`, so host_ms_per_step does not count it as host time; not a TF.js
 * kernel invocation.
 */
export function outsideKernels<T>(name: string, backend: TorchBackend, fn: () => T): T {
  return timing ? timed(name, syncEach && backend.device === 'cuda', fn) : fn();
}

function profiled(kernelName: string, fn: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    counters.kernels++;
    if (!timing) return fn(args);
    return timed(kernelName, syncEach && (args.backend as TorchBackend).device === 'cuda', () => fn(args));
  };
}

let registered = false;

export function registerKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, fn] of nativeKernels) {
    tf.registerKernel({
      kernelName,
      backendName: BACKEND_NAME,
      kernelFunc: profiled(kernelName, ({ inputs, backend, attrs }) => {
        const b = backend as TorchBackend;
        // String and complex tensors live in JS (torch stores float32/int32/bool): they take the cpu path.
        for (const k in inputs) {
          const dtype = inputs[k]?.dtype;
          if (dtype === 'string' || dtype === 'complex64') return runOnCpu(kernelName, inputs, b, attrs);
        }
        if (b.autocast && !BF16_KERNELS.has(kernelName)) return b.withFloat32Inputs(() => fn(inputs as Inputs, b, attrs));
        return fn(inputs as Inputs, b, attrs);
      }),
    });
  }
  for (const config of tf.getKernelsForBackend('cpu')) {
    if (nativeKernels.has(config.kernelName)) continue;
    tf.registerKernel({
      kernelName: config.kernelName,
      backendName: BACKEND_NAME,
      kernelFunc: profiled(config.kernelName, ({ inputs, backend, attrs }) => runOnCpu(config.kernelName, inputs, backend as TorchBackend, attrs)),
    });
  }
}
