/**
 * The BGE-M3 unified fine-tuning loss over one batch, in the code form of FlagEmbedding
 * finetune/embedder/encoder_only/m3/modeling.py `forward` (the paper's v3 form, arXiv 2402.03216 §3.3,
 * has no weights, no L(s_e) term and no halving):
 *   s_d, s_s, s_c  dense / sparse / ColBERT scores, each divided by τ
 *   s_e = w_d·s_d + w_s·s_s + w_c·s_c                                    w = (1, 0.3, 1)
 *   L   = (λ_d·L(s_d) + L(s_e) + λ_s·L(s_s) + λ_c·L(s_c)) / 4             λ = (1, 0.1, 1)
 *   self-distillation on:  L' = (λ_d·SCE(T, s_d) + λ_s·SCE(T, s_s) + λ_c·SCE(T, s_c)) / 3,
 *                          T = softmax(stop_gradient(s_e)),  loss = (L + L') / 2
 *   self-distillation off: loss = L (no halving)
 *   dense only (unified off): loss = L(s_d)
 * L(·) is InfoNCE, or the teacher-score distillation (kl_div / m3_kd_loss) when teacher scores are given.
 * `no_in_batch_neg` data scores each query against its own group only ([B, G], target 0), ensemble and
 * self-distillation included: the reference's intent without its bug (FlagEmbedding#1410).
 *
 * The self-distillation teacher: pass `selfDistillTeacher` (e.g. computed outside the gradient function
 * with `selfDistillTeacher(m3Scores(...).ensemble)`), or leave it out and it is computed here from the
 * ensemble with the gradient stopped; both give the same gradients.
 *
 * Cross-device negatives (`crossDevice`, data parallel; FlagEmbedding's negatives_cross_device): the
 * representations of the shared heads are gathered from every rank (rank order = the global batch's row
 * order) and their loss terms use the [W·B, W·B·G] matrix. As in FlagEmbedding, by default only dense is
 * shared and the ensemble and self-distillation use this rank's [B, B·G] block; when all three heads are
 * shared the ensemble and its teacher are global too, so W ranks compute exactly one process's loss.
 */
import * as tf from '@tensorflow/tfjs';
import { colbertVectors, denseEmbedding, M3Heads, sparseTokenWeights } from '../model/heads';
import { colbertScores } from './colbert-score';
import { contrastiveLoss, KdLossType, teacherTargetsFromScores, TeacherTargets } from './contrastive';
import { denseScores } from './dense-score';
import { DEFAULT_ENSEMBLE_WEIGHTS, ensembleScores, HeadWeights } from './ensemble-score';
import { ScoreLayout } from './layout';
import { selfDistillLoss, selfDistillTeacher } from './self-distill';
import { TokenBatch } from '../util/token-batch';
import { sparseScores } from './sparse-score';

export const DEFAULT_LOSS_WEIGHTS: Readonly<HeadWeights> = Object.freeze({ dense: 1, sparse: 0.1, colbert: 1 });

/** The encoder outputs of one batch: B queries and B·G passages (grouped by query, positive first). */
export interface M3LossBatch {
  /** last_hidden_state of the queries, [B, Lq, d] */
  queryHidden: tf.Tensor3D;
  /** last_hidden_state of the passages, [B·G, Lp, d] */
  passageHidden: tf.Tensor3D;
  /** The queries' token ids and attention mask (host). */
  queries: Required<TokenBatch>;
  /** The passages' token ids and attention mask (host). */
  passages: Required<TokenBatch>;
}

