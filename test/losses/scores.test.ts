/**
 * The three score functions against their FlagEmbedding definitions, on every backend: sparse against the
 * scatter-max-dot over an explicit vocabulary, ColBERT against the plain max-sim formula, chunked against
 * unchunked, own-group scoring against the own-group slice of the full matrix.
 */
import * as tf from '@tensorflow/tfjs';
import { colbertScores } from '../../src/losses/colbert-score';
import { denseScores } from '../../src/losses/dense-score';
import { ownGroupScores } from '../../src/losses/layout';
import { sparseScores } from '../../src/losses/sparse-score';
import { colbertVectors, denseEmbedding, sparseTokenWeights } from '../../src/model/heads';
import { expectAllClose, randomNormal, randomTokens, rng, testBackends } from './helpers';

const SPECIAL = [0, 1, 2, 3];

/** The reference definition with a vocabulary axis: scatter → max over L → zero specials → dot. */
function scatterMaxDot(qw: tf.Tensor2D, qIds: Int32Array, pw: tf.Tensor2D, pIds: Int32Array, vocab: number, tau: number): tf.Tensor2D {
  const pool = (w: tf.Tensor2D, ids: Int32Array) => {
    const [b, l] = w.shape;
    const oneHot = tf.cast(tf.oneHot(tf.tensor2d(ids, [b, l], 'int32'), vocab), 'float32'); // [B, L, V]
    const keep = tf.tensor1d(Float32Array.from({ length: vocab }, (_, v) => (SPECIAL.includes(v) ? 0 : 1)));
    return tf.mul(tf.max(tf.mul(oneHot, tf.expandDims(w, 2)), 1), keep) as tf.Tensor2D;
  };
  return tf.div(tf.matMul(pool(qw, qIds), pool(pw, pIds), false, true), tau) as tf.Tensor2D;
}

/** ColBERT straight from the formula: token sims [Bq, Lq', Bp, Lp'], max over j, sum over i, / n_q. */
function naiveColbert(q: tf.Tensor3D, p: tf.Tensor3D, qMask: tf.Tensor2D, tau: number): tf.Tensor2D {
  const [bq, lq, d] = q.shape;
  const [bp, lp] = p.shape;
  const sims = tf.reshape(tf.matMul(tf.reshape(q, [bq * lq, d]) as tf.Tensor2D, tf.reshape(p, [bp * lp, d]) as tf.Tensor2D, false, true), [bq, lq, bp, lp]);
  const n = tf.sum(tf.slice(tf.cast(qMask, 'float32'), [0, 1], [bq, lq]), 1, true);
  return tf.div(tf.div(tf.sum(tf.max(sims, 3), 1), n), tau) as tf.Tensor2D;
}

