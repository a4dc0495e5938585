/**
 * Inference: token ids or texts → FlagEmbedding-style outputs. `dense` is the L2-normalised CLS vector,
 * `sparse` the `lexical_weights` dict (token id → max weight; special tokens and weights ≤ 0 dropped),
 * `colbert` the L2-normalised vectors of every non-pad position after CLS. Inputs are sorted by length
 * and batched so padding stays small; outputs come back in input order.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../util/errors';
import { maxInputLength } from './config';
import { encoderForward } from './encoder';
import { colbertVectors, denseEmbedding, sparseTokenWeights } from './heads';
import { l2Normalize } from '../backend/ops';
import { hasHeads, M3Model } from './m3';
import { SparseVec } from './scores';
import { padBatch } from './tokenizer';

export type OutputKind = 'dense' | 'sparse' | 'colbert';
export const OUTPUT_KINDS: OutputKind[] = ['dense', 'sparse', 'colbert'];

export interface Embedding {
  dense?: Float32Array;
  sparse?: SparseVec;
  colbert?: Float32Array[];
}

export interface EncodeOptions {
  outputs?: OutputKind[];
  maxLength?: number;
  batchSize?: number;
  /** Multiple CLS (M3 paper appendix B.2; inference only): a CLS before every 256 content tokens; dense = normalised mean of their states. */
  mcls?: boolean;
  onBatch?: (done: number, total: number, tokens: number) => void;
}

export const MCLS_STRIDE = 256;

/**
 * Special-token ids to drop from lexical weights: the tokenizer's; without a tokenizer, the ids config.json
 * names plus each framed sequence's own first (CLS) and last (SEP) id.
 */
function specialIdsFor(m: M3Model, seq: number[]): Set<number> {
  if (m.tokenizer) return new Set(m.tokenizer.specialIds);
  const keys = ['pad_token_id', 'bos_token_id', 'eos_token_id', 'cls_token_id', 'sep_token_id', 'unk_token_id'];
  const ids = keys.map((k) => m.config.raw[k]).filter((v): v is number => Number.isInteger(v));
  return new Set([...ids, seq[0], seq[seq.length - 1]]);
}

function clsId(m: M3Model, seq: number[]): number {
  return m.tokenizer ? m.tokenizer.clsId : seq[0];
}

/** Inserts a CLS before every MCLS_STRIDE content tokens after the first; returns ids and CLS positions. */
export function insertMcls(seq: number[], cls: number, maxLength: number): { ids: number[]; clsPositions: number[] } {
  const ids = [seq[0]];
  const clsPositions = [0];
  const body = seq.slice(1);
  for (let i = 0; i < body.length; i++) {
    if (i > 0 && i % MCLS_STRIDE === 0 && i < body.length - 1) {
      clsPositions.push(ids.length);
      ids.push(cls);
    }
    ids.push(body[i]);
  }
  if (ids.length > maxLength) {
    ids.length = maxLength - 1;
    ids.push(seq[seq.length - 1]);
    while (clsPositions[clsPositions.length - 1] >= maxLength - 1) clsPositions.pop();
  }
  return { ids, clsPositions };
}