export interface M3LossOptions {
  /** τ (training default 0.02). */
  temperature: number;
  /** G = train_group_size. */
  groupSize: number;
  /** Dense, sparse and ColBERT heads with the ensemble (true), or the dense InfoNCE alone (false). */
  unified: boolean;
  /** false for `no_in_batch_neg` datasets (own group only). Default true. */
  inBatchNegatives?: boolean;
  /** The self-distillation term is active for this batch (requires `unified`). */
  selfDistill?: boolean;
  /** A precomputed, detached self-distillation teacher softmax(s_e), [B, B·G] or [B, G]. */
  selfDistillTeacher?: tf.Tensor2D;
  /** Raw teacher (reranker) scores [B, G]; their softmax replaces InfoNCE by `kdLossType` in every term. */
  teacherScores?: tf.Tensor2D;
  /** Default 'kl_div'. */
  kdLossType?: KdLossType;
  /** Ids zeroed in the sparse vectors (CLS, EOS, PAD, UNK). Required when `unified`. */
  specialTokenIds?: Iterable<number>;
  /** Default (1, 0.3, 1). */
  ensembleWeights?: HeadWeights;
  /** Default (1, 0.1, 1). */
  lossWeights?: HeadWeights;
  /** Bound on one ColBERT similarity chunk, in floats. */
  colbertChunkElements?: number;
  /** Share negatives across data-parallel ranks (ignored for own-group, `no_in_batch_neg`, batches). */
  crossDevice?: CrossDevice;
}

export const CROSS_DEVICE_MODES = ['dense', 'sparse', 'colbert'] as const;
export type CrossDeviceMode = (typeof CROSS_DEVICE_MODES)[number];

/** The data-parallel group as the loss needs it: which heads to share and how to gather rows. */
export interface CrossDevice {
  modes: readonly CrossDeviceMode[];
  rank: number;
  worldSize: number;
  /** Every rank's rows in rank order, with a gradient back to this rank's rows. */
  gatherRows(x: tf.Tensor): tf.Tensor;
  /** The same without a gradient (token ids, masks, teacher scores). */
  gatherConst(x: tf.Tensor): tf.Tensor;
}

/** Score matrices, all divided by τ: [B, B·G] with in-batch negatives, [B, G] own-group. */
export interface M3Scores {
  dense: tf.Tensor2D;
  sparse?: tf.Tensor2D;
  colbert?: tf.Tensor2D;
  ensemble?: tf.Tensor2D;
  /** Every matrix above spans all ranks' rows (all three heads shared across devices). */
  allRanks?: boolean;
  /** Shared heads' all-rank matrices when the ones above are this rank's block: their loss terms use these. */
  global?: Partial<Record<CrossDeviceMode, tf.Tensor2D>>;
}

export interface M3LossTerms {
  /** The final loss to minimise. */
  loss: tf.Scalar;
  dense: tf.Scalar;
  sparse?: tf.Scalar;
  colbert?: tf.Scalar;
  ensemble?: tf.Scalar;
  /** (λ_d·L_d + L_e + λ_s·L_s + λ_c·L_c) / 4, unified only. */
  contrastive?: tf.Scalar;
  /** L', when self-distillation is on. */
  selfDistill?: tf.Scalar;
}

export interface M3LossOutput {
  loss: tf.Scalar;
  terms: M3LossTerms;
  scores: M3Scores;
}

/** tf.tidy for result objects typed as interfaces (tidy's signature wants an index-signature container). */
function tidyObject<T>(fn: () => T): T {
  return tf.tidy(fn as () => tf.TensorContainer) as T;
}

function layoutOf(o: M3LossOptions): ScoreLayout {
  if (!Number.isInteger(o.groupSize) || o.groupSize < 1) throw new Error(`groupSize must be a positive integer, got ${o.groupSize}`);
  return { groupSize: o.groupSize, inBatchNegatives: o.inBatchNegatives ?? true };
}

