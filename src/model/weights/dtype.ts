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
