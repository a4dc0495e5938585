/**
 * Loss semantics beyond the golden cases: cross-entropy's ignore index, own-group (`no_in_batch_neg`)
 * scoring of every term including the ensemble and self-distillation, the exact combination
 * of FlagEmbedding's M3 forward with non-default weights, and the dense-only path.
 */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';
import { contrastiveLoss, KdLossType } from '../../src/losses/contrastive';
import { crossEntropy } from '../../src/losses/cross-entropy';
import { ScoreLayout } from '../../src/losses/layout';
import { M3LossOptions, m3Loss, m3LossFromScores, M3Scores, m3Scores } from '../../src/losses/m3-loss';
import { expectAllClose, randomM3Batch, randomNormal } from './helpers';

const SPECIAL = [0, 1, 2, 3];
// Additive "minus infinity" that stays finite, so 0·it is 0 in the soft cross-entropies.
const EXCLUDED = -1e30;

beforeAll(async () => {
  await useBackend('wasm');
});

/** An in-batch [B, B·G] matrix whose own-group block is `own` [B, G] and whose other columns are excluded. */
function embedOwnGroup(own: tf.Tensor2D, g: number): tf.Tensor2D {
  const [b] = own.shape;
  const rows = tf.unstack(own).map((r, i) => tf.concat([tf.fill([i * g], EXCLUDED), r, tf.fill([(b - i - 1) * g], EXCLUDED)]));
  return tf.stack(rows) as tf.Tensor2D;
}

describe('cross-entropy', () => {
  test('matches −log softmax at the target and skips ignored rows', () => {
    const logits = tf.tensor2d([[1, 2, 3], [0, 0, 0], [5, -1, 2]]);
    const lse = (r: number[]) => Math.log(r.reduce((a, x) => a + Math.exp(x), 0));
    const rowLoss = [lse([1, 2, 3]) - 3, lse([0, 0, 0]) - 0, lse([5, -1, 2]) - 2];
    expect(crossEntropy(logits, [2, 0, 2]).dataSync()[0]).toBeCloseTo((rowLoss[0] + rowLoss[1] + rowLoss[2]) / 3, 5);
    expect(crossEntropy(logits, [2, -100, 2]).dataSync()[0]).toBeCloseTo((rowLoss[0] + rowLoss[2]) / 2, 5);
    expect(crossEntropy(logits, [-100, -100, -100]).dataSync()[0]).toBe(0);
    const [g] = tf.grads((x: tf.Tensor) => crossEntropy(x as tf.Tensor2D, [2, -100, 2]))([logits]);
    expect(Array.from(g.dataSync().slice(3, 6))).toEqual([0, 0, 0]);
  });
});

describe('own-group scoring (no_in_batch_neg)', () => {
  const b = 3;
  const g = 4;
  const own: ScoreLayout = { groupSize: g, inBatchNegatives: false };
  const inBatch: ScoreLayout = { groupSize: g, inBatchNegatives: true };

  test.each([['InfoNCE', undefined], ['kl_div', 'kl_div'], ['m3_kd_loss', 'm3_kd_loss']] as [string, KdLossType | undefined][])('%s: own-group loss = in-batch loss with every other group excluded', (_name, type) => {
    const s = tf.mul(randomNormal([b, g], 31), 3) as tf.Tensor2D;
    const teacher = type ? { targets: tf.softmax(randomNormal([b, g], 32)) as tf.Tensor2D, type } : undefined;
    const a = contrastiveLoss(s, own, teacher).dataSync()[0];
    const c = contrastiveLoss(embedOwnGroup(s, g), inBatch, teacher).dataSync()[0];
    expect(a).toBeGreaterThan(0);
    expect(a).toBeCloseTo(c, 5);
  });

  test.each([[false], [true]])('unified loss (self-distill %s) scores own groups with target 0 in every term', (selfDistill) => {
    const batch = randomM3Batch({ b, g, lq: 6, lp: 8, d: 16, vocab: 40, seed: 40 });
    const base: M3LossOptions = { temperature: 0.05, groupSize: g, unified: true, selfDistill, specialTokenIds: SPECIAL };
    const scoresOwn = m3Scores(batch, batch.heads, { ...base, inBatchNegatives: false });
    const scoresAll = m3Scores(batch, batch.heads, base);
    for (const k of ['dense', 'sparse', 'colbert', 'ensemble'] as const) {
      expect(scoresOwn[k]!.shape).toEqual([b, g]);
      const [bb, c] = scoresAll[k]!.shape;
      const slice = tf.stack(tf.unstack(scoresAll[k]!).map((r, i) => tf.slice(r, [i * g], [g]))).reshape([bb, g]);
      expect(c).toBe(b * g);
      expectAllClose(scoresOwn[k]!, slice, 1e-6, 1e-6);
    }
    const terms = m3LossFromScores(scoresOwn, { ...base, inBatchNegatives: false });
    const embedded: M3Scores = {
      dense: embedOwnGroup(scoresOwn.dense, g),
      sparse: embedOwnGroup(scoresOwn.sparse!, g),
      colbert: embedOwnGroup(scoresOwn.colbert!, g),
      ensemble: embedOwnGroup(scoresOwn.ensemble!, g),
    };
    const reference = m3LossFromScores(embedded, base);
    for (const k of ['loss', 'dense', 'sparse', 'colbert', 'ensemble', 'contrastive', 'selfDistill'] as const) {
      if (k === 'selfDistill' && !selfDistill) {
        expect(terms.selfDistill).toBeUndefined();
        continue;
      }
      expect(terms[k]!.dataSync()[0]).toBeCloseTo(reference[k]!.dataSync()[0], 4);
    }
  });
});

