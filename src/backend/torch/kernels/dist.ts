/**
 * Collectives as kernels, so their results are ordinary TF.js tensors (src/backend/dist.ts wraps them with
 * their gradients). Each blocks until every rank has contributed, or fails after the group's timeout.
 */
import { addon } from '../addon';
import { kernel } from '../registry';
import { intConst } from './util';

// `inPlace`: the caller promises x is a temporary it will not read again (a gradient bucket), saving a copy.
kernel('TorchAllReduce', ({ x }, b, { timeoutMs, inPlace }) => b.out(addon().allReduce(b.h(x), timeoutMs, inPlace), x.dtype));

// [gathered, sizes]: sizes (int32 [world]) holds each rank's first dimension.
kernel('TorchAllGather', ({ x }, b, { timeoutMs }) => {
  const [gathered, sizes] = addon().allGather(b.h(x), timeoutMs);
  return [b.out(gathered, x.dtype), b.out(intConst(sizes, b), 'int32')];
});

kernel('TorchBroadcast', ({ x }, b, { root, timeoutMs }) => b.out(addon().broadcast(b.h(x), root, timeoutMs), x.dtype));
