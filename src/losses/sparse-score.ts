/**
 * Sparse (lexical) score without the [B, L, V] or [B, V] tensor, too big with a 250k vocabulary
 * (FlagEmbedding m3/modeling.py `_sparse_embedding` + `compute_sparse_score`). The reference scatters each
 * token's weight into the vocabulary, takes the max over positions, zeroes the special ids and takes the
 * inner product:
 *   v_x[t]   = max_{i : id_i = t} w_x(i)          (0 if t is absent or special)
 *   s[q, p]  = Σ_t v_q[t] · v_p[t] / τ
 * Here the ids, which live on the host, drive everything instead of a vocabulary axis:
 *   1. Per sequence, the non-special, non-pad positions are grouped by token id ("slots"); each slot's max
 *      is taken on the device with a segmented doubling scan (⌈log2 of the longest run⌉ elementwise
 *      maxima), so the gradient reaches the arg-max position only, as in PyTorch.
 *   2. Only ids that occur on both sides can contribute, so the slots are gathered into [Bq, V′] and
 *      [Bp, V′] over that shared id list (V′ ≤ the distinct ids of either side) and multiplied.
 * Memory is O(B·L·log L + (Bq + Bp)·V′) and independent of the vocabulary size, which this never needs.
 */
import * as tf from '@tensorflow/tfjs';
import { checkOwnGroup, ScoreOptions } from './layout';
import { TokenBatch } from '../util/token-batch';


export interface SparseScoreOptions extends ScoreOptions {
  /** Ids whose weight the reference zeroes: CLS/BOS, EOS/SEP, PAD, UNK (XLM-R 0, 2, 1, 3). */
  specialTokenIds: Iterable<number>;
}

/** One side's positions grouped into (sequence, token id) slots. */
interface SlotPlan {
  /** Flat positions r·L + j, each slot's positions contiguous. */
  order: Int32Array;
  /** Index into `order` of each slot's first position. */
  slotStart: Int32Array;
  /** One gather index per doubling step: k + s when k + s is in k's slot, else k. */
  scanSteps: Int32Array[];
  /** Per sequence: token id → slot. */
  slotOfId: Map<number, number>[];
  numSlots: number;
}

function planSlots(t: TokenBatch, special: Set<number>): SlotPlan {
  const { inputIds, attentionMask, batch, length } = t;
  if (inputIds.length !== batch * length) throw new Error(`sparseScores: ${inputIds.length} ids for a [${batch}, ${length}] batch`);
  const positionsBySlot: number[][] = [];
  const slotOfId: Map<number, number>[] = [];
  for (let r = 0; r < batch; r++) {
    const slots = new Map<number, number>();
    for (let j = 0; j < length; j++) {
      const k = r * length + j;
      const id = inputIds[k];
      if (special.has(id) || (attentionMask && !attentionMask[k])) continue;
      let slot = slots.get(id);
      if (slot === undefined) {
        slot = positionsBySlot.length;
        slots.set(id, slot);
        positionsBySlot.push([]);
      }
      positionsBySlot[slot].push(k);
    }
    slotOfId.push(slots);
  }
  const numSlots = positionsBySlot.length;
  const total = positionsBySlot.reduce((n, p) => n + p.length, 0);
  const order = new Int32Array(total);
  const slotStart = new Int32Array(numSlots);
  const slotEnd = new Int32Array(total); // exclusive end of the slot each entry belongs to
  let k = 0;
  let longest = 1;
  positionsBySlot.forEach((ps, s) => {
    slotStart[s] = k;
    longest = Math.max(longest, ps.length);
    for (const p of ps) order[k++] = p;
    slotEnd.fill(k, slotStart[s], k);
  });
  const scanSteps: Int32Array[] = [];
  for (let s = 1; s < longest; s *= 2) scanSteps.push(Int32Array.from({ length: total }, (_, i) => (i + s < slotEnd[i] ? i + s : i)));
  return { order, slotStart, scanSteps, slotOfId, numSlots };
}