/** Encodes token-id sequences (each already framed with CLS … SEP). */
export async function encodeIds(m: M3Model, sequences: number[][], opts: EncodeOptions = {}): Promise<Embedding[]> {
  const outputs = opts.outputs ?? ['dense'];
  if ((outputs.includes('sparse') || outputs.includes('colbert')) && !hasHeads(m)) {
    throw new UserError(`${m.source}: has no colbert_linear/sparse_linear heads, so only 'dense' can be returned`);
  }
  const limit = Math.min(opts.maxLength ?? Infinity, maxInputLength(m.config));
  const batchSize = opts.batchSize ?? 32;
  const prepared = sequences.map((seq, i) => {
    if (seq.length === 0) throw new UserError(`input ${i + 1}: empty token sequence`);
    for (const id of seq) {
      if (!Number.isInteger(id) || id < 0 || id >= m.config.vocabSize) throw new UserError(`input ${i + 1}: token id ${id} is outside the vocabulary (0..${m.config.vocabSize - 1})`);
    }
    if (opts.mcls) return insertMcls(seq, clsId(m, seq), limit);
    return { ids: seq.length > limit ? seq.slice(0, limit) : seq, clsPositions: [0] };
  });
  const order = prepared.map((_, i) => i).sort((a, b) => prepared[b].ids.length - prepared[a].ids.length);
  const results: Embedding[] = new Array(sequences.length);
  for (let start = 0; start < order.length; start += batchSize) {
    const idx = order.slice(start, start + batchSize);
    const seqs = idx.map((i) => prepared[i].ids);
    const b = padBatch(seqs, m.config.padTokenId);
    type Outs = { dense: tf.Tensor | null; weights: tf.Tensor | null; colbert: tf.Tensor | null };
    const { dense, weights, colbert } = tf.tidy((() => {
      const h = encoderForward(m.config, m.params, b);
      const mask = tf.tensor2d(b.attentionMask, [b.batch, b.length], 'int32');
      let d: tf.Tensor | null = null;
      if (outputs.includes('dense')) {
        d = opts.mcls ? mclsDense(h, idx.map((i) => prepared[i].clsPositions)) : denseEmbedding(h);
      }
      const w = outputs.includes('sparse') ? sparseTokenWeights(h, m.params.get('sparse_linear.weight')!, m.params.get('sparse_linear.bias')!, mask) : null;
      const c = outputs.includes('colbert') ? colbertVectors(h, mask, m.params.get('colbert_linear.weight')!, m.params.get('colbert_linear.bias')!) : null;
      return { dense: d, weights: w, colbert: c };
    }) as () => tf.TensorContainer) as unknown as Outs;
    const [dv, wv, cv] = await Promise.all([dense?.data(), weights?.data(), colbert?.data()]);
    tf.dispose([dense, weights, colbert].filter((t): t is tf.Tensor => t !== null));
    idx.forEach((orig, row) => {
      const e: Embedding = {};
      const n = seqs[row].length;
      if (dv) {
        const dim = dv.length / b.batch;
        e.dense = (dv as Float32Array).slice(row * dim, (row + 1) * dim);
      }
      if (wv) e.sparse = lexicalWeights(seqs[row], (wv as Float32Array).subarray(row * b.length, row * b.length + n), specialIdsFor(m, seqs[row]));
      if (cv) {
        const dim = cv.length / (b.batch * (b.length - 1));
        const cls = new Set(prepared[orig].clsPositions);
        e.colbert = [];
        for (let j = 1; j < n; j++) {
          if (cls.has(j)) continue; // inserted MCLS tokens are not content
          const off = (row * (b.length - 1) + (j - 1)) * dim;
          e.colbert.push((cv as Float32Array).slice(off, off + dim));
        }
      }
      results[orig] = e;
    });
    opts.onBatch?.(Math.min(start + batchSize, order.length), order.length, b.batch * b.length);
  }
  return results;
}

/** Normalised mean of the hidden states at each row's CLS positions. */
function mclsDense(h: tf.Tensor3D, positions: number[][]): tf.Tensor {
  const [B, L] = h.shape;
  const w = new Float32Array(B * L);
  positions.forEach((ps, i) => ps.forEach((p) => (w[i * L + p] = 1 / ps.length)));
  const mean = tf.sum(tf.mul(h, tf.tensor3d(w, [B, L, 1])), 1);
  return l2Normalize(mean);
}

/** FlagEmbedding's `_process_token_weights`: max weight per token id, specials and weights ≤ 0 dropped. */
export function lexicalWeights(ids: number[], weights: Float32Array, special: Set<number>): SparseVec {
  const out: SparseVec = {};
  for (let j = 0; j < ids.length; j++) {
    const w = weights[j];
    if (special.has(ids[j]) || !(w > 0)) continue;
    const k = String(ids[j]);
    if (out[k] === undefined || w > out[k]) out[k] = w;
  }
  return out;
}

/** Encodes texts with the model's tokenizer (CLS … SEP, truncated to maxLength). */
export async function encodeTexts(m: M3Model, texts: string[], opts: EncodeOptions = {}): Promise<Embedding[]> {
  if (!m.tokenizer) throw new UserError(`${m.source}: no tokenizer; pass a tokenizer dir to encode text`);
  const limit = Math.min(opts.maxLength ?? 8192, maxInputLength(m.config));
  return encodeIds(m, texts.map((t) => m.tokenizer!.encode(t, opts.mcls ? 1 << 30 : limit)), opts);
}
