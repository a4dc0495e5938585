/** Softmax, top-k, cumulative sums/products, select, einsum and diag. */
import * as tf from '@tensorflow/tfjs';
import { aten, Handle } from '../aten';
import { kernel } from '../registry';
import { axes, reshape, scoped, sizeOf } from './util';

const softmax = aten('_softmax');
const logSoftmax = aten('_log_softmax');
kernel('Softmax', ({ logits }, b, { dim }) => b.out(softmax(b.h(logits), dim ?? -1, false), logits.dtype));
kernel('LogSoftmax', ({ logits }, b, { axis }) => b.out(logSoftmax(b.h(logits), axis ?? -1, false), logits.dtype));

const sortStable = aten('sort.stable');
const sliceOp = aten('slice.Tensor');
kernel('TopK', ({ x }, b, { k }) =>
  scoped((tmp) => {
    // TF.js returns the k largest, descending, ties in index order. ATen's topk does not order ties, so
    // this is a stable descending sort cut to k.
    const [values, indices] = sortStable(b.h(x), true, -1, true) as Handle[];
    tmp(values);
    tmp(indices);
    return [b.out(sliceOp(values, -1, 0, k, 1), x.dtype), b.out(sliceOp(indices, -1, 0, k, 1), 'int32')];
  }),
);

const cumsum = aten('cumsum');
const cumprod = aten('cumprod');
const flip = aten('flip');
const constantPad = aten('constant_pad_nd');
for (const [name, op, identity] of [['Cumsum', cumsum, 0], ['Cumprod', cumprod, 1]] as const) {
  kernel(name, ({ x }, b, { axis, exclusive, reverse }) =>
    scoped((tmp) => {
      const dim = axes(axis, x.shape)[0];
      let h = b.h(x);
      if (reverse) h = tmp(flip(h, [dim]));
      if (exclusive) {
        // shift by one along dim: prepend the identity element, drop the last
        const pad = new Array(2 * (x.shape.length - dim)).fill(0);
        pad[pad.length - 2] = 1;
        h = tmp(sliceOp(tmp(constantPad(h, pad, identity)), dim, 0, x.shape[dim], 1));
      }
      const sumDtype = tf.upcastType(x.dtype, 'int32');
      let r = op(h, dim, null);
      if (reverse) r = flip(tmp(r), [dim]);
      return b.out(r, name === 'Cumsum' ? sumDtype : x.dtype);
    }),
  );
}

const whereSelf = aten('where.self');
kernel('Select', ({ condition, t, e }, b) =>
  scoped((tmp) => {
    let cond = b.h(condition);
    // TF.js lets a rank-1 condition pick whole rows of higher-rank t/e.
    if (condition.shape.length === 1 && t.shape.length > 1) cond = tmp(reshape(cond, [condition.shape[0], ...t.shape.slice(1).map(() => 1)]));
    return b.out(whereSelf(cond, b.h(t), b.h(e)), tf.upcastType(t.dtype, e.dtype));
  }),
);

const einsum = aten('einsum');
kernel('Einsum', (inputs, b, { equation }) => {
  const xs = Object.values(inputs) as tf.TensorInfo[];
  // TF.js's validation (and its limits: no repeated subscripts, at most two operands) for the same errors.
  const { allDims, summedDims, idDims } = tf.backend_util.decodeEinsumEquation(equation, xs.length);
  tf.backend_util.checkEinsumDimSizes(allDims.length, idDims, xs as tf.Tensor[]);
  tf.backend_util.getEinsumComputePath(summedDims, idDims);
  return b.out(einsum(equation, xs.map((x) => b.h(x))), xs[0].dtype);
});

const diag = aten('diag');
kernel('Diag', ({ x }, b) =>
  scoped((tmp) => {
    // TF.js's diag of any rank: shape x.shape ++ x.shape, the flattened 2-D diag in that layout.
    const flat = tmp(reshape(b.h(x), [sizeOf(x.shape)]));
    return b.out(reshape(tmp(diag(flat, 0)), [...x.shape, ...x.shape]), x.dtype);
  }),
);