/**
 * Max weight per slot, then one zero appended (index numSlots) for "id absent from this sequence".
 * After the scan step with shift s, entry k holds the max over k … k+2s−1 within its slot, so after
 * ⌈log2 longest⌉ steps each slot's first entry holds the slot max. tf.maximum sends the gradient to its
 * first argument on ties, so exactly one position of a slot receives it.
 */
function slotMaxima(weights: tf.Tensor2D, plan: SlotPlan): tf.Tensor1D {
  return tf.tidy(() => {
    const flat = tf.reshape(weights, [-1]);
    let x = tf.gather(flat, tf.tensor1d(plan.order, 'int32'));
    for (const step of plan.scanSteps) x = tf.maximum(x, tf.gather(x, tf.tensor1d(step, 'int32')));
    const maxima = tf.gather(x, tf.tensor1d(plan.slotStart, 'int32'));
    return tf.concat([maxima, tf.zeros([1])]) as tf.Tensor1D;
  });
}

/** [rows, V′] pooled weights over the shared ids: slot max where the row has the id, else the zero slot. */
function pooledOverSharedIds(maxima: tf.Tensor1D, plan: SlotPlan, column: Map<number, number>, width: number): tf.Tensor2D {
  return tf.tidy(() => {
    const rows = plan.slotOfId.length;
    const idx = new Int32Array(rows * width).fill(plan.numSlots);
    plan.slotOfId.forEach((slots, r) => {
      for (const [id, slot] of slots) {
        const c = column.get(id);
        if (c !== undefined) idx[r * width + c] = slot;
      }
    });
    return tf.reshape(tf.gather(maxima, tf.tensor1d(idx, 'int32')), [rows, width]) as tf.Tensor2D;
  });
}

/**
 * Sparse scores from per-token weights relu(h·wᵀ + b) ([Bq, Lq], [Bp, Lp]) and the batches' token ids:
 * [Bq, Bp], or [B, G] with `ownGroupSize`. Equal to the reference's scatter-max-dot over the vocabulary.
 */
export function sparseScores(
  queryWeights: tf.Tensor2D, queryIds: TokenBatch, passageWeights: tf.Tensor2D, passageIds: TokenBatch, opts: SparseScoreOptions,
): tf.Tensor2D {
  const special = new Set(opts.specialTokenIds);
  for (const [w, t, side] of [[queryWeights, queryIds, 'query'], [passageWeights, passageIds, 'passage']] as const) {
    if (w.shape[0] !== t.batch || w.shape[1] !== t.length) throw new Error(`sparseScores: ${side} weights [${w.shape}] for a [${t.batch}, ${t.length}] batch`);
  }
  if (opts.ownGroupSize !== undefined) checkOwnGroup(queryIds.batch, passageIds.batch, opts.ownGroupSize, 'sparseScores');
  const qPlan = planSlots(queryIds, special);
  const pPlan = planSlots(passageIds, special);
  const passageVocab = new Set<number>();
  for (const m of pPlan.slotOfId) for (const id of m.keys()) passageVocab.add(id);
  const column = new Map<number, number>();
  for (const m of qPlan.slotOfId) for (const id of m.keys()) if (passageVocab.has(id) && !column.has(id)) column.set(id, column.size);
  // With no shared id every score is 0; one all-zero column keeps the weights connected to the result,
  // so gradient functions see a (zero) gradient instead of "no path from x to y".
  const width = Math.max(column.size, 1);
  const tau = opts.temperature ?? 1;
  return tf.tidy(() => {
    const q = pooledOverSharedIds(slotMaxima(queryWeights, qPlan), qPlan, column, width);
    const p = pooledOverSharedIds(slotMaxima(passageWeights, pPlan), pPlan, column, width);
    let s: tf.Tensor;
    if (opts.ownGroupSize === undefined) {
      s = tf.matMul(q, p, false, true);
    } else {
      const b = queryIds.batch;
      s = tf.sum(tf.mul(tf.reshape(q, [b, 1, width]), tf.reshape(p, [b, opts.ownGroupSize, width])), 2);
    }
    return (tau === 1 ? s : tf.div(s, tau)) as tf.Tensor2D;
  });
}
