/** Converting stored element types (F16, BF16, I64, ...) to the host's float32 / int32. */
import { UserError } from '../../util/errors';
import { HostTensor } from './types';

export type StoredDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const BYTES_PER_ELEMENT: Record<StoredDType, number> = {
  F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export function isStoredDType(s: string): s is StoredDType {
  return Object.prototype.hasOwnProperty.call(BYTES_PER_ELEMENT, s);
}

/** IEEE half → float32 (exact: every half is a float32). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** Decodes little-endian bytes of a stored dtype into a host tensor. `where` names the tensor for errors. */
export function decodeTensor(bytes: Uint8Array, dtype: StoredDType, shape: number[], where: string): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(bytes.subarray(0, n * 4));
      return { dtype: 'float32', shape, data: out };
    }
    case 'F16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return { dtype: 'float32', shape, data: out };
    }
    case 'BF16': {
      const out = new Float32Array(n);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = view.getUint16(2 * i, true) << 16;
      return { dtype: 'float32', shape, data: out };
    }
    case 'F64': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(8 * i, true);
      return { dtype: 'float32', shape, data: out };
    }
    case 'I64': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = view.getBigInt64(8 * i, true);
        if (v > 2147483647n || v < -2147483648n) throw new UserError(`${where}: int64 value ${v} does not fit in int32`);
        out[i] = Number(v);
      }
      return { dtype: 'int32', shape, data: out };
    }
    case 'I32': {
      const out = new Int32Array(n);
      new Uint8Array(out.buffer).set(bytes.subarray(0, n * 4));
      return { dtype: 'int32', shape, data: out };
    }
    case 'I16': return { dtype: 'int32', shape, data: Int32Array.from({ length: n }, (_, i) => view.getInt16(2 * i, true)) };
    case 'I8': return { dtype: 'int32', shape, data: Int32Array.from({ length: n }, (_, i) => view.getInt8(i)) };
    case 'U8':
    case 'BOOL': return { dtype: 'int32', shape, data: Int32Array.from(bytes.subarray(0, n)) };
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → IEEE half bits, rounding to nearest even; overflow → ±Inf, NaN stays NaN. */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** float32 → bfloat16 bits, rounding to nearest even; NaN stays NaN. */
export function floatToBFloat16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40;
  return (Math.floor((x + 0x7fff + ((x >>> 16) & 1)) / 0x10000)) & 0xffff;
}

/** The stored dtypes a host tensor can be written as: F32/F16/BF16 from float32, I32/I64 from int32. */
export type WritableDType = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64';

/** Encodes a host tensor as little-endian bytes of `dtype` (F32/I32 are views of the tensor's own memory). */
export function encodeTensor(t: HostTensor, dtype: WritableDType): Uint8Array {
  const d = t.data;
  const isFloat = dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
  if (isFloat !== (t.dtype === 'float32')) throw new Error(`cannot write a ${t.dtype} tensor as ${dtype}`);
  switch (dtype) {
    case 'F32':
    case 'I32':
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    case 'F16':
    case 'BF16': {
      const out = new Uint16Array(d.length);
      const conv = dtype === 'F16' ? floatToHalf : floatToBFloat16;
      for (let i = 0; i < d.length; i++) out[i] = conv(d[i]);
      return new Uint8Array(out.buffer);
    }
    case 'I64': {
      const out = new BigInt64Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = BigInt(d[i]);
      return new Uint8Array(out.buffer);
    }
  }
}
