/**
 * Moving parameters between TF.js variables and host tensors (what weight files and checkpoints hold).
 * Every parameter variable is made through `ownedVariable`: tf.variable(t) alone leaves `t` holding a
 * reference to the data, so the first assign() (every optimizer step) could never free the initial value.
 */
import * as tf from '@tensorflow/tfjs';
import { HostTensor, TensorSource } from './weights/types';

/** A variable that alone owns the data `make()` returns (made inside a tidy, so `make`'s temporaries go too). */
export const ownedVariable = (make: () => tf.Tensor, trainable = true): tf.Variable => tf.tidy(() => tf.variable(make(), trainable));

/** A device tensor of a host tensor's values. */
export const fromHost = (t: HostTensor): tf.Tensor => tf.tensor(t.data, t.shape, t.dtype);

/** A host copy of a tensor (float32, or int32 for int32 tensors). */
/** A tensor's values read only when a writer asks (writeSafetensorsFd): one host copy at a time. */
export function toSource(t: tf.Tensor): TensorSource {
  return { dtype: t.dtype === 'int32' ? 'int32' : 'float32', shape: t.shape.slice(), read: () => t.dataSync() as Float32Array | Int32Array };
}

export function toHost(t: tf.Tensor): HostTensor {
  return t.dtype === 'int32'
    ? { dtype: 'int32', shape: t.shape.slice(), data: t.dataSync() as Int32Array }
    : { dtype: 'float32', shape: t.shape.slice(), data: t.dataSync() as Float32Array };
}
