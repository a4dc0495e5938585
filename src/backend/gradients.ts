/**
 * Gradient replacements for TF.js kernels whose stock gradient costs more than the kernel. Registered once,
 * for every backend (the gradient registry is global); each gives the same values as the stock one.
 *
 * Sum: the stock gradient multiplies dy by `ones(x.shape)`, which TF.js builds as a JS array and uploads — a
 * full-size host allocation and copy per backward pass (tens of milliseconds a step on a GPU for the loss's
 * sums over token vectors). Broadcasting dy to x's shape is the same values on the device alone.
 */
import * as tf from '@tensorflow/tfjs';

let registered = false;

export function registerGradients(): void {
  if (registered) return;
  registered = true;
  tf.registerGradient({
    kernelName: 'Sum',
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved;
      const shape = x.shape.slice();
      for (const a of tf.util.parseAxisParam((attrs as { axis: number | number[] }).axis, x.shape)) shape[a] = 1;
      return { x: () => tf.broadcastTo(tf.reshape(dy as tf.Tensor, shape), x.shape) };
    },
  });
}