/** The score matrices of a batch (what the loss sees); `unified` adds sparse, ColBERT and the ensemble. */
export function m3Scores(batch: M3LossBatch, heads: M3Heads | null, o: M3LossOptions): M3Scores {
  const layout = layoutOf(o);
  const { queryHidden: qh, passageHidden: ph, queries, passages } = batch;
  if (qh.shape[0] !== queries.batch || ph.shape[0] !== passages.batch) throw new Error('m3Scores: hidden states and token batches differ in size');
  if (passages.batch !== queries.batch * layout.groupSize) {
    throw new Error(`m3Scores: ${passages.batch} passages for ${queries.batch} queries with group size ${layout.groupSize}`);
  }
  const scoreOpts = { temperature: o.temperature, ownGroupSize: layout.inBatchNegatives ? undefined : layout.groupSize };
  const cd = layout.inBatchNegatives ? o.crossDevice : undefined;
  const shared = (m: CrossDeviceMode) => !!cd && cd.modes.includes(m);
  const allShared = !!cd && o.unified && CROSS_DEVICE_MODES.every(shared);
  return tidyObject(() => {
    if (!o.unified && !shared('dense')) return { dense: denseScores(denseEmbedding(qh), denseEmbedding(ph), scoreOpts) };
    const rows = crossDeviceRows(cd, queries, passages);
    const global: M3Scores['global'] = {};
    // a shared head's all-rank matrix, and this rank's block of it
    const both = (m: CrossDeviceMode, score: (g: typeof rows) => tf.Tensor2D, local: () => tf.Tensor2D): tf.Tensor2D => {
      if (!shared(m)) return local();
      const g = score(rows);
      if (allShared) return g;
      global[m] = g;
      return rows!.block(g);
    };
    const qd = denseEmbedding(qh);
    const pd = denseEmbedding(ph);
    const dense = both('dense', (r) => denseScores(r!.gather(qd) as tf.Tensor2D, r!.gather(pd) as tf.Tensor2D, scoreOpts), () => denseScores(qd, pd, scoreOpts));
    if (!o.unified) return { dense, global };
    if (!heads) throw new Error('m3Scores: unified scoring needs the sparse and ColBERT heads');
    if (!o.specialTokenIds) throw new Error('m3Scores: unified scoring needs specialTokenIds');
    const qMask = tf.tensor2d(queries.attentionMask, [queries.batch, queries.length], 'int32');
    const pMask = tf.tensor2d(passages.attentionMask, [passages.batch, passages.length], 'int32');
    const sparseOpts = { ...scoreOpts, specialTokenIds: o.specialTokenIds };
    const qs = sparseTokenWeights(qh, heads.sparseWeight, heads.sparseBias, qMask);
    const ps = sparseTokenWeights(ph, heads.sparseWeight, heads.sparseBias, pMask);
    const sparse = both('sparse',
      (r) => sparseScores(r!.gather(qs) as tf.Tensor2D, r!.queries, r!.gather(ps) as tf.Tensor2D, r!.passages, sparseOpts),
      () => sparseScores(qs, queries, ps, passages, sparseOpts));
    const colbertOpts = { ...scoreOpts, maxChunkElements: o.colbertChunkElements };
    const qc = colbertVectors(qh, qMask, heads.colbertWeight, heads.colbertBias);
    const pc = colbertVectors(ph, pMask, heads.colbertWeight, heads.colbertBias);
    const colbert = both('colbert',
      (r) => colbertScores(r!.gather(qc) as tf.Tensor3D, r!.gather(pc) as tf.Tensor3D, r!.queryMask, colbertOpts),
      () => colbertScores(qc, pc, qMask, colbertOpts));
    const ensemble = ensembleScores(dense, sparse, colbert, o.ensembleWeights ?? DEFAULT_ENSEMBLE_WEIGHTS);
    return { dense, sparse, colbert, ensemble, global, allRanks: allShared };
  });
}

/**
 * What scoring across ranks needs besides the representations: every rank's token ids and masks (host
 * arrays, gathered once), the gather itself, and this rank's [B, B·G] block of an all-rank matrix.
 * Ranks hold equal row counts (the reader shares a global batch evenly), checked here.
 */
