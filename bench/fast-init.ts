/**
 * A quick random model for benchmarks: the parameters initModel makes (same names, shapes, zeros and
 * ones), but the normal draws are runs of 4096 values copied from random offsets of a table of 2^20
 * true N(0, std) values, instead of TF.js's per-value randomNormal. initModel takes ~35 s on one core for the bge-m3
 * shape (568M values drawn in JS, whatever the device); this takes a few seconds. Timing and memory do
 * not depend on the values, and the marginal distribution is the same.
 */
import * as tf from '@tensorflow/tfjs';
import { EncoderConfig } from '../src/model/config';
import { Params } from '../src/model/encoder';
import { M3Model } from '../src/model/m3';
import { ownedVariable } from '../src/model/variables';

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

export function fastInitModel(config: EncoderConfig, opts: { seed: number; heads?: boolean }): M3Model {
  const std = Number(config.raw.initializer_range ?? 0.02);
  const table = normalTable(opts.seed + 1).map((v) => v * std);
  let x = (opts.seed * 2654435761 + 12345) >>> 0 || 1;
  const normal = (shape: number[]) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i += CHUNK) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const at = (x >>> 0) % (table.length - CHUNK);
      data.set(table.subarray(at, at + Math.min(CHUNK, data.length - i)), i);
    }
    return ownedVariable(() => tf.tensor(data, shape, 'float32'));
  };
  const d = config.hidden;
  const params: Params = new Map();
  const dense = (p: string, out: number, inp: number) => {
    params.set(p + '.weight', normal([out, inp]));
    params.set(p + '.bias', ownedVariable(() => tf.zeros([out])));
  };
  const ln = (p: string) => {
    params.set(p + '.weight', ownedVariable(() => tf.ones([d])));
    params.set(p + '.bias', ownedVariable(() => tf.zeros([d])));
  };
  params.set('embeddings.word_embeddings.weight', normal([config.vocabSize, d]));
  params.set('embeddings.position_embeddings.weight', normal([config.maxPositions, d]));
  params.set('embeddings.token_type_embeddings.weight', normal([config.typeVocabSize, d]));
  ln('embeddings.LayerNorm');
  for (let i = 0; i < config.layers; i++) {
    const p = `encoder.layer.${i}.`;
    for (const m of ['query', 'key', 'value']) dense(p + 'attention.self.' + m, d, d);
    dense(p + 'attention.output.dense', d, d);
    ln(p + 'attention.output.LayerNorm');
    dense(p + 'intermediate.dense', config.intermediate, d);
    dense(p + 'output.dense', d, config.intermediate);
    ln(p + 'output.LayerNorm');
  }
  if (opts.heads) {
    dense('colbert_linear', d, d);
    dense('sparse_linear', 1, d);
  }
  return { config, params, tokenizer: null, source: '(fast random init)' };
}
