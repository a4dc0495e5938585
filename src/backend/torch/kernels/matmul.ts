/** Matrix products: BatchMatMul (batch dims broadcast, as ATen's matmul does) and _FusedMatMul. */
import * as tf from '@tensorflow/tfjs';
import { aten, Handle } from '../aten';
import type { TorchBackend } from '../backend';
import { kernel } from '../registry';
import { code, lowp, scoped, toDtype } from './util';

const matmul = aten('matmul');
const transpose = aten('transpose.int');
const add = aten('add.Tensor');

/** a·b with optional transposes; transposes are strided views, which BLAS consumes without a copy. */
function product(a: Handle, b: Handle, transposeA: boolean, transposeB: boolean, tmp: (h: Handle) => Handle): Handle {
  const ta = transposeA ? tmp(transpose(a, -1, -2)) : a;
  const tb = transposeB ? tmp(transpose(b, -1, -2)) : b;
  return matmul(ta, tb);
}

/** An operand as matmul takes it: bf16 under autocast; float64 for integers on CUDA (cuBLAS has no int GEMM; exact below 2⁵³). */
function operand(info: tf.TensorInfo, other: tf.TensorInfo, backend: TorchBackend, tmp: (h: Handle) => Handle): Handle {
  if (backend.device === 'cuda' && (info.dtype !== 'float32' || other.dtype !== 'float32')) return tmp(toDtype(backend.h(info), code('float64')));
  return lowp(info, backend, tmp);
}

kernel('BatchMatMul', ({ a, b }, backend, { transposeA, transposeB }) => {
  // ATen's matmul also takes vectors; TF.js's batchMatMul requires rank >= 2.
  tf.util.assert(a.shape.length >= 2 && b.shape.length >= 2, () => `Error in matMul: inputs must have rank >= 2, got ranks ${a.shape.length} and ${b.shape.length}.`);
  return scoped((tmp) => backend.out(product(operand(a, b, backend, tmp), operand(b, a, backend, tmp), transposeA, transposeB, tmp), tf.upcastType(a.dtype, b.dtype)));
});

const activations: Record<string, (x: Handle, backend: TorchBackend, alpha: tf.TensorInfo | undefined, leak: number, tmp: (h: Handle) => Handle) => Handle> = {
  linear: (x) => x,
  relu: (x) => aten('relu')(x),
  relu6: (x) => aten('clamp')(x, 0, 6),
  elu: (x) => aten('elu')(x),
  sigmoid: (x) => aten('sigmoid')(x),
  leakyrelu: (x, _b, _a, leak, tmp) => aten('where.self')(tmp(aten('gt.Scalar')(x, 0)), x, tmp(aten('mul.Scalar')(x, leak))),
  prelu: (x, b, alpha, _l, tmp) => aten('where.self')(tmp(aten('gt.Scalar')(x, 0)), x, tmp(aten('mul.Tensor')(x, b.h(alpha!)))),
};

kernel('_FusedMatMul', ({ a, b, bias, preluActivationWeights }, backend, { transposeA, transposeB, activation, leakyreluAlpha }) =>
  scoped((tmp) => {
    let y = product(operand(a, b, backend, tmp), operand(b, a, backend, tmp), transposeA, transposeB, tmp);
    if (bias) y = add(tmp(y), lowp(bias, backend, tmp));
    const act = activations[activation ?? 'linear'];
    if (!act) throw new Error(`_FusedMatMul: unknown activation ${activation}`);
    if (act !== activations.linear) y = act(tmp(y), backend, preluActivationWeights, leakyreluAlpha ?? 0.2, tmp);
    return backend.out(y, a.dtype);
  }),
);
