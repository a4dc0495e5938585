/**
 * The BERT / XLM-RoBERTa encoder as plain functions over a parameter map with HF names
 * (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...), weights in
 * PyTorch's [out, in] layout so checkpoints load without reshuffling. Dropout runs only in training and
 * draws from seeds the caller derives (seed, step, micro-batch), so runs are reproducible.
 */
import * as tf from '@tensorflow/tfjs';
import { EncoderConfig } from './config';
import { deriveSeed, tfSeed } from '../util/rng';
import { TokenBatch } from '../util/token-batch';
import { ENCODER_LAYER_WEIGHTS, EncoderLayerWeights, FLOAT32_MIN, geluTanh, linear, ops } from '../backend/ops';

export type Params = Map<string, tf.Tensor>;

/** A tokenized, right-padded batch on the host. */

export interface ForwardOptions {
  /** Parameter-name prefix, e.g. `roberta.` inside a RetroMAE checkpoint. */
  prefix?: string;
  /** Dropout on when set (training). */
  dropoutSeed?: number;
  /** Index of this batch's first row in the whole batch (GradCache sub-batches), so masks do not depend on the split. */
  dropoutRowOffset?: number;
  /** This batch's word-embedding rows [B·L, hidden] from `wordEmbeddings` (one lookup shared by several batches). */
  words?: tf.Tensor2D;
  /** Token types [B·L] of a text pair (0 = first text, 1 = second), as HF's token_type_ids; absent = all 0. */
  tokenTypeIds?: Int32Array;
}

/**
 * Dropout whose mask for row r of the k-th call is drawn from deriveSeed(seed, k, rowOffset + r): the
 * same rows get the same masks however a batch is split into sub-batches. A no-op when not training.
 */
export class Dropout {
  private calls = 0;
  constructor(private readonly seed: number | undefined, private readonly rowOffset = 0) {}
  /** Whether apply() would change anything (training with a positive rate). */
  active(rate: number): boolean {
    return this.seed !== undefined && rate > 0;
  }
  /** The next call's keep mask for a tensor of `shape`, scaled by 1/(1 − rate); null when not active. */
  mask(shape: number[], rate: number): tf.Tensor | null {
    if (!this.active(rate)) return null;
    const call = this.calls++;
    return tf.tidy(() => {
      const [rows, ...rest] = shape;
      const draws = Array.from({ length: rows }, (_, r) => tf.randomUniform([1, ...rest], 0, 1, 'float32', tfSeed(deriveSeed(this.seed!, call, this.rowOffset + r))));
      return tf.mul(tf.cast(tf.greaterEqual(rows === 1 ? draws[0] : tf.concat(draws, 0), rate), 'float32'), 1 / (1 - rate));
    });
  }
  apply(x: tf.Tensor, rate: number): tf.Tensor {
    const keep = this.mask(x.shape, rate);
    if (!keep) return x;
    return tf.tidy(() => tf.mul(x, keep));
  }
}

/** A named parameter, or an error naming what is missing. */
export function param(params: Params, name: string): tf.Tensor {
  const p = params.get(name);
  if (!p) throw new Error(`missing parameter '${name}'`);
  return p;
}

/** Position ids: BERT counts from 0; XLM-R counts non-pad tokens from pad_id + 1 and gives pads pad_id. */
export function positionIds(cfg: EncoderConfig, b: TokenBatch): Int32Array {
  const out = new Int32Array(b.batch * b.length);
  for (let i = 0; i < b.batch; i++) {
    let count = 0;
    for (let j = 0; j < b.length; j++) {
      const k = i * b.length + j;
      if (cfg.family === 'bert') out[k] = j;
      else if (b.inputIds[k] !== cfg.padTokenId) out[k] = ++count + cfg.padTokenId;
      else out[k] = cfg.padTokenId;
    }
  }
  return out;
}

/**
 * Additive attention mask [B, 1, 1, L]: 0 where visible, float32 min where padded (as HF); null when nothing
 * is padded, as HF's SDPA path drops an all-visible mask (the fused kernels then need no bias).
 */
export function additiveMask(b: TokenBatch): tf.Tensor4D | null {
  if (b.attentionMask.every((v) => v !== 0)) return null;
  const m = new Float32Array(b.batch * b.length);
  for (let i = 0; i < m.length; i++) m[i] = b.attentionMask[i] ? 0 : FLOAT32_MIN;
  return tf.tensor4d(m, [b.batch, 1, 1, b.length]);
}

/**
 * Word-embedding rows [B·L, hidden] of several batches from one gather. Each gather's gradient is a dense
 * [vocab, hidden] tensor and TF.js sums the gradients of every use into a new one: a gather per batch holds
 * three such tensors at once (3 GB at XLM-R's 250,002 × 1,024), one shared gather holds one.
 */