describe('unified loss combination (FlagEmbedding M3 forward)', () => {
  const b = 2;
  const g = 3;
  let batch: ReturnType<typeof randomM3Batch>;
  beforeAll(() => {
    batch = randomM3Batch({ b, g, lq: 5, lp: 7, d: 16, vocab: 30, seed: 50 });
  });
  const base: M3LossOptions = { temperature: 0.1, groupSize: g, unified: true, specialTokenIds: SPECIAL };
  const value = (t: tf.Tensor | undefined) => t!.dataSync()[0];

  test('default weights: s_e = s_d + 0.3·s_s + s_c, L = (L_d + L_e + 0.1·L_s + L_c)/4, no halving without self-distillation', () => {
    const out = m3Loss(batch, batch.heads, base);
    const { dense, sparse, colbert, ensemble } = out.scores;
    expectAllClose(ensemble!, tf.addN([dense, tf.mul(sparse!, 0.3), colbert!]), 1e-6, 1e-6);
    const t = out.terms;
    expect(value(t.contrastive)).toBeCloseTo((value(t.dense) + value(t.ensemble) + 0.1 * value(t.sparse) + value(t.colbert)) / 4, 5);
    expect(value(t.loss)).toBe(value(t.contrastive));
    expect(t.selfDistill).toBeUndefined();
  });

  test('configured weights and self-distillation: L\' = Σλ·SCE(softmax s_e, s)/3, loss = (L + L\')/2', () => {
    const ensembleWeights = { dense: 0.5, sparse: 0.2, colbert: 2 };
    const lossWeights = { dense: 0.7, sparse: 0.05, colbert: 1.5 };
    const out = m3Loss(batch, batch.heads, { ...base, ensembleWeights, lossWeights, selfDistill: true });
    const { dense, sparse, colbert, ensemble } = out.scores;
    expectAllClose(ensemble!, tf.addN([tf.mul(dense, 0.5), tf.mul(sparse!, 0.2), tf.mul(colbert!, 2)]), 1e-6, 1e-6);
    const t = out.terms;
    expect(value(t.contrastive)).toBeCloseTo((0.7 * value(t.dense) + value(t.ensemble) + 0.05 * value(t.sparse) + 1.5 * value(t.colbert)) / 4, 5);
    const teacher = tf.softmax(ensemble!);
    const sce = (s: tf.Tensor) => -tf.mean(tf.sum(tf.mul(teacher, tf.logSoftmax(s)), 1)).dataSync()[0];
    const want = (0.7 * sce(dense) + 0.05 * sce(sparse!) + 1.5 * sce(colbert!)) / 3;
    expect(value(t.selfDistill)).toBeCloseTo(want, 4);
    expect(value(t.loss)).toBeCloseTo((value(t.contrastive) + want) / 2, 4);
  });

  test('dense only: the dense InfoNCE (or KD) alone, no heads needed; self-distillation refuses', () => {
    const teacherScores = randomNormal([b, g], 51) as tf.Tensor2D;
    for (const kdLossType of [undefined, 'kl_div', 'm3_kd_loss'] as const) {
      const o: M3LossOptions = { temperature: 0.1, groupSize: g, unified: false, teacherScores: kdLossType ? teacherScores : undefined, kdLossType };
      const out = m3Loss(batch, null, o);
      expect(out.scores.sparse).toBeUndefined();
      const layout = { groupSize: g, inBatchNegatives: true };
      const want = contrastiveLoss(out.scores.dense, layout, kdLossType ? { targets: tf.softmax(teacherScores) as tf.Tensor2D, type: kdLossType } : undefined);
      expect(value(out.loss)).toBeCloseTo(value(want), 5);
    }
    expect(() => m3Loss(batch, null, { temperature: 0.1, groupSize: g, unified: false, selfDistill: true })).toThrow(/unified/);
  });

  test('shape errors name the problem', () => {
    expect(() => m3Loss(batch, batch.heads, { ...base, groupSize: 4 })).toThrow(/passages/);
    expect(() => m3Loss(batch, batch.heads, { ...base, selfDistill: true, selfDistillTeacher: tf.zeros([b, g]) as tf.Tensor2D })).toThrow(/selfDistillTeacher/);
  });
});
