/**
 * One micro-batch of M3 fine-tuning: encode queries and passages, the unified (or dense-only) loss, and
 * parameter gradients. With `subBatchSize` smaller than the batch, GradCache sub-batching bounds memory
 * by one sub-batch (src/train/gradcache.ts); otherwise one pass with the self-distillation teacher's
 * gradient stopped in-graph. Both give the same gradients (tested).
 */
import * as tf from '@tensorflow/tfjs';
import { encoderForward, encoderForwardMany, wordEmbeddings } from '../model/encoder';
import { TokenBatch } from '../util/token-batch';
import { headsFromParams } from '../model/heads';
import { HEAD_NAMES, M3Model } from '../model/m3';
import { m3Loss, M3LossOptions, m3LossFromScores, m3Scores } from '../losses/m3-loss';
import { selfDistillTeacher } from '../losses/self-distill';
import { deriveSeed } from '../util/rng';
import { gradCacheStep, Reps } from '../train/gradcache';
import { renameGrads } from '../train/trainer';

export interface M3Batch {
  queries: TokenBatch;
  passages: TokenBatch;
  /** Raw teacher scores [B·G] (reranker), when knowledge distillation is on. */
  teacherScores?: Float32Array;
}

export interface M3StepOptions {
  loss: Omit<M3LossOptions, 'selfDistillTeacher' | 'teacherScores'>;
  /** Sub-batch size for GradCache; 0 = one pass. */
  subBatchSize: number;
  /** Dropout on (training) with seeds derived from this; undefined = no dropout. */
  seed?: number;
  /**
   * Where this batch's rows sit in the global batch (data parallel: rank × per-rank rows): dropout masks
   * are drawn per global row, so N ranks draw the masks one process with the global batch would.
   */
  rowOffset?: { queries: number; passages: number };
}

export interface M3StepResult {
  loss: tf.Scalar;
  grads: Map<string, tf.Tensor>;
  parts: Record<string, tf.Scalar>;
}

function sliceBatch(b: TokenBatch, start: number, n: number): TokenBatch {
  return {
    inputIds: b.inputIds.subarray(start * b.length, (start + n) * b.length),
    attentionMask: b.attentionMask.subarray(start * b.length, (start + n) * b.length),
    batch: n,
    length: b.length,
  };
}

function termsToParts(terms: Record<string, tf.Scalar | undefined>): Record<string, tf.Scalar> {
  const out: Record<string, tf.Scalar> = {};
  for (const [k, v] of Object.entries(terms)) if (v && k !== 'loss') out[`loss_${k}`] = v;
  return out;
}

export function m3Step(model: M3Model, batch: M3Batch, o: M3StepOptions): M3StepResult {
  const params = model.params as Map<string, tf.Variable>;
  const B = batch.queries.batch;
  const G = o.loss.groupSize;
  const teacherScores = batch.teacherScores ? tf.tensor2d(batch.teacherScores, [B, G]) : undefined;
  const lossOpts: M3LossOptions = { ...o.loss, teacherScores };
  const hasHeadParams = o.loss.unified;
  // one seed per stream; dropout masks are drawn per row (see Dropout), so sub-batching does not change them
  const seedFor = (stream: number) => (o.seed === undefined ? undefined : deriveSeed(o.seed, stream));
  const sub = o.subBatchSize > 0 ? o.subBatchSize : Infinity;
  const offset = o.rowOffset ?? { queries: 0, passages: 0 };
  const qChunks = Math.ceil(B / Math.min(sub, B));
  const pChunks = Math.ceil(batch.passages.batch / Math.min(sub, batch.passages.batch));
  try {
    if (qChunks === 1 && pChunks === 1) {
      // one pass: the teacher inside m3Loss is softmax(stopGradient(s_e))
      let parts: Record<string, tf.Scalar> = {};
      const trainable = [...params.values()].filter((v) => v.trainable);
      const { value, grads } = tf.variableGrads(() => {
        const [qWords, pWords] = wordEmbeddings(params, [batch.queries, batch.passages]);
        const [queryHidden, passageHidden] = encoderForwardMany(model.config, params, [batch.queries, batch.passages], [
          { dropoutSeed: seedFor(0), dropoutRowOffset: offset.queries, words: qWords },
          { dropoutSeed: seedFor(1), dropoutRowOffset: offset.passages, words: pWords },
        ]);
        const out = m3Loss({
          queryHidden, passageHidden, queries: batch.queries, passages: batch.passages,
        }, hasHeadParams ? headsFromParams(params) : null, lossOpts);
        parts = Object.fromEntries(Object.entries(termsToParts(out.terms as never)).map(([k, v]) => [k, tf.keep(v.clone())]));
        return out.loss;
      }, trainable);
      return { loss: value, grads: renameGrads(params, grads), parts };
    }
    const chunked = (b: TokenBatch, stream: number, n: number, rows: number) => ({
      chunks: Math.ceil(b.batch / n),
      encode: (i: number): Reps => ({
        h: encoderForward(model.config, params, sliceBatch(b, i * n, Math.min(n, b.batch - i * n)), { dropoutSeed: seedFor(stream), dropoutRowOffset: rows + i * n }),
      }),
    });
    const lossBatch = (reps: Record<string, Reps>) => ({
      queryHidden: reps.q.h as tf.Tensor3D, passageHidden: reps.p.h as tf.Tensor3D, queries: batch.queries, passages: batch.passages,
    });
    const r = gradCacheStep(
      params,
      { q: chunked(batch.queries, 0, Math.min(sub, B), offset.queries), p: chunked(batch.passages, 1, Math.min(sub, batch.passages.batch), offset.passages) },
      (reps, consts, lp) => {
        const scores = m3Scores(lossBatch(reps), hasHeadParams ? headsFromParams(lp) : null, lossOpts);
        const terms = m3LossFromScores(scores, { ...lossOpts, selfDistillTeacher: consts.teacher as tf.Tensor2D | undefined });
        return { loss: terms.loss, parts: termsToParts(terms as never) };
      },
      (reps) => {
        if (!o.loss.selfDistill) return {};
        // the detached teacher: scores of the constant representations
        return tf.tidy(() => {
          const s = m3Scores(lossBatch(reps), headsFromParams(params), lossOpts);
          return { teacher: selfDistillTeacher(s.ensemble!) };
        });
      },
      hasHeadParams ? HEAD_NAMES : [],
    );
    return { loss: r.loss, grads: r.grads, parts: r.parts };
  } finally {
    teacherScores?.dispose();
  }
}
