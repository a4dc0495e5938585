/**
 * RetroMAE (arXiv 2205.12035; staoxiao/RetroMAE src/pretrain/modeling.py + enhancedDecoder.py, FlagEmbedding
 * research/baai_general_embedding/retromae_pretrain/modeling.py): its trainable parts around an encoder: the encoder under its MLM-model prefix (`roberta.` /
 * `bert.`), the MLM head tied to the word embeddings (RoBERTa `lm_head.*`, BERT `cls.predictions.*`) and
 * the one-layer decoder `c_head.*`, initialised as HF's `_init_weights` (N(0, initializer_range), zero
 * bias, LayerNorm 1/0). After pretraining the encoder is saved as a plain HF model dir and the decoder
 * and MLM head beside it, in `retromae_decoder.safetensors`, so pretraining can continue later.
 */
import * as tf from '@tensorflow/tfjs';
import { FLOAT32_MIN, geluTanh, linear, ops } from '../backend/ops';
import { EncoderConfig } from './config';
import { attentionBlock, Dropout, embeddings, encoderForward, ffnBlock, param, Params, wordEmbeddings } from './encoder';
import { TokenBatch } from '../util/token-batch';
import { fromHost, ownedVariable, toHost } from './variables';
import { TensorMap } from './weights/types';
import type { MlmHead } from '../losses/retromae';
import { tfSeed } from '../util/rng';

export const DECODER_FILE = 'retromae_decoder.safetensors';

export const encoderPrefix = (cfg: EncoderConfig): string => (cfg.family === 'bert' ? 'bert.' : 'roberta.');

/** Shapes of the MLM head and decoder layer for this config. */
export function retroMaeHeadShapes(cfg: EncoderConfig): Record<string, number[]> {
  const d = cfg.hidden;
  const shapes: Record<string, number[]> = {};
  if (cfg.family === 'bert') {
    Object.assign(shapes, {
      'cls.predictions.transform.dense.weight': [d, d], 'cls.predictions.transform.dense.bias': [d],
      'cls.predictions.transform.LayerNorm.weight': [d], 'cls.predictions.transform.LayerNorm.bias': [d],
      'cls.predictions.bias': [cfg.vocabSize],
    });
  } else {
    Object.assign(shapes, {
      'lm_head.dense.weight': [d, d], 'lm_head.dense.bias': [d],
      'lm_head.layer_norm.weight': [d], 'lm_head.layer_norm.bias': [d], 'lm_head.bias': [cfg.vocabSize],
    });
  }
  const c = 'c_head.';
  for (const m of ['query', 'key', 'value']) {
    shapes[`${c}attention.self.${m}.weight`] = [d, d];
    shapes[`${c}attention.self.${m}.bias`] = [d];
  }
  Object.assign(shapes, {
    [`${c}attention.output.dense.weight`]: [d, d], [`${c}attention.output.dense.bias`]: [d],
    [`${c}attention.output.LayerNorm.weight`]: [d], [`${c}attention.output.LayerNorm.bias`]: [d],
    [`${c}intermediate.dense.weight`]: [cfg.intermediate, d], [`${c}intermediate.dense.bias`]: [cfg.intermediate],
    [`${c}output.dense.weight`]: [d, cfg.intermediate], [`${c}output.dense.bias`]: [d],
    [`${c}output.LayerNorm.weight`]: [d], [`${c}output.LayerNorm.bias`]: [d],
  });
  return shapes;
}

/**
 * The RetroMAE parameter map: encoder params re-keyed under the prefix (same variables, no copy), plus the
 * head/decoder from `saved` (a previous run's decoder file or a checkpoint's MLM head) or freshly initialised.
 */
export function retroMaeParams(cfg: EncoderConfig, encoder: Params, saved: TensorMap, seed: number): Map<string, tf.Variable> {
  const prefix = encoderPrefix(cfg);
  const out = new Map<string, tf.Variable>();
  for (const [k, v] of encoder) out.set(prefix + k, v as tf.Variable);
  const std = Number(cfg.raw.initializer_range ?? 0.02);
  let s = seed;
  for (const [name, shape] of Object.entries(retroMaeHeadShapes(cfg))) {
    const t = saved.get(name);
    if (t && t.shape.join() === shape.join()) {
      out.set(name, ownedVariable(() => fromHost(t)));
      continue;
    }
    const isNorm = /LayerNorm|layer_norm/.test(name);
    const init = () => (shape.length === 2 ? tf.randomNormal(shape, 0, std, 'float32', tfSeed(s++)) : isNorm && name.endsWith('.weight') ? tf.ones(shape) : tf.zeros(shape));
    out.set(name, ownedVariable(init));
  }
  return out;
}

/** The MLM head and decoder tensors (what DECODER_FILE holds). */
export function decoderTensors(params: Map<string, tf.Variable>, cfg: EncoderConfig): TensorMap {
  const out: TensorMap = new Map();
  for (const name of Object.keys(retroMaeHeadShapes(cfg))) {
    out.set(name, toHost(params.get(name)!));
  }
  return out;
}

export interface RetroMaeBatch {
  /** The corrupted (masked) input of the encoder. */
  encoder: TokenBatch;
  /** [B·L] original ids at corrupted positions, −100 elsewhere. */
  encoderLabels: Int32Array;
  /** The original ids (content stream); its attention mask marks padding. */
  decoder: TokenBatch;
  /** [B·L·L] position-specific mask: 1 where row i may attend to column j. */
  decoderAttentionMask: Int32Array | Float32Array;
  /** [B·L] ids to reconstruct, −100 at the first, the last real token and padding. */
  decoderLabels: Int32Array;
}

