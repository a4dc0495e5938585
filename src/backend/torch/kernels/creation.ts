/** Kernels that create tensors from attributes: fill, ranges, one-hot, zeros/ones like. */
import { aten } from '../aten';
import { kernel, runOnCpu } from '../registry';
import { code, scoped } from './util';

const full = aten('full');
const arange = aten('arange');
const mulScalar = aten('mul.Scalar');
const addScalar = aten('add.Scalar');
const linspace = aten('linspace');
const eqTensor = aten('eq.Tensor');
const unsqueeze = aten('unsqueeze');
const maskedFill = aten('masked_fill.Scalar');
const zerosLike = aten('zeros_like');
const onesLike = aten('ones_like');

kernel('Fill', (inputs, b, attrs) => {
  const { shape, value, dtype } = attrs;
  if (dtype === 'string' || typeof value === 'string') return runOnCpu('Fill', inputs, b, attrs);
  return b.out(full(shape, value, code(dtype ?? 'float32'), null, b.device), dtype ?? 'float32');
});

kernel('ZerosLike', ({ x }, b) => b.out(zerosLike(b.h(x)), x.dtype));
kernel('OnesLike', ({ x }, b) => b.out(onesLike(b.h(x)), x.dtype));

// Same element count and step rules as the cpu backend's rangeImpl (an empty range when the step points
// away from stop, and a step of 1 flips sign for a decreasing range); values are start + i·step
// computed in float64, then cast.
kernel('Range', (_inputs, b, { start, stop, step, dtype }) => {
  const empty = start === stop || (start < stop && step < 0) || (stop < start && step > 1);
  const count = empty ? 0 : Math.abs(Math.ceil((stop - start) / step));
  const stride = stop < start && step === 1 ? -1 : step;
  return scoped((tmp) => {
    const i = tmp(arange(count, code('float64'), null, b.device));
    return b.out(addScalar(tmp(mulScalar(i, stride)), start), dtype ?? 'float32');
  });
});

kernel('LinSpace', (_inputs, b, { start, stop, num }) => b.out(linspace(start, stop, num, code('float32'), null, b.device), 'float32'));

// one_hot in ATen wants int64 indices in range; TF.js gives an all-off row for out-of-range indices,
// which comparing against arange(depth) reproduces.
kernel('OneHot', ({ indices }, b, { depth, onValue, offValue, dtype }) =>
  scoped((tmp) => {
    const classes = tmp(arange(depth, code('int32'), null, b.device));
    const hit = tmp(eqTensor(tmp(unsqueeze(b.h(indices), -1)), classes));
    const off = tmp(full([...indices.shape, depth], offValue, code(dtype), null, b.device));
    return b.out(maskedFill(off, hit, onValue), dtype);
  }),
);
