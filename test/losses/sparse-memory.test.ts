/**
 * The sparse score at XLM-R scale (V = 250,002, B = 8, G = 8, L = 512) with its gradient, within a fixed
 * memory bound. The reference's [B·G, L, V] scatter would be 64·512·250,002 floats (≈ 33 GB) and even one
 * pooled [B·G, V] matrix is 64 MB; the bound below is a quarter of that matrix, for forward and backward.
 */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';
import { sparseScores } from '../../src/losses/sparse-score';
import { hostSparseScores, hostSparseVectors, randomTokens, rng, worstRatio } from './helpers';

const V = 250_002;
const B = 8;
const G = 8;
const L = 512;
const SPECIAL = new Set([0, 1, 2, 3]);
const PEAK_TENSOR_BYTES_BOUND = 16 * 1024 * 1024;
// Host-side bound: wasm's heap only grows, so this covers everything the call allocated anywhere.
const RSS_GROWTH_BOUND = 256 * 1024 * 1024;

test(`sparse score at V=${V}, B=${B}, G=${G}, L=${L} stays within ${PEAK_TENSOR_BYTES_BOUND / 2 ** 20} MiB of tensors`, async () => {
  await useBackend('wasm');
  const queries = randomTokens({ batch: B, length: L, vocab: V, minLength: 64, seed: 11 });
  const passages = randomTokens({ batch: B * G, length: L, vocab: V, minLength: 256, seed: 12 });
  for (const id of [...queries.inputIds, ...passages.inputIds]) expect(id).toBeLessThan(V);
  const r = rng(13);
  const qw = Float32Array.from({ length: B * L }, () => r() * 2);
  const pw = Float32Array.from({ length: B * G * L }, () => r() * 2);
  const qWeights = tf.tensor2d(qw, [B, L]);
  const pWeights = tf.tensor2d(pw, [B * G, L]);
  const upstream = tf.tensor2d(Float32Array.from({ length: B * B * G }, () => r() - 0.5), [B, B * G]);

  const rssBefore = process.memoryUsage().rss;
  const bytesBefore = tf.memory().numBytes;
  let scores!: Float32Array;
  let gq!: Float32Array;
  let gp!: Float32Array;
  const profile = await tf.profile(() => {
    const s = sparseScores(qWeights, queries, pWeights, passages, { specialTokenIds: SPECIAL });
    scores = s.dataSync() as Float32Array;
    s.dispose();
    // gradient of Σ upstream·s, so every score's gradient path is exercised with a distinct weight
    const [a, b] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
      tf.sum(tf.mul(sparseScores(x as tf.Tensor2D, queries, y as tf.Tensor2D, passages, { specialTokenIds: SPECIAL }), upstream)))([qWeights, pWeights]);
    gq = a.dataSync() as Float32Array;
    gp = b.dataSync() as Float32Array;
    tf.dispose([a, b]);
  });
  const peakTensorBytes = profile.peakBytes - bytesBefore;
  const rssGrowth = process.memoryUsage().rss - rssBefore;
  // Reported so the measured numbers are visible in the test log.
  process.stdout.write(`sparse V=${V} B=${B} G=${G} L=${L}: peak tensor bytes ${(peakTensorBytes / 2 ** 20).toFixed(2)} MiB, ` +
    `rss growth ${(rssGrowth / 2 ** 20).toFixed(1)} MiB, kernels ${profile.kernels.length}\n`);
  expect(peakTensorBytes).toBeLessThan(PEAK_TENSOR_BYTES_BOUND);
  expect(rssGrowth).toBeLessThan(RSS_GROWTH_BOUND);
  expect(tf.memory().numBytes).toBe(bytesBefore);

  // Values: the scatter-max-dot definition, computed on the host with id → max-weight maps.
  const qv = hostSparseVectors(qw, queries, SPECIAL);
  const pv = hostSparseVectors(pw, passages, SPECIAL);
  const want = hostSparseScores(qv, pv);
  expect(want.some((x) => x > 0)).toBe(true);
  expect(worstRatio(scores, want, 1e-5, 1e-5)).toBeLessThanOrEqual(1);

  // Gradients: only each (row, id)'s arg-max position receives Σ over the other side of upstream·weight.
  const up = upstream.dataSync();
  const wantGq = new Float64Array(B * L);
  const wantGp = new Float64Array(B * G * L);
  qv.forEach((qm, i) => pv.forEach((pm, j) => {
    for (const [id, q] of qm) {
      const p = pm.get(id);
      if (!p) continue;
      const u = up[i * B * G + j];
      wantGq[q.pos] += u * p.w;
      wantGp[p.pos] += u * q.w;
    }
  }));
  expect(worstRatio(gq, wantGq, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
  expect(worstRatio(gp, wantGp, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
  tf.dispose([qWeights, pWeights, upstream]);
});
