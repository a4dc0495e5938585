/**
 * Loads the libtorch N-API addon (native/, built by `npm install` when libtorch is present) and gives its
 * exports types. Everything else in this folder talks to libtorch through this object.
 */
import * as fs from 'fs';
import * as path from 'path';

/** The addon's exports (native/src/addon.cc). Tensors are integer handles into the addon's table. */
export interface TorchAddon {
  /** Resolves an ATen operator by schema name, e.g. ('aten::add', 'Tensor'); returns an operator id. */
  op(name: string, overload?: string): number;
  /** Calls an operator; tensors are passed and returned as handles; several returns come as an array. */
  call(opId: number, args: unknown[]): unknown;
  fromArray(values: Float32Array | Int32Array | Uint8Array, shape: number[], scalarType: number, device: string): number;
  toArray(handle: number): Float32Array | Int32Array | Uint8Array;
  free(handle: number): void;
  /** [scalarTypeCode, ...shape] */
  meta(handle: number): number[];
  /** True when nothing else (a view, an alias, another handle) shares this handle's tensor or memory. */
  exclusive(handle: number): boolean;
  liveHandles(): number;
  /** ATen operator calls the addon has made in this process (native/src/handles.h, CountAten). */
  atenCalls(): number;
  /**
   * The CPU caching allocator's large blocks (>= 1 MiB): bytes in use, the most in use at once, bytes
   * cached for reuse, reuse hits and fresh allocations. `release` first returns the cached blocks to the
   * system and restarts the peak.
   */
  cpuMemory(release?: boolean): { liveBytes: number; peakLiveBytes: number; cachedBytes: number; hits: number; misses: number };
  /**
   * AdamW of one parameter in place in one pass (native/src/adamw.cc), the TorchAdamW composite's float32
   * operations per element; false (nothing changed) unless all four are contiguous float32 CPU tensors.
   */
  adamwCpu(param: number, m: number, v: number, grad: number, beta1: number, beta2: number, lr: number, eps: number, decay: number, bc1: number, bc2Sqrt: number): boolean;
  /**
   * adamwCpu over many parameters in one call (decays[i] is parameter i's lr-scaled decay); false (nothing
   * changed) unless every entry qualifies for adamwCpu and each parameter and moment is exclusive.
   */
  /** ‖(‖t₁‖, ‖t₂‖, …)‖ of CPU tensors (bf16 widened first) by the per-tensor path's ATen operators, one new scalar; null off the CPU. */
  globalNormCpu(tensors: number[]): number | null;
  adamwCpuAll(params: number[], m: number[], v: number[], grads: number[], decays: number[], beta1: number, beta2: number, lr: number, eps: number, bc1: number, bc2Sqrt: number): boolean;
  /**
   * Test hook: `true` starts recording every matrix product dispatched in the process (ATen's mm, addmm, bmm,
   * matmul, linear, ... and oneDNN's sgemm) with its tensor inputs' dtypes (c10 names: Float, BFloat16);
   * `false` stops and returns the records. Nothing is observed while off.
   */
  recordGemms(on: boolean): { op: string; dtypes: string[] }[] | undefined;
  /** OpenBLAS's core type, build configuration and threads, whether oneDNN's sgemm is used, ATen's intra-op threads. */
  gemmInfo(): { blasCore: string; blasConfig: string; blasThreads: number; dnnlSgemm: boolean; atenThreads: number };
  /**
   * op(a)·op(b) [+ bias per row] through oneDNN's sgemm (native/src/gemm.cc), a new [M, N] tensor; null when
   * the process has no shared oneDNN or an operand is not a contiguous 2-D float32 CPU tensor.
   */
  dnnlMm(a: number, b: number, transA: boolean, transB: boolean, bias?: number | null): number | null;
  /**
   * One encoder layer (native/src/layer.cc) over several batches: 16 weights in ENCODER_LAYER_WEIGHTS order, per
   * batch an optional additive mask and dropout keep masks (probabilities, attention output, FFN output). With
   * `train`, [context, ...ys]: the context tensor owns the layer's autograd graph (freeing it frees the graph);
   * without, ys alone.
   */
  encoderLayerForward(xs: number[], weights: number[], masks: (number | null)[], dropProbs: (number | null)[], dropAttention: (number | null)[], dropFfn: (number | null)[],
    o: { eps: number; heads: number; activation: number; bf16: boolean; dnnlMinRows: number; train: boolean }): number[];
  /** [...dxs, ...16 weight gradients] of the layer whose context this is, given one dy per output; frees its graph. */
  encoderLayerBackward(context: number, dys: number[]): number[];
  /** How many encoder layer graphs are alive (each until its backward ran or its context was freed). */
  encoderLayerGraphs(): number;
  /** Whether the fused encoder layer adds the ATen calls of its forward and backward to atenCalls() (off: it costs a RecordFunction per ATen call). */
  setLayerAtenCounting(on: boolean): void;
  /** Sets OpenBLAS's thread count, returning the one before (0, and nothing set, when the BLAS is another). */
  blasThreads(n: number): number;
  setThreads(intraOp: number, blas?: number): { intraOp: number; blasSet: boolean };
  version(): string;
  cudaAvailable(): boolean;
  /**
   * libtorch's CUDA caching allocator on the current device (torch.cuda.memory_allocated and friends);
   * {} when the addon was built without CUDA. `resetPeak` restarts the peak from what is allocated now.
   */
  cudaMemory(resetPeak?: boolean): { allocatedBytes?: number; peakAllocatedBytes?: number; reservedBytes?: number };
  /** Waits for the device's queued work (for timing; reading a tensor synchronises anyway). */
  cudaSynchronize(): void;
  dtypeCodes: { float32: number; int32: number; bool: number; int64: number; float64: number; uint8: number; bfloat16: number };
  // ---- c10d collectives (native/src/dist.cc); without Gloo headers at build time they throw "not built" ----
  distInfo(): { gloo: boolean; nccl: boolean };
  distInit(o: { masterAddr: string; masterPort: number; rank: number; worldSize: number; timeoutMs: number; backend: 'gloo' | 'nccl'; server: boolean; prefix: string }): void;
  distDestroy(): void;
  /** A new handle with the elementwise sum over ranks; `inPlace` reduces an unshared input where it lies (the result aliases it). */
  allReduce(handle: number, timeoutMs?: number, inPlace?: boolean): number;
  /** Every rank's tensor concatenated along dim 0 in rank order, and each rank's first dimension. */
  allGather(handle: number, timeoutMs?: number): [number, number[]];
  broadcast(handle: number, root: number, timeoutMs?: number): number;
  barrier(timeoutMs?: number): void;
  storeSet(key: string, value: string): void;
  storeGet(key: string): string;
  /** Ranks whose heartbeat stood still for probeMs; [0] when the store cannot be reached. */
  lostRanks(probeMs?: number): number[];
}

