/**
 * The seam between the framework and the torch backend: `loadTorchBackend(device)` loads the libtorch
 * addon, registers the TF.js backend `torch` (once) and its kernels, and reports why not when it cannot.
 * src/backend/index.ts calls it, self-checks the backend and decides whether to use it.
 */
import * as tf from '@tensorflow/tfjs';
import { addonCounts, loadAddon, TorchAddon } from './addon';
import { BACKEND_NAME, kernelCounts, registerKernels } from './registry';

export type TorchLoadResult = { ok: true } | { ok: false; reason: string };

let registeredDevice: 'cpu' | 'cuda' | null = null;

/**
 * Thread layout on the CPU: OpenBLAS (GEMM) gets every core and ATen's own intra-op pool one thread.
 * Measured on 2 cores (bench/torch-ops.ts): a transformer layer's forward+backward is fastest this way,
 * because OpenMP workers spinning after an elementwise op steal cycles from the BLAS threads that follow.
 * M3_TORCH_THREADS="intra,blas" overrides.
 */
function configureThreads(native: TorchAddon): void {
  const cores = require('os').availableParallelism?.() ?? require('os').cpus().length;
  const [intra, blas] = (process.env.M3_TORCH_THREADS ?? `1,${cores}`).split(',').map((v) => parseInt(v, 10));
  native.setThreads(intra > 0 ? intra : 1, blas > 0 ? blas : cores);
}

export function loadTorchBackend(device: 'cpu' | 'cuda'): TorchLoadResult {
  try {
    const native = loadAddon();
    if (typeof native === 'string') return { ok: false, reason: native };
    if (device === 'cuda' && !native.cudaAvailable()) {
      return { ok: false, reason: `CUDA unavailable (libtorch ${native.version()} was built without CUDA or sees no GPU)` };
    }
    if (registeredDevice !== null) {
      if (registeredDevice !== device) return { ok: false, reason: `the torch backend is already registered on ${registeredDevice}` };
      return { ok: true };
    }
    // Kernel modules need the addon loaded, so they are required only now.
    require('./kernels');
    const { TorchBackend } = require('./backend') as typeof import('./backend');
    configureThreads(native);
    registerKernels();
    // Priority 0: registering must not make torch TF.js's default; src/backend/index.ts selects backends.
    tf.registerBackend(BACKEND_NAME, () => new TorchBackend(device), 0);
    registeredDevice = device;
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: `torch backend failed to initialise: ${(e as Error).message.split('\n')[0]}` };
  }
}

/**
 * What the host has asked of the backend so far in this process: TF.js kernel invocations, calls from JS
 * into the addon, ATen operator calls the addon made (native/src/handles.h says which count), and the
 * kernels' own milliseconds (while timing is on: setKernelTiming or M3_TORCH_PROFILE).
 */
/** Whether `atenCalls` includes the fused encoder layer's (its forward and backward run ATen natively); costs time while on. */
export function setLayerAtenCounting(on: boolean): void {
  const a = loadAddon();
  if (typeof a !== 'string') a.setLayerAtenCounting(on);
}

export function hostCounts(): { tfjsKernels: number; addonCalls: number; atenCalls: number; kernelMs: number } {
  const k = kernelCounts();
  return { tfjsKernels: k.kernels, kernelMs: k.kernelMs, ...addonCounts() };
}

export { fallbackStats, resetFallbackStats, nativeKernelNames, setKernelTiming } from './registry';