export interface RetroMaeForwardOptions {
  /** Prefix of the encoder's parameters (default `roberta.` for XLM-R, `bert.` for BERT). */
  encoderPrefix?: string;
  /** Prefix of the decoder layer's parameters (default `c_head.`). */
  decoderPrefix?: string;
  /** Dropout on when set (training); the decoder draws from a stream of its own. */
  dropoutSeed?: number;
  /** Global index of the batch's first row (data parallel), as masks are drawn per row. */
  dropoutRowOffset?: number;
}

export interface RetroMaeHidden {
  /** The encoder's last hidden state over the corrupted input, [B, L, d]. */
  encoder: tf.Tensor3D;
  /** The enhanced decoder's output, [B, L, d]. */
  decoder: tf.Tensor3D;
  /** h_CLS of the encoder, [B, d] (the sentence embedding, not normalised). */
  sentenceEmbedding: tf.Tensor2D;
}

// Far from the encoder's consecutive seeds (a few per layer), so the two dropout streams never overlap.
const DECODER_SEED_OFFSET = 1_000_003;

/**
 * The MLM head: RoBERTa `lm_head` (dense → exact GELU → layer_norm) when its parameters exist, else BERT
 * `cls.predictions` (transform with the config's activation, LayerNorm); then the decoder, tied to the word
 * embedding table, plus the head's bias. Logits = head(h)·Eᵀ + b.
 */
export function mlmHead(cfg: EncoderConfig, params: Params, prefix = encoderPrefix(cfg)): MlmHead {
  const roberta = params.has('lm_head.dense.weight');
  const t = roberta ? 'lm_head.' : 'cls.predictions.transform.';
  const norm = roberta ? 'layer_norm' : 'LayerNorm';
  const transform = (rows: tf.Tensor2D): tf.Tensor2D => tf.tidy(() => {
    const pre = linear(rows, param(params, t + 'dense.weight'), param(params, t + 'dense.bias'));
    const y = roberta || cfg.activation === 'gelu' ? ops().gelu(pre) : cfg.activation === 'gelu_tanh' ? geluTanh(pre) : tf.relu(pre);
    return ops().layerNorm(y, param(params, `${t}${norm}.weight`), param(params, `${t}${norm}.bias`), cfg.layerNormEps) as tf.Tensor2D;
  });
  return {
    transform,
    weight: param(params, prefix + 'embeddings.word_embeddings.weight') as tf.Tensor2D,
    bias: param(params, roberta ? 'lm_head.bias' : 'cls.predictions.bias') as tf.Tensor1D,
  };
}

/**
 * The encoder over the corrupted input, then the enhanced decoder:
 *   h     = encoder last hidden state at CLS, [B, 1, d]
 *   K = V = [h ; Emb(original ids)[1:]]                       content stream, the encoder's own embeddings
 *   Q     = Emb(inputs_embeds = h repeated over L)            query stream: positions from pad_id+1, type 0, LN
 *   x     = FFN(Attn(Q, K/V, position-specific mask))         one BERT layer, residual from Q (`c_head.*`)
 */
export function retroMaeForward(cfg: EncoderConfig, params: Params, batch: RetroMaeBatch, opts: RetroMaeForwardOptions = {}): RetroMaeHidden {
  const prefix = opts.encoderPrefix ?? encoderPrefix(cfg);
  const decoderPrefix = opts.decoderPrefix ?? 'c_head.';
  const { encoder, decoder } = batch;
  if (decoder.batch !== encoder.batch) throw new Error(`RetroMAE: ${encoder.batch} encoder rows but ${decoder.batch} decoder rows`);
  const [b, l] = [decoder.batch, decoder.length];
  if (batch.decoderAttentionMask.length !== b * l * l) throw new Error(`RetroMAE: decoder attention mask has ${batch.decoderAttentionMask.length} entries, want ${b}·${l}·${l}`);
  return tf.tidy(() => {
    const [encoderWords, decoderWords] = wordEmbeddings(params, [encoder, decoder], prefix);
    const hidden = encoderForward(cfg, params, encoder, { prefix, dropoutSeed: opts.dropoutSeed, dropoutRowOffset: opts.dropoutRowOffset, words: encoderWords });
    const d = cfg.hidden;
    const cls = tf.slice(hidden, [0, 0, 0], [b, 1, d]) as tf.Tensor3D;
    const drop = new Dropout(opts.dropoutSeed === undefined ? undefined : opts.dropoutSeed + DECODER_SEED_OFFSET, opts.dropoutRowOffset);
    const embOpts = { prefix };
    const content = embeddings(cfg, params, { ids: decoder }, { ...embOpts, words: decoderWords }, drop);
    const keyValue = tf.concat([cls, tf.slice(content, [0, 1, 0], [b, l - 1, d])], 1) as tf.Tensor3D;
    const query = embeddings(cfg, params, { inputsEmbeds: tf.tile(cls, [1, l, 1]) as tf.Tensor3D }, embOpts, drop);
    const visible = tf.tensor4d(Float32Array.from(batch.decoderAttentionMask), [b, 1, l, l]);
    const addMask = tf.mul(tf.sub(1, visible), FLOAT32_MIN);
    const x = ffnBlock(cfg, params, decoderPrefix, attentionBlock(cfg, params, decoderPrefix, query, keyValue, addMask, drop), drop);
    return { encoder: hidden, decoder: x as tf.Tensor3D, sentenceEmbedding: tf.reshape(cls, [b, d]) as tf.Tensor2D };
  });
}
