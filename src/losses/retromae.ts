/**
 * RetroMAE pre-training loss (arXiv 2205.12035; staoxiao/RetroMAE src/pretrain/modeling.py +
 * enhancedDecoder.py, FlagEmbedding research/baai_general_embedding/retromae_pretrain/modeling.py;
 * spec §6, §12.5):
 *   L_enc = mean CE of the encoder's MLM logits over the masked-input labels
 *   h     = encoder last hidden state at CLS, [B, 1, d] (the sentence embedding, not normalised)
 *   K = V = [h ; Emb(original ids)[1:]]                       content stream, the encoder's own embeddings
 *   Q     = Emb(inputs_embeds = h repeated over L)            query stream: positions from pad_id+1, type 0, LN
 *   x     = FFN(Attn(Q, K/V, position-specific mask))         one BERT layer, residual from Q (`c_head.*`)
 *   L_dec = mean CE of the MLM head on x over the decoder labels
 *   L     = L_enc + L_dec
 * The MLM head is the encoder's (RoBERTa `lm_head.*` / BERT `cls.predictions.*`) with its output matrix tied
 * to the word embeddings. Labels −100 are ignored; logits are computed only at labelled positions (the CE is
 * per position, so this is exact and spares the [B·L, V] product at unlabelled ones).
 */
import * as tf from '@tensorflow/tfjs';
import { EncoderConfig } from '../model/config';
import { attentionBlock, Batch, Dropout, embeddings, encoderForward, ffnBlock, Params } from '../model/encoder';
import { geluTanh, linear, ops } from '../model/ops';
import { crossEntropy, IGNORE_INDEX } from './cross-entropy';

export interface RetroMaeBatch {
  /** The corrupted (masked) input of the encoder. */
  encoder: Batch;
  /** [B·L] original ids at corrupted positions, −100 elsewhere. */
  encoderLabels: Int32Array;
  /** The original ids (content stream); its attention mask marks padding. */
  decoder: Batch;
  /** [B·L·L] position-specific mask: 1 where row i may attend to column j. */
  decoderAttentionMask: Int32Array | Float32Array;
  /** [B·L] ids to reconstruct, −100 at the first, the last real token and padding. */
  decoderLabels: Int32Array;
}

export interface RetroMaeOptions {
  /** Prefix of the encoder's parameters (default `roberta.` for XLM-R, `bert.` for BERT). */
  encoderPrefix?: string;
  /** Prefix of the decoder layer's parameters (default `c_head.`). */
  decoderPrefix?: string;
  /** Dropout on when set (training); the decoder draws from a stream of its own. */
  dropoutSeed?: number;
}

export interface RetroMaeOutput {
  loss: tf.Scalar;
  encoderLoss: tf.Scalar;
  decoderLoss: tf.Scalar;
  /** h_CLS of the encoder, [B, d]. */
  sentenceEmbedding: tf.Tensor2D;
}

// Far from the encoder's consecutive seeds (a few per layer), so the two dropout streams never overlap.
const DECODER_SEED_OFFSET = 1_000_003;
const FLOAT32_MIN = -3.4028234663852886e38;

function param(params: Params, name: string): tf.Tensor {
  const p = params.get(name);
  if (!p) throw new Error(`missing parameter '${name}'`);
  return p;
}

/**
 * MLM logits [N, V] for hidden rows [N, d]: RoBERTa `lm_head` (dense → exact GELU → layer_norm → tied
 * decoder + bias) when its parameters exist, else BERT `cls.predictions` (transform with the config's
 * activation, LayerNorm, tied decoder + bias).
 */