function crossDeviceRows(cd: CrossDevice | undefined, queries: Required<TokenBatch>, passages: Required<TokenBatch>) {
  if (!cd) return null;
  const gatherBatch = (b: Required<TokenBatch>): Required<TokenBatch> => {
    const ids = cd.gatherConst(tf.tensor2d(b.inputIds, [b.batch, b.length], 'int32'));
    const mask = cd.gatherConst(tf.tensor2d(b.attentionMask, [b.batch, b.length], 'int32'));
    if (ids.shape[0] !== b.batch * cd.worldSize) throw new Error(`cross-device negatives need equal batches on every rank (${ids.shape[0]} rows gathered, ${b.batch} here × ${cd.worldSize} ranks)`);
    return { inputIds: ids.dataSync() as Int32Array, attentionMask: mask.dataSync() as Int32Array, batch: ids.shape[0], length: b.length };
  };
  const q = gatherBatch(queries);
  const p = gatherBatch(passages);
  return {
    queries: q,
    passages: p,
    queryMask: tf.tensor2d(q.attentionMask, [q.batch, q.length], 'int32'),
    gather: (x: tf.Tensor) => cd.gatherRows(x),
    block: (all: tf.Tensor2D) => tf.slice(all, [cd.rank * queries.batch, cd.rank * passages.batch], [queries.batch, passages.batch]) as tf.Tensor2D,
  };
}

/** The loss terms from score matrices (scores as m3Scores returns them). */
export function m3LossFromScores(scores: M3Scores, o: M3LossOptions): M3LossTerms {
  const layout = layoutOf(o);
  if (o.selfDistill && !o.unified) throw new Error('self-distillation needs unified fine-tuning (the ensemble is its teacher)');
  return tidyObject(() => {
    const targets = (t: tf.Tensor2D): TeacherTargets => ({ targets: teacherTargetsFromScores(t), type: o.kdLossType ?? 'kl_div' });
    const local = o.teacherScores ? targets(o.teacherScores) : undefined;
    // all-rank matrices need every rank's teacher rows
    const all = o.teacherScores && o.crossDevice && (scores.allRanks || Object.keys(scores.global ?? {}).length)
      ? targets(o.crossDevice.gatherConst(o.teacherScores) as tf.Tensor2D) : undefined;
    const term = (m: CrossDeviceMode | 'ensemble', x: tf.Tensor2D) => {
      const g = m === 'ensemble' ? undefined : scores.global?.[m];
      return g ? contrastiveLoss(g, layout, all) : contrastiveLoss(x, layout, scores.allRanks ? all : local);
    };
    const dense = term('dense', scores.dense);
    if (!o.unified) return { loss: dense, dense };
    const { sparse: s, colbert: c, ensemble: e } = scores;
    if (!s || !c || !e) throw new Error('m3LossFromScores: unified loss needs sparse, ColBERT and ensemble scores');
    const w = o.lossWeights ?? DEFAULT_LOSS_WEIGHTS;
    const sparse = term('sparse', s);
    const colbert = term('colbert', c);
    const ensemble = term('ensemble', e);
    const contrastive = tf.div(tf.addN([tf.mul(dense, w.dense), ensemble, tf.mul(sparse, w.sparse), tf.mul(colbert, w.colbert)]), 4) as tf.Scalar;
    const terms: M3LossTerms = { loss: contrastive, dense, sparse, colbert, ensemble, contrastive };
    if (o.selfDistill) {
      const t = o.selfDistillTeacher ?? selfDistillTeacher(e);
      if (t.shape[0] !== e.shape[0] || t.shape[1] !== e.shape[1]) throw new Error(`selfDistillTeacher [${t.shape}] does not match the scores [${e.shape}]`);
      terms.selfDistill = selfDistillLoss({ dense: scores.dense, sparse: s, colbert: c }, t, w);
      terms.loss = tf.div(tf.add(contrastive, terms.selfDistill), 2) as tf.Scalar;
    }
    return terms;
  });
}

/** Scores and loss terms of one batch from the encoder outputs and the heads. */
export function m3Loss(batch: M3LossBatch, heads: M3Heads | null, o: M3LossOptions): M3LossOutput {
  return tidyObject(() => {
    const scores = m3Scores(batch, heads, o);
    const terms = m3LossFromScores(scores, o);
    return { loss: terms.loss, terms, scores };
  });
}
