/**
 * A whole encoder layer as one kernel each way (native/src/layer.cc runs the layer's ATen sequence under
 * libtorch's autograd). ../fused.ts wraps the pair in tf.customGrad: the forward's `context` output owns
 * the layer's graph and saved activations, and is the one tensor the tape keeps for the backward.
 */
import { addon } from '../addon';
import { Handle } from '../aten';
import { ENCODER_LAYER_WEIGHTS } from '../../ops';
import { kernel } from '../registry';
import { DNNL_MIN_ROWS } from './fused';

const ACTIVATIONS: Record<string, number> = { gelu: 0, gelu_tanh: 1, relu: 2 };

// Inputs: x0, x1, ... [Bᵢ, Lᵢ, hidden] (attrs.batches of them), the 16 weights by name, and per batch the
// optional mask<i>, dropProbs<i>, dropAttention<i>, dropFfn<i>. Outputs [context, y0, y1, ...] with `train`
// (the context, int32 [1], is what the backward takes), else [y0, y1, ...] from a forward without autograd.
kernel('TorchEncoderLayer', (inputs, b, { eps, heads, activation, batches, train }) => {
  const per = (name: string) => Array.from({ length: batches }, (_, i) => (inputs[name + i] ? b.h(inputs[name + i]) : null));
  const o = {
    eps, heads, activation: ACTIVATIONS[activation], train,
    // under autocast the GEMMs take bf16 inputs (float32 copies of bf16 inputs come from the registry)
    bf16: b.autocast,
    dnnlMinRows: b.device === 'cpu' && !b.autocast ? DNNL_MIN_ROWS : 0,
  };
  const xs = per('x') as Handle[];
  const weights = ENCODER_LAYER_WEIGHTS.map((n) => b.h(inputs[n]));
  const outs = addon().encoderLayerForward(xs, weights, per('mask'), per('dropProbs'), per('dropAttention'), per('dropFfn'), o);
  return outs.map((h, i) => b.out(h, train && i === 0 ? 'int32' : 'float32'));
});

// [dx0, dx1, ..., then the 16 weights' gradients]; dys: one per output y.
kernel('TorchEncoderLayerGrad', (inputs, b, { batches }) =>
  addon().encoderLayerBackward(b.h(inputs.context), Array.from({ length: batches }, (_, i) => b.h(inputs['dy' + i]))).map((h) => b.out(h, 'float32')),
);
