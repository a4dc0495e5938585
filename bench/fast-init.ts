/**
 * A quick weight sampler for benchmarks (initModel's `sample`): runs of 4096 values copied from random
 * offsets of a table of 2^20 true N(0, 1) values, scaled, instead of TF.js's per-value randomNormal.
 * initModel with TF.js's draws takes ~35 s on one core for the bge-m3 shape (568M values drawn in JS,
 * whatever the device); this takes a few seconds. Timing and memory do not depend on the values, and the
 * marginal distribution is the same.
 */
import * as tf from '@tensorflow/tfjs';
import type { NormalSampler } from '../src/model/m3';

const TABLE_BITS = 20;
/** Values are copied from the table in runs of this many, each from a random offset. */
const CHUNK = 4096;

function normalTable(seed: number): Float32Array {
  const t = new Float32Array(1 << TABLE_BITS);
  let s = seed >>> 0 || 1;
  const u = () => ((s = (s * 1664525 + 1013904223) >>> 0) + 0.5) / 4294967296;
  for (let i = 0; i < t.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const a = 2 * Math.PI * u();
    t[i] = r * Math.cos(a);
    t[i + 1] = r * Math.sin(a);
  }
  return t;
}

export function fastSampler(seed: number): NormalSampler {
  const unit = normalTable(seed + 1);
  let scaled = { std: 1, table: unit }; // the table times the last std asked for (one std per model)
  let x = (seed * 2654435761 + 12345) >>> 0 || 1;
  return (shape, std) => {
    if (scaled.std !== std) scaled = { std, table: unit.map((v) => v * std) };
    const { table } = scaled;
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i += CHUNK) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const at = (x >>> 0) % (table.length - CHUNK);
      data.set(table.subarray(at, at + Math.min(CHUNK, data.length - i)), i);
    }
    return tf.tensor(data, shape, 'float32');
  };
}