export function wordEmbeddings(params: Params, batches: TokenBatch[], prefix = ''): tf.Tensor2D[] {
  return tf.tidy(() => {
    const ids = new Int32Array(batches.reduce((n, b) => n + b.inputIds.length, 0));
    let at = 0;
    for (const b of batches) {
      ids.set(b.inputIds, at);
      at += b.inputIds.length;
    }
    const rows = tf.gather(param(params, prefix + 'embeddings.word_embeddings.weight'), tf.tensor1d(ids, 'int32')) as tf.Tensor2D;
    return batches.length === 1 ? [rows] : tf.split(rows, batches.map((b) => b.inputIds.length), 0);
  });
}

/**
 * word + position + token-type(0) embeddings, LayerNorm, dropout. With `inputsEmbeds` (RetroMAE's query
 * stream) positions run from the first non-pad position for every row.
 */
export function embeddings(
  cfg: EncoderConfig, params: Params, input: { ids: TokenBatch } | { inputsEmbeds: tf.Tensor3D }, opts: ForwardOptions = {}, drop = new Dropout(opts.dropoutSeed, opts.dropoutRowOffset),
): tf.Tensor3D {
  const p = (opts.prefix ?? '') + 'embeddings.';
  return tf.tidy(() => {
    let x: tf.Tensor;
    let pos: Int32Array;
    let batch: number;
    let length: number;
    if ('ids' in input) {
      ({ batch, length } = input.ids);
      x = opts.words ?? tf.gather(param(params, p + 'word_embeddings.weight'), tf.tensor1d(input.ids.inputIds, 'int32'));
      pos = positionIds(cfg, input.ids);
    } else {
      [batch, length] = input.inputsEmbeds.shape;
      x = tf.reshape(input.inputsEmbeds, [batch * length, cfg.hidden]);
      const start = cfg.family === 'xlm-roberta' ? cfg.padTokenId + 1 : 0;
      pos = new Int32Array(batch * length).map((_, k) => start + (k % length));
    }
    x = tf.add(x, tf.gather(param(params, p + 'position_embeddings.weight'), tf.tensor1d(pos, 'int32')));
    const types = 'ids' in input ? opts.tokenTypeIds : undefined;
    const typeTable = param(params, p + 'token_type_embeddings.weight');
    // without token type ids (single texts) every row is type 0: add row 0 (the slice keeps its gradient)
    x = tf.add(x, types ? tf.gather(typeTable, tf.tensor1d(types, 'int32')) : tf.slice(typeTable, [0, 0], [1, cfg.hidden]));
    x = ops().layerNorm(x, param(params, p + 'LayerNorm.weight'), param(params, p + 'LayerNorm.bias'), cfg.layerNormEps);
    return drop.apply(tf.reshape(x, [batch, length, cfg.hidden]), cfg.hiddenDropout) as tf.Tensor3D;
  });
}

/**
 * Self-attention block (queries from `qIn`, keys/values from `kvIn`), output projection, dropout and the
 * residual LayerNorm taken from `qIn`. `addMask` broadcasts to [B, heads, Lq, Lk]; null = nothing masked.
 */
export function attentionBlock(
  cfg: EncoderConfig, params: Params, prefix: string, qIn: tf.Tensor3D, kvIn: tf.Tensor3D, addMask: tf.Tensor | null, drop: Dropout,
): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, lq, d] = qIn.shape;
    const lk = kvIn.shape[1];
    const h = cfg.heads;
    const hd = d / h;
    const p = prefix + 'attention.';
    const proj = (x: tf.Tensor, name: string) => linear(x, param(params, `${p}self.${name}.weight`), param(params, `${p}self.${name}.bias`));
    // Scale q before the product (cheaper than scaling the [Lq, Lk] scores); kᵀ is materialised by one
    // transpose so the batched matmul runs without transpose flags (slow on wasm).
    const heads = (x: tf.Tensor, len: number) => tf.transpose(tf.reshape(x, [b, len, h, hd]), [0, 2, 1, 3]);
    let ctx: tf.Tensor;
    const fused = ops().attention;
    if (fused && !drop.active(cfg.attentionDropout)) {
      ctx = fused(proj(qIn, 'query'), proj(kvIn, 'key'), proj(kvIn, 'value'), addMask, 1 / Math.sqrt(hd), h);
    } else {
      const v = heads(proj(kvIn, 'value'), lk);
      const q = heads(tf.mul(proj(qIn, 'query'), 1 / Math.sqrt(hd)), lq);
      const kT = tf.transpose(tf.reshape(proj(kvIn, 'key'), [b, lk, h, hd]), [0, 2, 3, 1]);
      const scores = tf.matMul(q as tf.Tensor4D, kT as tf.Tensor4D);
      const probs = drop.apply(tf.softmax(addMask ? tf.add(scores, addMask) : scores), cfg.attentionDropout);
      ctx = tf.reshape(tf.transpose(tf.matMul(probs as tf.Tensor4D, v as tf.Tensor4D), [0, 2, 1, 3]), [b, lq, d]);
    }
    const out = drop.apply(linear(ctx, param(params, p + 'output.dense.weight'), param(params, p + 'output.dense.bias')), cfg.hiddenDropout);
    return ops().layerNorm(out, param(params, p + 'output.LayerNorm.weight'), param(params, p + 'output.LayerNorm.bias'), cfg.layerNormEps, qIn) as tf.Tensor3D;
  });
}

