/**
 * The TF.js `torch` backend: a KernelBackend whose tensors are libtorch tensors in the addon's handle
 * table, keyed by TF.js dataId. Data crosses to JS only when read (`readSync`/`read`). String and complex64
 * tensors (neither is used in training) stay as JS values and their kernels run on the cpu fallback.
 */
import * as tf from '@tensorflow/tfjs';
import { addon } from './addon';
import { aten, Handle } from './aten';

type NativeDtype = 'float32' | 'int32' | 'bool';
type DataId = object;

interface TensorData {
  /** Addon handle; 0 for JS-resident (string, complex64) tensors. */
  handle: Handle;
  shape: number[];
  dtype: tf.DataType;
  refCount: number;
  /** Only for string and complex64 tensors (JS-resident). */
  values?: tf.backend_util.BackendValues;
  /** A float32 tensor stored in bfloat16 (bf16 autocast: what matmuls and attention produce). */
  bf16?: boolean;
}

const toType = aten('_to_copy');

function typedFor(values: tf.backend_util.BackendValues | null | undefined, dtype: NativeDtype, size: number): Float32Array | Int32Array | Uint8Array {
  const Ctor = dtype === 'float32' ? Float32Array : dtype === 'int32' ? Int32Array : Uint8Array;
  if (values == null) return new Ctor(size);
  if (values instanceof Ctor) return values;
  return Ctor.from(values as ArrayLike<number>);
}

export class TorchBackend extends tf.KernelBackend {
  readonly data: tf.DataStorage<TensorData>;
  readonly device: 'cpu' | 'cuda';
  /**
   * bf16 autocast (train.bf16), as torch.autocast: matmuls and attention run in bfloat16 and their float32
   * outputs stay stored in bfloat16; every other kernel sees float32 (registry.ts's BF16_KERNELS).
   */
  autocast = false;
  /** While a kernel outside BF16_KERNELS runs under autocast: float32 copies of its bf16 inputs, freed after. */
  private castTemps: Handle[] | null = null;
  /**
   * bf16 copies of parameters (linear weights and biases) under autocast, made once per optimizer step as
   * torch.autocast caches its weight casts, instead of once per use (forward of each encoder call, backward).
   * Cleared when the parameters change in place (optimizer) and when autocast ends.
   */
  private readonly paramCasts = new Map<DataId, Handle>();
  private readonly codes = addon().dtypeCodes;
  private readonly dtypeOfCode = new Map<number, string>(Object.entries(addon().dtypeCodes).map(([k, v]) => [v, k]));

  constructor(device: 'cpu' | 'cuda') {
    super();
    this.device = device;
    this.data = new tf.DataStorage(this, tf.engine());
  }

  // ---- storage -------------------------------------------------------------------------------------
  write(values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType): DataId {
    const dataId = {};
    this.data.set(dataId, this.upload(values, shape, dtype, 1));
    return dataId;
  }

  move(dataId: DataId, values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType, refCount: number): void {
    this.data.set(dataId, this.upload(values, shape, dtype, refCount));
  }

