/**
 * Elementwise kernels: unary math, binary arithmetic with broadcasting (ATen broadcasts like TF.js),
 * comparisons and logic. Output dtypes follow TF.js's cpu backend, not ATen's type promotion.
 */
import * as tf from '@tensorflow/tfjs';
import { aten, Handle } from '../aten';
import { kernel } from '../registry';
import { scoped } from './util';

// ---- unary: TF.js kernel -> ATen op; the result keeps x's dtype (cpu semantics) unless noted ----------
const unary: Record<string, string> = {
  Abs: 'abs', Acos: 'acos', Acosh: 'acosh', Asin: 'asin', Asinh: 'asinh', Atan: 'atan', Atanh: 'atanh',
  Ceil: 'ceil', Cos: 'cos', Cosh: 'cosh', Elu: 'elu', Erf: 'erf', Expm1: 'expm1', Floor: 'floor', Log: 'log',
  Log1p: 'log1p', Neg: 'neg', Reciprocal: 'reciprocal', Relu: 'relu', Round: 'round', Rsqrt: 'rsqrt',
  Selu: 'selu', Sigmoid: 'sigmoid', Sign: 'sign', Sin: 'sin', Sinh: 'sinh', Softplus: 'softplus',
  Sqrt: 'sqrt', Square: 'square', Tan: 'tan', Tanh: 'tanh',
};
for (const [name, op] of Object.entries(unary)) {
  const fn = aten(op);
  kernel(name, ({ x }, b) => b.out(fn(b.h(x)), x.dtype));
}
const exp = aten('exp');
kernel('Exp', ({ x }, b) => b.out(exp(b.h(x)), 'float32')); // the one unary cpu kernel that always yields float32

const isnan = aten('isnan');
for (const [name, op] of [['IsNan', 'isnan'], ['IsInf', 'isinf'], ['IsFinite', 'isfinite'], ['LogicalNot', 'logical_not']]) {
  const fn = aten(op);
  kernel(name, ({ x }, b) => b.out(fn(b.h(x)), 'bool'));
}

const clamp = aten('clamp');
kernel('Relu6', ({ x }, b) => b.out(clamp(b.h(x), 0, 6), x.dtype));
kernel('ClipByValue', ({ x }, b, { clipValueMin, clipValueMax }) => b.out(clamp(b.h(x), clipValueMin, clipValueMax), x.dtype));

const gtScalar = aten('gt.Scalar');
const whereSelf = aten('where.self');
const whereScalar = aten('where.Scalar');
const mulTensor = aten('mul.Tensor');
const mulScalar = aten('mul.Scalar');
kernel('LeakyRelu', ({ x }, b, { alpha }) =>
  scoped((tmp) => {
    const xh = b.h(x);
    return b.out(whereSelf(tmp(gtScalar(xh, 0)), xh, tmp(mulScalar(xh, alpha))), 'float32'); // float even for int32 x, as TF.js
  }),
);
kernel('Prelu', ({ x, alpha }, b) =>
  scoped((tmp) => {
    const xh = b.h(x);
    return b.out(whereSelf(tmp(gtScalar(xh, 0)), xh, tmp(mulTensor(xh, b.h(alpha)))), 'float32');
  }),
);
// step(x) = x > 0 ? 1 : alpha, and NaN stays NaN (relu's gradient is dy·step(x)).
kernel('Step', ({ x }, b, { alpha }) =>
  scoped((tmp) => {
    const xh = b.h(x);
    const stepped = tmp(whereScalar(tmp(gtScalar(xh, 0)), 1, alpha));
    return b.out(whereSelf(tmp(isnan(xh)), xh, stepped), x.dtype);
  }),
);
const sub = aten('sub.Tensor');
kernel('EluGrad', ({ dy, y }, b) =>
  scoped((tmp) => {
    const yh = b.h(y);
    const dyh = b.h(dy);
    // elu'(x) = 1 for x > 0, else y + 1 (y = e^x - 1)
    const below = tmp(mulTensor(dyh, tmp(aten('add.Scalar')(yh, 1))));
    return b.out(whereSelf(tmp(gtScalar(yh, 0)), dyh, below), dy.dtype);
  }),
);

// ---- binary ---------------------------------------------------------------------------------------------
type Binary = (a: Handle, b: Handle) => Handle;
function binary(name: string, fn: Binary, dtype: (a: tf.DataType, b: tf.DataType) => tf.DataType): void {
  kernel(name, ({ a, b: bb }, backend) => backend.out(fn(backend.h(a), backend.h(bb)), dtype(a.dtype, bb.dtype)));
}
const upcast = (a: tf.DataType, b: tf.DataType) => tf.upcastType(a, b);
const bool = () => 'bool' as const;

binary('Add', aten('add.Tensor'), upcast);
binary('Sub', sub, upcast);
binary('Multiply', mulTensor, upcast);
binary('RealDiv', aten('div.Tensor'), () => 'float32');
const divMode = aten('div.Tensor_mode');
binary('FloorDiv', (a, b) => divMode(a, b, 'floor'), () => 'int32'); // TF.js's floorDiv always yields int32
binary('Maximum', aten('maximum'), upcast);
binary('Minimum', aten('minimum'), upcast);
binary('Mod', aten('remainder.Tensor'), upcast); // TF.js mod is floor-mod: the sign follows the divisor
binary('Pow', aten('pow.Tensor_Tensor'), upcast);
binary('Atan2', aten('atan2'), upcast);
binary('BitwiseAnd', aten('bitwise_and.Tensor'), upcast);
binary('SquaredDifference', (a, b) => scoped((tmp) => {
  const d = tmp(sub(a, b));
  return mulTensor(d, d);
}), upcast);
binary('Equal', aten('eq.Tensor'), bool);
binary('NotEqual', aten('ne.Tensor'), bool);
binary('Greater', aten('gt.Tensor'), bool);
binary('GreaterEqual', aten('ge.Tensor'), bool);
binary('Less', aten('lt.Tensor'), bool);
binary('LessEqual', aten('le.Tensor'), bool);
binary('LogicalAnd', aten('logical_and'), bool);
binary('LogicalOr', aten('logical_or'), bool);

const add = aten('add.Tensor');
const alias = aten('alias');
kernel('AddN', (inputs, b) => {
  const xs = Object.values(inputs) as tf.TensorInfo[];
  if (xs.length === 1) return b.out(alias(b.h(xs[0])), xs[0].dtype);
  return scoped((tmp) => {
    let acc = add(b.h(xs[0]), b.h(xs[1]));
    for (let i = 2; i < xs.length; i++) acc = add(tmp(acc), b.h(xs[i]));
    return b.out(acc, xs[0].dtype);
  });
});
