/**
 * Layout kernels: reshape, transpose, slicing, concatenation, padding, tiling, casts. Many are ATen views
 * (no copy); that is safe because TF.js tensors are immutable and no kernel writes in place.
 */
import * as tf from '@tensorflow/tfjs';
import { aten, Handle } from '../aten';
import { kernel, runOnCpu } from '../registry';
import { alias, axes, code, reshape, scoped, toDtype } from './util';

const permute = aten('permute');
const unsqueeze = aten('unsqueeze');
const sliceOp = aten('slice.Tensor');
const cat = aten('cat');
const stack = aten('stack');
const unbind = aten('unbind.int');
const splitWithSizes = aten('split_with_sizes');
const constantPad = aten('constant_pad_nd');
const repeat = aten('repeat');
const flip = aten('flip');
const indexSelect = aten('index_select');
const arange = aten('arange.start_step');

kernel('Reshape', ({ x }, b, { shape }) => b.out(reshape(b.h(x), tf.util.inferFromImplicitShape(shape, tf.util.sizeFromShape(x.shape))), x.dtype));
// Identity shares the dataId, as the cpu backend does: tf.clone and customGrad's saved tensors then cost
// nothing, and TF.js's leak check (which counts data ids) sees no new data.
kernel('Identity', ({ x }, b) => {
  b.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
});
kernel('Transpose', ({ x }, b, { perm }) => b.out(permute(b.h(x), perm), x.dtype));
kernel('ExpandDims', ({ input }, b, { dim }) => {
  const rank = input.shape.length;
  tf.util.assert(-(rank + 1) <= dim && dim <= rank, () => `Axis must be in the interval [${-(rank + 1)}, ${rank}]`);
  return b.out(unsqueeze(b.h(input), dim < 0 ? dim + rank + 1 : dim), input.dtype);
});
kernel('Reverse', ({ x }, b, { dims }) => {
  const d = axes(dims, x.shape);
  return b.out(d.length ? flip(b.h(x), d) : alias(b.h(x)), x.dtype);
});
kernel('Tile', ({ x }, b, { reps }) => b.out(repeat(b.h(x), reps), x.dtype));

kernel('Cast', (inputs, b, attrs) => {
  const { x } = inputs;
  const { dtype } = attrs as { dtype: tf.DataType };
  if (dtype === 'string' || dtype === 'complex64' || x.dtype === 'complex64') return runOnCpu('Cast', inputs, b, attrs);
  if (dtype === x.dtype) {
    b.incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype };
  }
  return b.out(toDtype(b.h(x), code(dtype)), dtype);
});

kernel('Slice', ({ x }, b, { begin, size }) => {
  const [start, count] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size);
  tf.slice_util.assertParamsValid(x as tf.Tensor, start, count);
  return scoped((tmp) => {
    let h = b.h(x);
    let owned = false;
    for (let d = 0; d < x.shape.length; d++) {
      if (start[d] === 0 && count[d] === x.shape[d]) continue;
      const next = sliceOp(h, d, start[d], start[d] + count[d], 1);
      if (owned) tmp(h);
      h = next;
      owned = true;
    }
    return b.out(owned ? h : alias(h), x.dtype);
  });
});

kernel('StridedSlice', ({ x }, b, attrs) => {
  const { begin, end, strides, beginMask, endMask, ellipsisMask, newAxisMask, shrinkAxisMask } = attrs;
  const info = tf.slice_util.sliceInfo(x.shape, begin, end, strides, beginMask, endMask, ellipsisMask, newAxisMask, shrinkAxisMask);
  // The result element at position i is x[begin + i·stride] per dimension; then the result takes the final
  // shape (new axes inserted, shrunk axes removed).
  return scoped((tmp) => {
    // Every intermediate (each per-dim slice) is temporary: the reshape below makes the result handle.
    let h = b.h(x);
    if (!info.isIdentity) {
      // begin/end/strides are per dimension of x here (new and shrunk axes only show in finalShape).
      const sizes = tf.slice_util.computeOutShape(info.begin, info.end, info.strides);
      for (let d = 0; d < x.shape.length; d++) {
        const n = Math.max(0, sizes[d]);
        const start = info.begin[d];
        const step = info.strides[d];
        if (n === x.shape[d] && start === 0 && step === 1) continue;
        if (n === 0) h = tmp(sliceOp(h, d, 0, 0, 1));
        else if (step > 0) h = tmp(sliceOp(h, d, start, start + (n - 1) * step + 1, step));
        else h = tmp(indexSelect(h, d, tmp(arange(start, start + n * step, step, code('int32'), null, b.device))));
      }
    }
    return b.out(reshape(h, info.finalShape), x.dtype);
  });
});

function tensorList(inputs: tf.NamedTensorInfoMap): tf.TensorInfo[] {
  return Object.values(inputs) as tf.TensorInfo[];
}

kernel('Concat', (inputs, b, { axis }) => {
  const xs = tensorList(inputs);
  const dim = axes(axis, xs[0].shape)[0];
  const dtype = xs.map((t) => t.dtype).reduce((p, c) => tf.upcastType(p, c));
  return scoped((tmp) => {
    // ATen's cat wants one dtype; TF.js may hand mixed int32/float32.
    const hs = xs.map((t) => (t.dtype === dtype ? b.h(t) : tmp(toDtype(b.h(t), code(dtype)))));
    return b.out(hs.length === 1 ? alias(hs[0]) : cat(hs, dim), dtype);
  });
});

kernel('Pack', (inputs, b, { axis }) => {
  const xs = tensorList(inputs);
  const dim = axis < 0 ? axis + xs[0].shape.length + 1 : axis;
  for (const t of xs) {
    tf.util.assertShapesMatch(xs[0].shape, t.shape, 'All tensors passed to stack must have matching shapes');
    tf.util.assert(t.dtype === xs[0].dtype, () => 'All tensors passed to stack must have matching dtypes');
  }
  return b.out(stack(xs.map((t) => b.h(t)), dim), xs[0].dtype);
});

kernel('Unpack', ({ value }, b, { axis }) => {
  const dim = axes(axis, value.shape)[0];
  return (unbind(b.h(value), dim) as Handle[]).map((h) => b.out(h, value.dtype));
});

kernel('SplitV', ({ x }, b, { numOrSizeSplits, axis }) => {
  const dim = axes(axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, dim);
  return (splitWithSizes(b.h(x), sizes, dim) as Handle[]).map((h) => b.out(h, x.dtype));
});

kernel('PadV2', ({ x }, b, { paddings, constantValue }) => {
  // ATen lists padding from the last dimension backwards: [lastLo, lastHi, prevLo, prevHi, ...].
  const pad: number[] = [];
  for (let d = paddings.length - 1; d >= 0; d--) pad.push(paddings[d][0], paddings[d][1]);
  return b.out(constantPad(b.h(x), pad, constantValue ?? 0), x.dtype);
});

