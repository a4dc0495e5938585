/**
 * Two measured gaps of @tensorflow/tfjs-backend-wasm, patched at registration:
 * - it has no UnsortedSegmentSum kernel, which the `gather` gradient (embedding lookups) needs: we add one
 *   that accumulates on the host, O(rows × width);
 * - its 2-D matmul with transpose flags runs at ~2 GFLOP/s instead of XNNPACK's speed: we materialise the
 *   transposed operand with the wasm Transpose kernel and call the stock kernel without flags. Batched
 *   (attention) matmuls keep the stock path; materialising does not speed them up;
 * - its OneHot writes int32 bits whatever the requested dtype (float32 one-hots come out as denormals):
 *   we build the int32 one-hot and cast it.
 */
import * as tf from '@tensorflow/tfjs';

type KernelFunc = tf.KernelConfig['kernelFunc'];
type Info = tf.TensorInfo;
// The wasm backend's own API (readSync / makeOutput / disposeData) is all we use.
interface WasmBackend {
  readSync(dataId: unknown): tf.backend_util.BackendValues;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): Info;
  disposeData(dataId: unknown): boolean;
}

let patched = false;

export function patchWasmKernels(): void {
  if (patched) return;
  patched = true;
  tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSum as KernelFunc });

  patchOneHot();
  const stock = tf.getKernel('BatchMatMul', 'wasm');
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (!stock || !transpose) return;
  // Must run before the wasm backend initialises: kernels' setupFuncs are bound at that point.
  const stockFn = stock.kernelFunc;
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({
    ...stock, // keeps the stock setupFunc, which binds the wasm function at backend start-up
    kernelFunc: ((args: { inputs: { a: Info; b: Info }; backend: WasmBackend; attrs: { transposeA: boolean; transposeB: boolean } }) => {
      const { inputs, backend, attrs } = args;
      const batch = (t: Info) => t.shape.slice(0, -2).reduce((x, y) => x * y, 1);
      if ((!attrs.transposeA && !attrs.transposeB) || batch(inputs.a) !== 1 || batch(inputs.b) !== 1) {
        return stockFn(args as unknown as Parameters<KernelFunc>[0]);
      }
      const temps: Info[] = [];
      const materialise = (t: Info): Info => {
        const r = t.shape.length;
        const perm = [...Array(r).keys()];
        [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
        const out = transpose.kernelFunc({ inputs: { x: t }, backend, attrs: { perm } } as never) as Info;
        temps.push(out);
        return out;
      };
      const a = attrs.transposeA ? materialise(inputs.a) : inputs.a;
      const b = attrs.transposeB ? materialise(inputs.b) : inputs.b;
      const out = stockFn({ ...args, inputs: { a, b }, attrs: { ...attrs, transposeA: false, transposeB: false } } as never);
      for (const t of temps) backend.disposeData(t.dataId);
      return out;
    }) as unknown as KernelFunc,
  });
}

function patchOneHot(): void {
  const stock = tf.getKernel('OneHot', 'wasm');
  const cast = tf.getKernel('Cast', 'wasm');
  if (!stock || !cast) return;
  tf.unregisterKernel('OneHot', 'wasm');
  tf.registerKernel({
    ...stock,
    kernelFunc: ((args: { backend: WasmBackend; attrs: { dtype: tf.DataType } }) => {
      if (args.attrs.dtype === 'int32') return stock.kernelFunc(args as never);
      const ints = stock.kernelFunc({ ...args, attrs: { ...args.attrs, dtype: 'int32' } } as never) as Info;
      const out = cast.kernelFunc({ inputs: { x: ints }, backend: args.backend, attrs: { dtype: args.attrs.dtype } } as never);
      args.backend.disposeData(ints.dataId);
      return out;
    }) as unknown as KernelFunc,
  });
}

function unsortedSegmentSum(args: { inputs: { x: Info; segmentIds: Info }; backend: WasmBackend; attrs: { numSegments: number } }): Info {
  const { inputs: { x, segmentIds }, backend, attrs: { numSegments } } = args;
  const xs = backend.readSync(x.dataId) as Float32Array | Int32Array;
  const ids = backend.readSync(segmentIds.dataId) as Int32Array;
  const rows = segmentIds.shape.reduce((a, b) => a * b, 1);
  const width = rows === 0 ? 0 : xs.length / rows;
  const out = x.dtype === 'int32' ? new Int32Array(numSegments * width) : new Float32Array(numSegments * width);
  for (let r = 0; r < rows; r++) {
    const s = ids[r];
    if (s < 0 || s >= numSegments) continue; // TF semantics: out-of-range ids are dropped
    const src = r * width;
    const dst = s * width;
    for (let j = 0; j < width; j++) out[dst + j] += xs[src + j];
  }
  return backend.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], x.dtype, undefined, out);
}
