/** Reductions. TF.js passes axes as a number, an array (possibly empty: reduce nothing) or null (all). */
import * as tf from '@tensorflow/tfjs';
import { addon } from '../addon';
import { aten, Handle } from '../aten';
import type { TorchBackend } from '../backend';
import { kernel, Attrs } from '../registry';
import { alias, axes, code, reshape, scoped, toDtype } from './util';

const sumDims = aten('sum.dim_IntList');
const meanDims = aten('mean.dim');
const amax = aten('amax');
const amin = aten('amin');
const permute = aten('permute');
const prodDim = aten('prod.dim_int');
const allDim = aten('all.dim');
const anyDim = aten('any.dim');

type Reducer = (x: Handle, dims: number[], keepDims: boolean) => Handle;

function reduction(name: string, reduce: Reducer, outDtype: (x: tf.DataType) => tf.DataType): void {
  kernel(name, ({ x }, b: TorchBackend, { axis, reductionIndices, keepDims }: Attrs) => {
    const dims = axes(name === 'Max' ? reductionIndices : axis, x.shape); // Max names its axes differently
    // An empty axis list reduces nothing; ATen would read it as "all dims".
    if (dims.length === 0) return b.out(alias(b.h(x)), outDtype(x.dtype));
    return b.out(reduce(b.h(x), dims, !!keepDims), outDtype(x.dtype));
  });
}

/**
 * For ATen reductions that take a single dim (prod, all, any): move the reduced axes last, flatten them
 * into one, reduce it, and restore the kept singleton dims when keepDims is set.
 */
function overOneDim(fn: (x: Handle, dim: number, keep: boolean) => Handle, shapeOf: (h: Handle) => number[]): Reducer {
  return (x, dims, keepDims) =>
    scoped((tmp) => {
      const shape = shapeOf(x);
      if (dims.length === 1) return fn(x, dims[0], keepDims);
      const kept = shape.map((_, i) => i).filter((i) => !dims.includes(i));
      const moved = tmp(permute(x, [...kept, ...dims]));
      const flat = tmp(reshape(moved, [...kept.map((i) => shape[i]), -1]));
      const reduced = fn(flat, kept.length, false);
      if (!keepDims) return reduced;
      return reshape(tmp(reduced), shape.map((d, i) => (dims.includes(i) ? 1 : d)));
    });
}

const shapeOfHandle = (h: Handle): number[] => addon().meta(h).slice(1);
const sumOut = (d: tf.DataType) => tf.upcastType(d, 'int32'); // bool/int32 sum to int32, as in TF.js

reduction('Sum', (x, d, k) => sumDims(x, d, k), sumOut);
reduction('Max', (x, d, k) => amax(x, d, k), (d) => d);
reduction('Min', (x, d, k) => amin(x, d, k), (d) => d);
reduction('Prod', overOneDim((x, d, k) => prodDim(x, d, k), shapeOfHandle), sumOut);
reduction('All', overOneDim((x, d, k) => allDim(x, d, k), shapeOfHandle), () => 'bool');
reduction('Any', overOneDim((x, d, k) => anyDim(x, d, k), shapeOfHandle), () => 'bool');
// TF.js means are float32 whatever the input; ATen's mean refuses integer input, so cast first.
reduction('Mean', (x, d, k) => scoped((tmp) => meanDims(tmp(toDtype(x, code('float32'))), d, k)), () => 'float32');

const argmax = aten('argmax');
const argmin = aten('argmin');
const isnan = aten('isnan');
const maskedFill = aten('masked_fill.Scalar');
for (const [name, fn, nanAs] of [['ArgMax', argmax, -Infinity], ['ArgMin', argmin, Infinity]] as const) {
  kernel(name, ({ x }, b, { axis }) =>
    scoped((tmp) => {
      const dim = axes(axis, x.shape)[0];
      let h = b.h(x);
      // TF.js skips NaNs where ATen would pick them; ATen has no bool argmax.
      if (x.dtype === 'float32') h = tmp(maskedFill(h, tmp(isnan(h)), nanAs));
      else if (x.dtype === 'bool') h = tmp(toDtype(h, code('int32')));
      return b.out(fn(h, dim, false), 'int32'); // ATen answers int64
    }),
  );
}
