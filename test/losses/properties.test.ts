/**
 * Property tests of the unified loss: relabelling queries (moving whole groups with them) only permutes
 * the score matrices and leaves the loss unchanged; the self-distillation teacher is detached.
 */
import * as tf from '@tensorflow/tfjs';
import { M3LossBatch, M3LossOptions, m3Loss, m3Scores } from '../../src/losses/m3-loss';
import { selfDistillLoss, selfDistillTeacher } from '../../src/losses/self-distill';
import { M3Heads } from '../../src/model/heads';
import { expectAllClose, randomM3Batch, randomNormal, testBackends, worstRatio } from './helpers';

const SPECIAL = [0, 1, 2, 3];
const B = 3;
const G = 3;

let backends: string[];
beforeAll(async () => {
  backends = await testBackends();
});

async function onEach(fn: () => void): Promise<void> {
  for (const b of backends) {
    await tf.setBackend(b);
    try {
      tf.tidy(fn);
    } catch (e) {
      throw new Error(`[${b}] ${(e as Error).message}`);
    }
  }
}

/** Rows of a token batch (and of its hidden states) in a new order. */
function permuteRows<T extends { inputIds: Int32Array; attentionMask: Int32Array; batch: number; length: number }>(t: T, order: number[]): T {
  const l = t.length;
  const ids = new Int32Array(t.inputIds.length);
  const mask = new Int32Array(t.attentionMask.length);
  order.forEach((src, dst) => {
    ids.set(t.inputIds.subarray(src * l, (src + 1) * l), dst * l);
    mask.set(t.attentionMask.subarray(src * l, (src + 1) * l), dst * l);
  });
  return { ...t, inputIds: ids, attentionMask: mask };
}

test('permuting whole query groups permutes every score matrix and keeps the loss', async () => {
  const perm = [2, 0, 1]; // new query i is old query perm[i]
  const passagePerm = perm.flatMap((q) => Array.from({ length: G }, (_, g) => q * G + g));
  await onEach(() => {
    const batch = randomM3Batch({ b: B, g: G, lq: 6, lp: 8, d: 16, vocab: 25, seed: 60 });
    const teacherScores = randomNormal([B, G], 61) as tf.Tensor2D;
    const permuted: M3LossBatch = {
      queries: permuteRows(batch.queries, perm),
      passages: permuteRows(batch.passages, passagePerm),
      queryHidden: tf.gather(batch.queryHidden, perm) as tf.Tensor3D,
      passageHidden: tf.gather(batch.passageHidden, passagePerm) as tf.Tensor3D,
    };
    for (const kdLossType of [undefined, 'kl_div', 'm3_kd_loss'] as const) {
      const o: M3LossOptions = { temperature: 0.05, groupSize: G, unified: true, selfDistill: true, specialTokenIds: SPECIAL, kdLossType };
      const a = m3Loss(batch, batch.heads, { ...o, teacherScores: kdLossType ? teacherScores : undefined });
      const b = m3Loss(permuted, batch.heads, { ...o, teacherScores: kdLossType ? (tf.gather(teacherScores, perm) as tf.Tensor2D) : undefined });
      for (const k of ['dense', 'sparse', 'colbert', 'ensemble'] as const) {
        // scores'[i, c] = scores[perm[i], passagePerm[c]]
        const want = tf.gather(tf.gather(a.scores[k]!, perm, 0), passagePerm, 1);
        expectAllClose(b.scores[k]!, want, 1e-5, 1e-5);
      }
      expect(worstRatio(b.loss.dataSync(), a.loss.dataSync(), 1e-5, 1e-6)).toBeLessThanOrEqual(1);
    }
  });
});

test('no gradient flows into the self-distillation teacher', async () => {
  await onEach(() => {
    // 1. Through the teacher alone, the ensemble scores get an exactly-zero gradient.
    const students = { dense: randomNormal([B, B * G], 70) as tf.Tensor2D, sparse: randomNormal([B, B * G], 71) as tf.Tensor2D, colbert: randomNormal([B, B * G], 72) as tf.Tensor2D };
    const ensemble = randomNormal([B, B * G], 73);
    const w = { dense: 1, sparse: 0.1, colbert: 1 };
    const [ge] = tf.grads((e: tf.Tensor) => selfDistillLoss(students, selfDistillTeacher(e as tf.Tensor2D), w))([ensemble]);
    expect(Array.from(ge.dataSync()).every((v) => v === 0)).toBe(true);

    // 2. The full loss's gradients are the same whether the teacher is computed inside (detached) or
    //    precomputed outside the gradient function and fed in as a constant ...
    const batch = randomM3Batch({ b: B, g: G, lq: 6, lp: 8, d: 16, vocab: 25, seed: 74 });
    const o: M3LossOptions = { temperature: 0.05, groupSize: G, unified: true, selfDistill: true, specialTokenIds: SPECIAL };
    const xs = [batch.queryHidden, batch.passageHidden, batch.heads.sparseWeight, batch.heads.colbertWeight];
    const lossOf = (extra: Partial<M3LossOptions>) => (qh: tf.Tensor, ph: tf.Tensor, sw: tf.Tensor, cw: tf.Tensor) => {
      const heads: M3Heads = { ...batch.heads, sparseWeight: sw, colbertWeight: cw };
      return m3Loss({ ...batch, queryHidden: qh as tf.Tensor3D, passageHidden: ph as tf.Tensor3D }, heads, { ...o, ...extra }).loss;
    };
    const precomputed = selfDistillTeacher(m3Scores(batch, batch.heads, o).ensemble!);
    const inside = tf.grads(lossOf({}))(xs);
    const outside = tf.grads(lossOf({ selfDistillTeacher: precomputed }))(xs);
    inside.forEach((g, i) => expectAllClose(g, outside[i], 1e-5, 1e-7));

    // 3. ... and differ from a teacher that is NOT detached, so the comparison above can fail.
    const attached = tf.grads((qh: tf.Tensor, ph: tf.Tensor, sw: tf.Tensor, cw: tf.Tensor) => {
      const heads: M3Heads = { ...batch.heads, sparseWeight: sw, colbertWeight: cw };
      const b2 = { ...batch, queryHidden: qh as tf.Tensor3D, passageHidden: ph as tf.Tensor3D };
      const teacher = tf.softmax(m3Scores(b2, heads, o).ensemble!) as tf.Tensor2D;
      return m3Loss(b2, heads, { ...o, selfDistillTeacher: teacher }).loss;
    })(xs);
    expect(worstRatio(attached[0].dataSync(), inside[0].dataSync(), 1e-3, 1e-5)).toBeGreaterThan(1);
  });
});