  private upload(values: tf.backend_util.BackendValues | null | undefined, shape: number[], dtype: tf.DataType, refCount: number): TensorData {
    // libtorch has no strings, and TF.js's complex layout (interleaved re/im) is only used by the cpu
    // fallback kernels: both stay as JS values.
    if (dtype === 'string') return { handle: 0, shape, dtype, refCount, values: values ?? [] };
    if (dtype === 'complex64') return { handle: 0, shape, dtype, refCount, values: values ?? new Float32Array(2 * shape.reduce((a, b) => a * b, 1)) };
    const size = shape.reduce((a, b) => a * b, 1);
    const handle = addon().fromArray(typedFor(values, dtype, size), shape, this.codes[dtype], this.device);
    return { handle, shape, dtype, refCount };
  }

  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues | string[]): tf.TensorInfo {
    let stored = values as tf.backend_util.BackendValues | undefined;
    if (dtype === 'string' && values != null && values.length > 0 && typeof values[0] === 'string') {
      stored = (values as unknown as string[]).map((s) => tf.util.encodeString(s));
    }
    return { dataId: this.write(stored as tf.backend_util.BackendValues, shape, dtype), shape, dtype };
  }

  readSync(dataId: DataId): tf.backend_util.BackendValues {
    const d = this.data.get(dataId);
    if (d.values !== undefined) return d.values;
    return addon().toArray(d.handle);
  }

  async read(dataId: DataId): Promise<tf.backend_util.BackendValues> {
    return this.readSync(dataId);
  }

  disposeData(dataId: DataId, force = false): boolean {
    if (!this.data.has(dataId)) return true;
    const d = this.data.get(dataId);
    d.refCount--;
    if (!force && d.refCount > 0) return false;
    if (d.handle) addon().free(d.handle);
    const cast = this.paramCasts.get(dataId);
    if (cast !== undefined) {
      addon().free(cast);
      this.paramCasts.delete(dataId);
    }
    this.data.delete(dataId);
    return true;
  }

  disposeIntermediateTensorInfo(info: tf.TensorInfo): void {
    this.disposeData(info.dataId);
  }

  refCount(dataId: DataId): number {
    return this.data.has(dataId) ? this.data.get(dataId).refCount : 0;
  }

  incRef(dataId: DataId): void {
    this.data.get(dataId).refCount++;
  }

  numDataIds(): number {
    return this.data.numDataIds();
  }

  /**
   * nativeHandles: live libtorch tensors; cpuLiveBytes / cpuCachedBytes: large CPU blocks in use / kept for
   * reuse; on CUDA, cudaAllocatedBytes / cudaPeakAllocatedBytes: the CUDA caching allocator's bytes in use.
   */
  memory(): { unreliable: boolean; reasons?: string[]; nativeHandles: number; cpuLiveBytes: number; cpuCachedBytes: number; cudaAllocatedBytes?: number; cudaPeakAllocatedBytes?: number } {
    const cpu = addon().cpuMemory();
    const out = { unreliable: false, nativeHandles: addon().liveHandles(), cpuLiveBytes: cpu.liveBytes ?? 0, cpuCachedBytes: cpu.cachedBytes ?? 0 };
    if (this.device !== 'cuda') return out;
    const cuda = addon().cudaMemory();
    return { ...out, cudaAllocatedBytes: cuda.allocatedBytes, cudaPeakAllocatedBytes: cuda.peakAllocatedBytes };
  }

  timerAvailable(): boolean {
    return true;
  }

  async time(f: () => void): Promise<tf.BackendTimingInfo> {
    // Kernels run synchronously on the calling thread (CPU), so wall time around f is kernel time; on
    // CUDA the launches are asynchronous, so the device is synchronised before and after.
    if (this.device === 'cuda') addon().cudaSynchronize();
    const start = process.hrtime.bigint();
    f();
    if (this.device === 'cuda') addon().cudaSynchronize();
    return { kernelMs: Number(process.hrtime.bigint() - start) / 1e6 };
  }

  floatPrecision(): 32 {
    return 32;
  }

  epsilon(): number {
    return 1e-7;
  }

  dispose(): void {
    // Tensors are freed through disposeData; the addon's table outlives a backend instance.
  }

  // ---- helpers for kernels --------------------------------------------------------------------------
  /** The libtorch handle behind a TensorInfo. */
  h(info: tf.TensorInfo): Handle {
    const d = this.data.get(info.dataId);
    if (!d.handle) throw new Error(`${info.dtype} tensors have no libtorch data (kernels take numeric tensors)`);
    if (d.bf16 && this.castTemps) {
      const copy = toType(d.handle, this.codes.float32) as Handle;
      this.castTemps.push(copy);
      return copy;
    }
    return d.handle;
  }

  /** `info` (a parameter) in bf16, cast once until clearParamCasts(). */
  paramLowp(info: tf.TensorInfo): Handle {
    const d = this.data.get(info.dataId);
    if (d.bf16) return d.handle;
    let h = this.paramCasts.get(info.dataId);
    if (h === undefined) {
      h = toType(d.handle, this.codes.bfloat16) as Handle;
      this.paramCasts.set(info.dataId, h);
    }
    return h;
  }

  /** Drops the cached bf16 parameter copies (their parameters changed, or autocast ended). */
  clearParamCasts(): void {
    for (const h of this.paramCasts.values()) addon().free(h);
    this.paramCasts.clear();
  }

  /** True when `info` is a float32 tensor stored in bfloat16 (autocast). */
  isBf16(info: tf.TensorInfo): boolean {
    return this.data.get(info.dataId).bf16 === true;
  }

  /** Runs a kernel that takes float32 under autocast: `h()` hands it float32 copies of bf16 inputs. */
  withFloat32Inputs<T>(run: () => T): T {
    const outer = this.castTemps;
    this.castTemps = [];
    try {
      return run();
    } finally {
      for (const h of this.castTemps) addon().free(h);
      this.castTemps = outer;
    }
  }

  /**
   * Registers a handle an ATen op returned as a new TF.js tensor of `dtype`. ATen sometimes answers in a
   * wider or different type (int64 indices, float results of integer inputs): those are converted here
   * so every stored tensor has exactly its TF.js dtype.
   */
  out(handle: Handle, dtype: tf.DataType): tf.TensorInfo {
    const meta = addon().meta(handle);
    const want = this.codes[dtype as NativeDtype];
    if (want === undefined) throw new Error(`torch backend cannot produce ${dtype} tensors`);
    const bf16 = this.autocast && dtype === 'float32' && meta[0] === this.codes.bfloat16;
    if (meta[0] !== want && !bf16) {
      const converted = toType(handle, want) as Handle;
      addon().free(handle);
      handle = converted;
    }
    const shape = meta.slice(1);
    const dataId = {};
    this.data.set(dataId, bf16 ? { handle, shape, dtype, refCount: 1, bf16 } : { handle, shape, dtype, refCount: 1 });
    return { dataId, shape, dtype };
  }

  /**
   * True when writing into `info`'s memory in place changes no other tensor: its dataId has one
   * reference and no view, alias or other handle shares its libtorch tensor or storage.
   */
  exclusive(info: tf.TensorInfo): boolean {
    const d = this.data.get(info.dataId);
    return d.refCount === 1 && d.handle !== 0 && addon().exclusive(d.handle);
  }

  /** Frees handles of intermediate results a kernel made and no tensor owns. */
  free(...handles: Handle[]): void {
    for (const h of handles) addon().free(h);
  }

  /** The TF.js dtype of a raw handle (for kernels that inspect what ATen produced). */
  dtypeOf(handle: Handle): string {
    return this.dtypeOfCode.get(addon().meta(handle)[0]) ?? 'unknown';
  }
}
