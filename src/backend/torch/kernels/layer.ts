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

// Inputs: x [B, L, hidden], the 16 weights by name, optional `mask`, `dropProbs`, `dropAttention`, `dropFfn`.
// `train`: also return the context (int32 [1]) that the backward takes; else the layer runs without autograd.
kernel('TorchEncoderLayer', (inputs, b, { eps, heads, activation, train }) => {
  const opt = (name: string) => (inputs[name] ? b.h(inputs[name]) : null);
  const o = {
    eps, heads, activation: ACTIVATIONS[activation], train,
    // under autocast the GEMMs take bf16 inputs (float32 copies of bf16 inputs come from the registry)
    bf16: b.autocast,
    dnnlMinRows: b.device === 'cpu' && !b.autocast ? DNNL_MIN_ROWS : 0,
  };
  const weights = ENCODER_LAYER_WEIGHTS.map((n) => b.h(inputs[n]));
  const r = addon().encoderLayerForward(b.h(inputs.x), weights, opt('mask'), opt('dropProbs'), opt('dropAttention'), opt('dropFfn'), o);
  if (!train) return b.out(r as Handle, 'float32');
  const [y, context] = r as [Handle, Handle];
  return [b.out(y, 'float32'), b.out(context, 'int32')];
});

// [dx, ...the 16 weights' gradients]
kernel('TorchEncoderLayerGrad', ({ dy, context }, b) =>
  addon().encoderLayerBackward(b.h(context), b.h(dy)).map((h) => b.out(h, 'float32')),
);
