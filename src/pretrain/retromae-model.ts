/**
 * RetroMAE's trainable parts around an encoder: the encoder under its MLM-model prefix (`roberta.` /
 * `bert.`), the MLM head tied to the word embeddings (RoBERTa `lm_head.*`, BERT `cls.predictions.*`) and
 * the one-layer decoder `c_head.*`, initialised as HF's `_init_weights` (N(0, initializer_range), zero
 * bias, LayerNorm 1/0). After pretraining the encoder is saved as a plain HF model dir and the decoder
 * and MLM head beside it, in `retromae_decoder.safetensors`, so pretraining can continue later.
 */
import * as tf from '@tensorflow/tfjs';
import { EncoderConfig } from '../model/config';
import { Params } from '../model/encoder';
import { HostTensor, TensorMap } from '../model/weights/types';

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
      out.set(name, tf.tidy(() => tf.variable(tf.tensor(t.data, t.shape, 'float32')))); // the variable alone owns the data
      continue;
    }
    const isNorm = /LayerNorm|layer_norm/.test(name);
    const init = () => (shape.length === 2 ? tf.randomNormal(shape, 0, std, 'float32', s++) : isNorm && name.endsWith('.weight') ? tf.ones(shape) : tf.zeros(shape));
    out.set(name, tf.tidy(() => tf.variable(init())));
  }
  return out;
}

/** The MLM head and decoder tensors (what DECODER_FILE holds). */
export function decoderTensors(params: Map<string, tf.Variable>, cfg: EncoderConfig): TensorMap {
  const out: TensorMap = new Map();
  for (const name of Object.keys(retroMaeHeadShapes(cfg))) {
    const v = params.get(name)!;
    out.set(name, { dtype: 'float32', shape: v.shape.slice(), data: v.dataSync() as Float32Array } as HostTensor);
  }
  return out;
}

/**
 * Grows an absolute position table (stage 1 of the paper: XLM-R 514 → 8194 rows) by repeating the trained
 * rows after the reserved ones (XLM-R reserves pad_id + 1 rows), and updates the config.
 */
export function extendPositions(cfg: EncoderConfig, params: Params, newMax: number): void {
  const name = 'embeddings.position_embeddings.weight';
  const old = params.get(name) as tf.Variable;
  const [rows, d] = old.shape;
  if (newMax <= rows) return;
  const reserved = cfg.family === 'xlm-roberta' ? cfg.padTokenId + 1 : 0;
  const src = old.dataSync();
  const out = new Float32Array(newMax * d);
  out.set(src);
  for (let r = rows; r < newMax; r++) {
    const from = reserved + ((r - reserved) % (rows - reserved));
    out.set(src.subarray(from * d, (from + 1) * d), r * d);
  }
  const grown = tf.tidy(() => tf.variable(tf.tensor2d(out, [newMax, d]), old.trainable));
  old.dispose();
  params.set(name, grown);
  cfg.maxPositions = newMax;
  cfg.raw.max_position_embeddings = newMax;
}