/** Where the build puts the addon (node-gyp's Release output). */
export const ADDON_PATH = path.resolve(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'm3_torch.node');

let cached: TorchAddon | undefined;
let raw: TorchAddon | undefined;
let addonCalls = 0;

/**
 * The addon with every exported function counted: one per call from JS into the addon (the bench's
 * addon_calls_per_step). A closure per export; the count costs an increment.
 */
function counted(native: TorchAddon): TorchAddon {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(native)) {
    if (typeof value !== 'function') {
      out[name] = value;
      continue;
    }
    const fn = value as (...a: unknown[]) => unknown;
    out[name] = function (this: unknown, ...a: unknown[]) {
      addonCalls++;
      return fn.apply(native, a);
    };
  }
  return out as unknown as TorchAddon;
}

/** Calls from JS into the addon and ATen operator calls the addon made, so far in this process (not counting this read). */
export function addonCounts(): { addonCalls: number; atenCalls: number } {
  return { addonCalls, atenCalls: raw?.atenCalls ? raw.atenCalls() : 0 };
}

/** native/locate-libtorch.js's INSTALL_HINT (how to get libtorch and rebuild), from the src or the dist layout. */
function installHint(): string {
  const file = [path.resolve(__dirname, '..', '..', '..', 'native', 'locate-libtorch.js'), path.resolve(__dirname, '..', '..', '..', '..', 'native', 'locate-libtorch.js')].find((f) => fs.existsSync(f));
  return file ? (require(file) as { INSTALL_HINT: string }).INSTALL_HINT : 'install libtorch-dev or PyTorch, then npm run build:native';
}

/** The addon, or a one-line reason why it cannot be loaded. Never throws. */
export function loadAddon(): TorchAddon | string {
  if (cached) return cached;
  // M3_TORCH_ADDON: an addon built elsewhere (the device bundle's launchers point it at the bundle's build).
  const override = process.env.M3_TORCH_ADDON;
  if (override && !fs.existsSync(override)) return `addon not built: ${override} (M3_TORCH_ADDON) does not exist`;
  // From dist/src/backend/torch the relative path is one level deeper; accept both layouts.
  const candidates = override ? [override] : [ADDON_PATH, path.resolve(__dirname, '..', '..', '..', '..', 'native', 'build', 'Release', 'm3_torch.node')];
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) return `addon not built (libtorch was not found at npm install; ${installHint()})`;
  try {
    raw = require(file) as TorchAddon;
    cached = counted(raw);
    return cached;
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0];
    return /lib(torch|c10)/.test(msg) ? `libtorch missing at run time: ${msg}` : `addon failed to load: ${msg}`;
  }
}

/** The loaded addon; only valid after loadAddon() succeeded. */
export function addon(): TorchAddon {
  if (!cached) throw new Error('torch addon is not loaded');
  return cached;
}
