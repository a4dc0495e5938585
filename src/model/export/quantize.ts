/**
 * Weight transforms for export: PyTorch Linear weights [out, in] transposed to the [in, out] right operand
 * of ONNX MatMul, float32 → float16 bytes, and per-output-channel uint8 quantisation for MatMulInteger.
 */
import { encodeTensor } from '../weights/dtype';

/** [out, in] row-major → [in, out] row-major. */
export function transpose(w: Float32Array, out: number, inDim: number): Float32Array {
  if (w.length !== out * inDim) throw new Error(`transpose: ${w.length} values for [${out}, ${inDim}]`);
  const t = new Float32Array(w.length);
  for (let o = 0; o < out; o++) {
    const row = o * inDim;
    for (let i = 0; i < inDim; i++) t[i * out + o] = w[row + i];
  }
  return t;
}

export function float32Bytes(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

/** float32 → IEEE half bytes, rounded to nearest even (values beyond ±65504 become ±Inf). */
export function float16Bytes(x: Float32Array): Uint8Array {
  return encodeTensor({ dtype: 'float32', shape: [x.length], data: x }, 'F16');
}

export interface QuantizedMatrix {
  /** uint8 [in, out]: round(w / scale) + zeroPoint, clamped to 0..255. */
  q: Uint8Array;
  /** float32 [out] */
  scale: Float32Array;
  /** uint8 [out] */
  zeroPoint: Uint8Array;
}

/**
 * Asymmetric uint8 quantisation per output channel of a PyTorch Linear weight [out, in], laid out as the
 * [in, out] MatMul operand: each column gets the scale and zero point of its own [min, max] range
 * (widened to contain 0, so 0 is exact), as onnxruntime's per-channel dynamic quantisation does.
 * uint8 × uint8 keeps MatMulInteger clear of the u8·s8 int16 saturation of some x86 kernels.
 */
export function quantizePerOutputChannel(w: Float32Array, out: number, inDim: number): QuantizedMatrix {
  if (w.length !== out * inDim) throw new Error(`quantize: ${w.length} values for [${out}, ${inDim}]`);
  const q = new Uint8Array(w.length);
  const scale = new Float32Array(out);
  const zeroPoint = new Uint8Array(out);
  for (let o = 0; o < out; o++) {
    const row = o * inDim;
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < inDim; i++) {
      const v = w[row + i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const s = hi > lo ? Math.fround((hi - lo) / 255) : 1;
    const zp = Math.min(255, Math.max(0, Math.round(-lo / s)));
    scale[o] = s;
    zeroPoint[o] = zp;
    for (let i = 0; i < inDim; i++) q[i * out + o] = Math.min(255, Math.max(0, Math.round(w[row + i] / s) + zp));
  }
  return { q, scale, zeroPoint };
}
