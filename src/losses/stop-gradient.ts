/**
 * stop_gradient / `.detach()` for TF.js, which has none: an identity whose gradient is zero. Inside a
 * tf.grad/variableGrads function the result is a constant as far as backprop is concerned.
 */
import * as tf from '@tensorflow/tfjs';

const detach = tf.customGrad(((x: tf.Tensor) => ({
  value: tf.clone(x),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as Parameters<typeof tf.customGrad>[0]);

export function stopGradient<T extends tf.Tensor>(x: T): T {
  return detach(x) as T;
}
