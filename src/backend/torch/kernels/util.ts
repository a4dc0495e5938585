/** Shared helpers for kernel families. */
import * as tf from '@tensorflow/tfjs';
import { addon } from '../addon';
import { aten, Handle } from '../aten';
import type { TorchBackend } from '../backend';

/**
 * Runs `fn` with a `tmp` marker for intermediate handles, which are freed when fn returns or throws.
 * Handles fn returns (or passes to backend.out) are owned by the caller, so they must not be marked.
 */
export function scoped<T>(fn: (tmp: (h: Handle) => Handle) => T): T {
  const temps: Handle[] = [];
  try {
    return fn((h) => {
      temps.push(h);
      return h;
    });
  } finally {
    for (const h of temps) addon().free(h);
  }
}

const fromArray = (values: Int32Array | Float32Array, shape: number[], backend: TorchBackend, dtype: 'int32' | 'float32'): Handle =>
  addon().fromArray(values, shape, addon().dtypeCodes[dtype], backend.device);

/** A small int32 constant tensor (index strides and the like), uploaded from JS. */
export function intConst(values: number[], backend: TorchBackend): Handle {
  return fromArray(Int32Array.from(values), [values.length], backend, 'int32');
}

export const alias = aten('alias');
export const reshape = aten('reshape');
export const toDtype = aten('_to_copy');

/** Axis attrs come as a number, an array or null (all axes): normalise to sorted non-negative axes. */
export function axes(axis: number | number[] | null | undefined, shape: number[]): number[] {
  return tf.util.parseAxisParam(axis as number | number[], shape).sort((a, b) => a - b);
}

/**
 * A float32 input as the matmul family takes it: under bf16 autocast a bfloat16 handle (a `tmp` copy unless
 * it is stored in bf16 already), otherwise the input's own handle.
 */
export function lowp(info: tf.TensorInfo, b: TorchBackend, tmp: (h: Handle) => Handle): Handle {
  const h = b.h(info);
  return b.autocast && info.dtype === 'float32' && !b.isBf16(info) ? tmp(toDtype(h, code('bfloat16'))) : h;
}

/** A parameter (weight, bias) as the matmul family takes it: under autocast its cached bf16 copy. */
export function paramLowp(info: tf.TensorInfo, b: TorchBackend): Handle {
  return b.autocast && info.dtype === 'float32' ? b.paramLowp(info) : b.h(info);
}

/** c10::ScalarType code for a TF.js dtype. */
export function code(dtype: tf.DataType | 'int64' | 'float64' | 'bfloat16'): number {
  const c = (addon().dtypeCodes as Record<string, number>)[dtype];
  if (c === undefined) throw new Error(`torch backend has no ${dtype} tensors`);
  return c;
}

export function sizeOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
