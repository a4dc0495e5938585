/**
 * Host-side tensors exchanged by the weight readers/writers: plain typed arrays, no TF.js.
 * Readers widen F16/BF16 to float32 and narrow I64 to int32 (range-checked); writers take these back.
 */
export type HostDType = 'float32' | 'int32';

export interface HostTensor {
  dtype: HostDType;
  shape: number[];
  data: Float32Array | Int32Array;
}

/** Tensors by name, in the order the file stored them. */
export type TensorMap = Map<string, HostTensor>;

/**
 * A tensor to write whose values are produced only when it is written: a checkpoint reads its device
 * tensors one at a time, so writing one never holds a host copy of every weight and moment at once.
 */
export interface TensorSource {
  dtype: HostDType;
  shape: number[];
  read(): Float32Array | Int32Array;
}
