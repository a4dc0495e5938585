/**
 * Gather/scatter kernels. ND indices are flattened to row numbers (Σ index_i · stride_i over the indexed
 * leading dims) so that every case becomes one index_select or index_add on a 2-D view.
 */
import * as tf from '@tensorflow/tfjs';
import { aten, Handle } from '../aten';
import type { TorchBackend } from '../backend';
import { kernel, runOnCpu } from '../registry';
import { code, intConst, reshape, scoped, sizeOf } from './util';

const indexSelect = aten('index_select');
const indexAdd = aten('index_add');
const indexAddInplace = aten('index_add_');
const indexCopy = aten('index_copy');
const zeros = aten('zeros');
const mul = aten('mul.Tensor');
const sumDims = aten('sum.dim_IntList');

kernel('GatherV2', (inputs, b, attrs) => {
  const { x, indices } = inputs;
  const axis = tf.util.parseAxisParam(attrs.axis, x.shape)[0];
  const batchDims = attrs.batchDims ?? 0;
  if (batchDims !== 0) return runOnCpu('GatherV2', inputs, b, attrs); // not used by the framework
  const outShape = [...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)];
  return scoped((tmp) => {
    const flat = tmp(reshape(b.h(indices), [-1]));
    return b.out(reshape(tmp(indexSelect(b.h(x), axis, flat)), outShape), x.dtype);
  });
});

/** Row numbers of ND indices [..., k] into a tensor whose first k dims are `lead`, as a 1-D int64 handle. */
function rowNumbers(indices: tf.TensorInfo, lead: number[], b: TorchBackend, tmp: (h: Handle) => Handle): Handle {
  const strides = lead.map((_, i) => sizeOf(lead.slice(i + 1)));
  const scaled = tmp(mul(b.h(indices), tmp(intConst(strides, b))));
  return tmp(reshape(tmp(sumDims(scaled, [-1], false)), [-1]));
}

kernel('GatherNd', (inputs, b) => {
  const { params, indices } = inputs;
  const k = indices.shape[indices.shape.length - 1];
  if (k === 0 || k > params.shape.length) return runOnCpu('GatherNd', inputs, b, {});
  const rest = params.shape.slice(k);
  return scoped((tmp) => {
    const rows = rowNumbers(indices, params.shape.slice(0, k), b, tmp);
    const table = tmp(reshape(b.h(params), [sizeOf(params.shape.slice(0, k)), ...rest]));
    return b.out(reshape(tmp(indexSelect(table, 0, rows)), [...indices.shape.slice(0, -1), ...rest]), params.dtype);
  });
});

kernel('ScatterNd', (inputs, b, attrs) => {
  const { indices, updates } = inputs;
  const shape: number[] = attrs.shape;
  const k = indices.shape[indices.shape.length - 1];
  if (k === 0 || k > shape.length) return runOnCpu('ScatterNd', inputs, b, attrs);
  const rest = shape.slice(k);
  return scoped((tmp) => {
    const rows = rowNumbers(indices, shape.slice(0, k), b, tmp);
    const table = tmp(zeros([sizeOf(shape.slice(0, k)), ...rest], code(updates.dtype), null, b.device));
    const src = tmp(reshape(b.h(updates), [-1, ...rest]));
    return b.out(reshape(tmp(indexAdd(table, 0, rows, src)), shape), updates.dtype); // duplicates add up
  });
});

kernel('TensorScatterUpdate', (inputs, b) => {
  const { tensor, indices, updates } = inputs;
  const k = indices.shape[indices.shape.length - 1];
  if (k === 0 || k > tensor.shape.length) return runOnCpu('TensorScatterUpdate', inputs, b, {});
  const rest = tensor.shape.slice(k);
  return scoped((tmp) => {
    const rows = rowNumbers(indices, tensor.shape.slice(0, k), b, tmp);
    const table = tmp(reshape(b.h(tensor), [sizeOf(tensor.shape.slice(0, k)), ...rest]));
    const src = tmp(reshape(b.h(updates), [-1, ...rest]));
    return b.out(reshape(tmp(indexCopy(table, 0, rows, src)), tensor.shape), tensor.dtype);
  });
});

const geScalar = aten('ge.Scalar');
const ltScalar = aten('lt.Scalar');
const logicalAnd = aten('logical_and');
const whereScalarOther = aten('where.ScalarOther');
const narrow = aten('narrow');
kernel('UnsortedSegmentSum', ({ x, segmentIds }, b, { numSegments }) => {
  const rest = x.shape.slice(segmentIds.shape.length);
  return scoped((tmp) => {
    // TF.js drops rows whose id is outside [0, numSegments); they go to an extra row that is cut off.
    const raw = tmp(reshape(b.h(segmentIds), [-1]));
    const valid = tmp(logicalAnd(tmp(geScalar(raw, 0)), tmp(ltScalar(raw, numSegments))));
    const ids = tmp(whereScalarOther(valid, raw, numSegments));
    const table = tmp(zeros([numSegments + 1, ...rest], code(x.dtype), null, b.device));
    const src = tmp(reshape(b.h(x), [-1, ...rest]));
    // in place: the table is ours, and a copy would double the peak (2 GB for bge-m3's embedding gradient)
    tmp(indexAddInplace(table, 0, ids, src));
    return b.out(narrow(table, 0, 0, numSegments), x.dtype);
  });
});