export function mlmLogits(cfg: EncoderConfig, params: Params, hidden: tf.Tensor2D, encoderPrefix: string): tf.Tensor2D {
  return tf.tidy(() => {
    const words = param(params, encoderPrefix + 'embeddings.word_embeddings.weight');
    let y: tf.Tensor;
    let bias: tf.Tensor;
    if (params.has('lm_head.dense.weight')) {
      y = ops().gelu(linear(hidden, param(params, 'lm_head.dense.weight'), param(params, 'lm_head.dense.bias')));
      y = ops().layerNorm(y, param(params, 'lm_head.layer_norm.weight'), param(params, 'lm_head.layer_norm.bias'), cfg.layerNormEps);
      bias = param(params, 'lm_head.bias');
    } else {
      const t = 'cls.predictions.transform.';
      const pre = linear(hidden, param(params, t + 'dense.weight'), param(params, t + 'dense.bias'));
      y = cfg.activation === 'gelu' ? ops().gelu(pre) : cfg.activation === 'gelu_tanh' ? geluTanh(pre) : tf.relu(pre);
      y = ops().layerNorm(y, param(params, t + 'LayerNorm.weight'), param(params, t + 'LayerNorm.bias'), cfg.layerNormEps);
      bias = param(params, 'cls.predictions.bias');
    }
    return tf.add(tf.matMul(y as tf.Tensor2D, words as tf.Tensor2D, false, true), bias) as tf.Tensor2D;
  });
}

/** Mean MLM cross-entropy of hidden states [B, L, d] against labels [B·L] (−100 ignored). */
function mlmLoss(cfg: EncoderConfig, params: Params, hidden: tf.Tensor3D, labels: Int32Array, encoderPrefix: string): tf.Scalar {
  const [b, l, d] = hidden.shape;
  if (labels.length !== b * l) throw new Error(`RetroMAE: ${labels.length} labels for a [${b}, ${l}] batch`);
  return tf.tidy(() => {
    const rows: number[] = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] !== IGNORE_INDEX) rows.push(i);
    if (rows.length === 0) return tf.scalar(0);
    const picked = tf.gather(tf.reshape(hidden, [b * l, d]), tf.tensor1d(rows, 'int32')) as tf.Tensor2D;
    return crossEntropy(mlmLogits(cfg, params, picked, encoderPrefix), rows.map((i) => labels[i]));
  });
}

export function retroMaeLoss(cfg: EncoderConfig, params: Params, batch: RetroMaeBatch, opts: RetroMaeOptions = {}): RetroMaeOutput {
  const encoderPrefix = opts.encoderPrefix ?? (cfg.family === 'bert' ? 'bert.' : 'roberta.');
  const decoderPrefix = opts.decoderPrefix ?? 'c_head.';
  const { encoder, decoder } = batch;
  if (decoder.batch !== encoder.batch) throw new Error(`RetroMAE: ${encoder.batch} encoder rows but ${decoder.batch} decoder rows`);
  const [b, l] = [decoder.batch, decoder.length];
  if (batch.decoderAttentionMask.length !== b * l * l) throw new Error(`RetroMAE: decoder attention mask has ${batch.decoderAttentionMask.length} entries, want ${b}·${l}·${l}`);
  return tf.tidy(() => {
    const hidden = encoderForward(cfg, params, encoder, { prefix: encoderPrefix, dropoutSeed: opts.dropoutSeed });
    const encoderLoss = mlmLoss(cfg, params, hidden, batch.encoderLabels, encoderPrefix);
    const d = cfg.hidden;
    const cls = tf.slice(hidden, [0, 0, 0], [b, 1, d]) as tf.Tensor3D;

    const drop = new Dropout(opts.dropoutSeed === undefined ? undefined : opts.dropoutSeed + DECODER_SEED_OFFSET);
    const embOpts = { prefix: encoderPrefix };
    const content = embeddings(cfg, params, { ids: decoder }, embOpts, drop);
    const keyValue = tf.concat([cls, tf.slice(content, [0, 1, 0], [b, l - 1, d])], 1) as tf.Tensor3D;
    const query = embeddings(cfg, params, { inputsEmbeds: tf.tile(cls, [1, l, 1]) as tf.Tensor3D }, embOpts, drop);
    const visible = tf.tensor4d(Float32Array.from(batch.decoderAttentionMask), [b, 1, l, l]);
    const addMask = tf.mul(tf.sub(1, visible), FLOAT32_MIN);
    const x = ffnBlock(cfg, params, decoderPrefix, attentionBlock(cfg, params, decoderPrefix, query, keyValue, addMask, drop), drop);
    const decoderLoss = mlmLoss(cfg, params, x, batch.decoderLabels, encoderPrefix);

    return {
      loss: tf.add(encoderLoss, decoderLoss) as tf.Scalar,
      encoderLoss,
      decoderLoss,
      sentenceEmbedding: tf.reshape(cls, [b, d]) as tf.Tensor2D,
    };
  });
}