/** Feed-forward block: intermediate dense + activation, output dense, dropout, residual LayerNorm. */
export function ffnBlock(cfg: EncoderConfig, params: Params, prefix: string, x: tf.Tensor3D, drop: Dropout): tf.Tensor3D {
  return tf.tidy(() => {
    const pre = linear(x, param(params, prefix + 'intermediate.dense.weight'), param(params, prefix + 'intermediate.dense.bias'));
    const act = cfg.activation === 'gelu' ? ops().gelu(pre) : cfg.activation === 'gelu_tanh' ? geluTanh(pre) : tf.relu(pre);
    const out = drop.apply(linear(act, param(params, prefix + 'output.dense.weight'), param(params, prefix + 'output.dense.bias')), cfg.hiddenDropout);
    return ops().layerNorm(out, param(params, prefix + 'output.LayerNorm.weight'), param(params, prefix + 'output.LayerNorm.bias'), cfg.layerNormEps, x) as tf.Tensor3D;
  });
}

/**
 * One encoder layer (attention block, then FFN block) over one or more batches: where the backend has a fused
 * layer (torch) one op each way for all of them, else the composite blocks per batch. Both draw the same
 * dropout masks in the same order.
 */
export function encoderLayer(cfg: EncoderConfig, params: Params, prefix: string, xs: tf.Tensor3D[], masks: (tf.Tensor | null)[], drops: Dropout[]): tf.Tensor3D[] {
  const fused = ops().encoderLayer;
  if (!fused) return xs.map((x, i) => ffnBlock(cfg, params, prefix, attentionBlock(cfg, params, prefix, x, x, masks[i], drops[i]), drops[i]));
  return tf.tidy(() => {
    const weights = Object.fromEntries(ENCODER_LAYER_WEIGHTS.map((n) => [n, param(params, prefix + n)])) as EncoderLayerWeights;
    const dropout = xs.map((x, i) => ({
      probs: drops[i].mask([x.shape[0], cfg.heads, x.shape[1], x.shape[1]], cfg.attentionDropout),
      attention: drops[i].mask(x.shape, cfg.hiddenDropout),
      ffn: drops[i].mask(x.shape, cfg.hiddenDropout),
    }));
    return fused(xs, weights, masks, dropout, { eps: cfg.layerNormEps, heads: cfg.heads, activation: cfg.activation });
  });
}

/**
 * last_hidden_state [B, L, hidden] of each batch, the batches taken through each layer together (on torch one
 * op per layer for all of them, whose parameter gradients are summed natively). The batches share a prefix.
 */
export function encoderForwardMany(cfg: EncoderConfig, params: Params, batches: TokenBatch[], opts: ForwardOptions[]): tf.Tensor3D[] {
  const prefix = opts[0]?.prefix ?? '';
  if (opts.some((o) => (o.prefix ?? '') !== prefix)) throw new Error('encoderForwardMany: the batches must share a parameter prefix');
  return tf.tidy(() => {
    const drops = batches.map((_, i) => new Dropout(opts[i]?.dropoutSeed, opts[i]?.dropoutRowOffset));
    const masks = batches.map(additiveMask);
    let xs = batches.map((b, i) => embeddings(cfg, params, { ids: b }, opts[i] ?? {}, drops[i]));
    for (let i = 0; i < cfg.layers; i++) xs = encoderLayer(cfg, params, `${prefix}encoder.layer.${i}.`, xs, masks, drops);
    return xs;
  });
}

/** last_hidden_state [B, L, hidden] of the encoder. */
export function encoderForward(cfg: EncoderConfig, params: Params, b: TokenBatch, opts: ForwardOptions = {}): tf.Tensor3D {
  return encoderForwardMany(cfg, params, [b], [opts])[0];
}