describe('scores, on every backend', () => {
  let backends: string[];
  beforeAll(async () => {
    backends = await testBackends();
  });
  const onEach = async (fn: () => void) => {
    for (const b of backends) {
      await tf.setBackend(b);
      const before = tf.memory().numTensors;
      try {
        tf.tidy(fn);
      } catch (e) {
        throw new Error(`[${b}] ${(e as Error).message}`);
      }
      expect(tf.memory().numTensors).toBe(before);
    }
  };

  test('sparse score equals the scatter-max-dot, values and gradients (repeats, specials, padding)', async () => {
    const vocab = 40; // small, so ids repeat inside and across rows
    const q = randomTokens({ batch: 3, length: 9, vocab, minLength: 4, seed: 1 });
    const p = randomTokens({ batch: 6, length: 11, vocab, minLength: 4, seed: 2 });
    const r = rng(3);
    // strictly positive weights at real tokens (ties only among the zeros of padding, which never count)
    const qw = tf.tensor2d(Float32Array.from(q.attentionMask, (m) => m * (0.1 + r())), [3, 9]);
    const pw = tf.tensor2d(Float32Array.from(p.attentionMask, (m) => m * (0.1 + r())), [6, 11]);
    const up = randomNormal([3, 6], 4);
    await onEach(() => {
      const f = (a: tf.Tensor, b: tf.Tensor) => sparseScores(a as tf.Tensor2D, q, b as tf.Tensor2D, p, { specialTokenIds: SPECIAL, temperature: 0.05 });
      const ref = (a: tf.Tensor, b: tf.Tensor) => scatterMaxDot(a as tf.Tensor2D, q.inputIds, b as tf.Tensor2D, p.inputIds, vocab, 0.05);
      expectAllClose(f(qw, pw), ref(qw, pw), 1e-5, 1e-5);
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a, b), up)))([qw, pw]);
      const gRef = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(ref(a, b), up)))([qw, pw]);
      expectAllClose(g[0], gRef[0], 1e-5, 1e-5);
      expectAllClose(g[1], gRef[1], 1e-5, 1e-5);
    });
  });

  test('sparse score of a long run of one id sends the gradient to its arg-max position only', async () => {
    // 13 copies of id 7 (more than one doubling step), the max in the middle, plus one tie after it.
    const ids = Int32Array.from([0, ...Array(13).fill(7), 2]);
    const w = Float32Array.from([0.3, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.2, 0.1, 0.9, 0.3, 0.2, 0.1, 0.4, 0.6]);
    const t = { inputIds: ids, attentionMask: new Int32Array(15).fill(1), batch: 1, length: 15 };
    await onEach(() => {
      const x = tf.tensor2d(w, [1, 15]);
      const s = sparseScores(x, t, x, t, { specialTokenIds: SPECIAL });
      expect(s.dataSync()[0]).toBeCloseTo(0.81, 5);
      const [g] = tf.grads((a: tf.Tensor) => tf.sum(sparseScores(a as tf.Tensor2D, t, tf.tensor2d(w, [1, 15]), t, { specialTokenIds: SPECIAL })))([x]);
      const want = new Float32Array(15);
      want[6] = 0.9; // the first of the two 0.9s; specials (positions 0, 14) get nothing
      expectAllClose(g, want, 1e-6, 1e-7);
    });
  });

  test('sparse score with no shared token is 0 and still differentiable', async () => {
    const q = { inputIds: Int32Array.from([0, 5, 6, 2]), attentionMask: new Int32Array(4).fill(1), batch: 1, length: 4 };
    const p = { inputIds: Int32Array.from([0, 8, 9, 2]), attentionMask: new Int32Array(4).fill(1), batch: 1, length: 4 };
    await onEach(() => {
      const w = tf.ones([1, 4]) as tf.Tensor2D;
      expect(Array.from(sparseScores(w, q, w, p, { specialTokenIds: SPECIAL }).dataSync())).toEqual([0]);
      const [g] = tf.grads((a: tf.Tensor) => tf.sum(sparseScores(a as tf.Tensor2D, q, w, p, { specialTokenIds: SPECIAL })))([w]);
      expect(Array.from(g.dataSync())).toEqual([0, 0, 0, 0]);
    });
  });

  test('ColBERT score equals the max-sim formula, and chunking changes neither values nor gradients', async () => {
    const bq = 3;
    const bp = 6;
    const q = randomTokens({ batch: bq, length: 7, vocab: 50, minLength: 3, seed: 5 });
    const p = randomTokens({ batch: bp, length: 9, vocab: 50, minLength: 3, seed: 6 });
    const hq = randomNormal([bq, 7, 8], 7) as tf.Tensor3D;
    const hp = randomNormal([bp, 9, 8], 8) as tf.Tensor3D;
    const w = randomNormal([5, 8], 9);
    const bias = randomNormal([5], 10);
    const up = randomNormal([bq, bp], 11);
    await onEach(() => {
      const qMask = tf.tensor2d(q.attentionMask, [bq, 7], 'int32');
      const pMask = tf.tensor2d(p.attentionMask, [bp, 9], 'int32');
      const vecs = (a: tf.Tensor, b: tf.Tensor) => [colbertVectors(a as tf.Tensor3D, qMask, w, bias), colbertVectors(b as tf.Tensor3D, pMask, w, bias)];
      const variants = [
        (a: tf.Tensor, b: tf.Tensor) => naiveColbert(...(vecs(a, b) as [tf.Tensor3D, tf.Tensor3D]), qMask, 0.02),
        (a: tf.Tensor, b: tf.Tensor) => colbertScores(...(vecs(a, b) as [tf.Tensor3D, tf.Tensor3D]), qMask, { temperature: 0.02 }),
        // one query × one passage per chunk (6·8 floats), and a budget that splits the passages unevenly
        (a: tf.Tensor, b: tf.Tensor) => colbertScores(...(vecs(a, b) as [tf.Tensor3D, tf.Tensor3D]), qMask, { temperature: 0.02, maxChunkElements: 1 }),
        (a: tf.Tensor, b: tf.Tensor) => colbertScores(...(vecs(a, b) as [tf.Tensor3D, tf.Tensor3D]), qMask, { temperature: 0.02, maxChunkElements: 6 * 8 * 4 }),
      ];
      const results = variants.map((f) => ({ s: f(hq, hp), g: tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a, b), up)))([hq, hp]) }));
      for (const r of results.slice(1)) {
        expectAllClose(r.s, results[0].s, 1e-5, 1e-5);
        expectAllClose(r.g[0], results[0].g[0], 1e-4, 1e-5);
        expectAllClose(r.g[1], results[0].g[1], 1e-4, 1e-5);
      }
    });
  });

  test('ColBERT chunking bounds the memory of forward and backward', async () => {
    // The similarity block is 4·63 × 16·255 floats (≈ 3.9 MiB); the vectors are small next to it (d = 8).
    // tf.memory() counts every reshape view as new bytes, so measured peaks overstate the real ones.
    const q = tf.tidy(() => tf.div(randomNormal([4, 63, 8], 12), 3)) as tf.Tensor3D;
    const p = tf.tidy(() => tf.div(randomNormal([16, 255, 8], 13), 3)) as tf.Tensor3D;
    const mask = tf.ones([4, 64], 'int32') as tf.Tensor2D;
    const simBytes = 4 * 63 * 16 * 255 * 4;
    const peakOf = async (maxChunkElements?: number) => {
      const before = tf.memory().numBytes;
      const info = await tf.profile(() => {
        const gs = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(colbertScores(a as tf.Tensor3D, b as tf.Tensor3D, mask, { maxChunkElements })))([q, p]);
        tf.dispose(gs);
      });
      return info.peakBytes - before;
    };
    for (const b of backends) {
      await tf.setBackend(b);
      const whole = await peakOf(); // default budget: a single chunk
      const chunked = await peakOf(4 * 63 * 255); // one passage per chunk
      expect(whole).toBeGreaterThan(simBytes);
      expect(chunked).toBeLessThan(simBytes);
    }
    tf.dispose([q, p, mask]);
  });

  test('own-group scores equal the own-group slice of the full matrices', async () => {
    const b = 3;
    const g = 4;
    const q = randomTokens({ batch: b, length: 6, vocab: 30, minLength: 3, seed: 21 });
    const p = randomTokens({ batch: b * g, length: 8, vocab: 30, minLength: 3, seed: 22 });
    const hq = randomNormal([b, 6, 8], 23) as tf.Tensor3D;
    const hp = randomNormal([b * g, 8, 8], 24) as tf.Tensor3D;
    const sw = randomNormal([1, 8], 25);
    const cw = randomNormal([8, 8], 26);
    const zero1 = tf.zeros([1]);
    const zero8 = tf.zeros([8]);
    const layout = { groupSize: g, inBatchNegatives: true };
    await onEach(() => {
      const qMask = tf.tensor2d(q.attentionMask, [b, 6], 'int32');
      const pMask = tf.tensor2d(p.attentionMask, [b * g, 8], 'int32');
      const dq = denseEmbedding(hq);
      const dp = denseEmbedding(hp);
      expectAllClose(denseScores(dq, dp, { ownGroupSize: g }), ownGroupScores(denseScores(dq, dp), layout), 1e-6, 1e-6);
      const wq = sparseTokenWeights(hq, sw, zero1, qMask);
      const wp = sparseTokenWeights(hp, sw, zero1, pMask);
      const o = { specialTokenIds: SPECIAL, temperature: 0.5 };
      expectAllClose(sparseScores(wq, q, wp, p, { ...o, ownGroupSize: g }), ownGroupScores(sparseScores(wq, q, wp, p, o), layout), 1e-6, 1e-6);
      const cq = colbertVectors(hq, qMask, cw, zero8);
      const cp = colbertVectors(hp, pMask, cw, zero8);
      expectAllClose(colbertScores(cq, cp, qMask, { ownGroupSize: g }), ownGroupScores(colbertScores(cq, cp, qMask), layout), 1e-6, 1e-6);
    });
  });
});
