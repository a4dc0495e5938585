/**
 * `encoder` cases: a model dir (HF config + safetensors or pytorch_model.bin, heads as .pt) and token ids;
 * checks last_hidden_state and the M3 inference outputs computed by the library's own functions.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { encoderForward } from '../../src/model/encoder';
import { colbertVectors, denseEmbedding, sparseTokenWeights } from '../../src/model/heads';
import { disposeModel, loadModel } from '../../src/model/m3';
import { expectClose, GoldenCase, KindRunner } from './common';

export const runEncoderCase: KindRunner = async (c: GoldenCase) => {
  const model = loadModel(path.join(c.dir, c.spec.model_dir ?? 'model'));
  try {
    const ids = c.tensors.get('input_ids')!;
    const mask = c.tensors.get('attention_mask')!;
    const [B, L] = ids.shape;
    const batch = { inputIds: Int32Array.from(ids.data), attentionMask: Int32Array.from(mask.data), batch: B, length: L };
    const specials = new Set<number>(c.spec.params?.special_token_ids ?? []);
    const vocab: number = c.spec.params?.vocab_size ?? model.config.vocabSize;
    const got = tf.tidy(() => {
      const h = encoderForward(model.config, model.params, batch);
      const m = tf.tensor2d(batch.attentionMask, [B, L], 'int32');
      const p = (n: string) => model.params.get(n)!;
      return {
        last_hidden_state: h.dataSync(),
        dense_vecs: denseEmbedding(h).dataSync(),
        sparse_token_weights: sparseTokenWeights(h, p('sparse_linear.weight'), p('sparse_linear.bias'), m).dataSync(),
        colbert_vecs: colbertVectors(h, m, p('colbert_linear.weight'), p('colbert_linear.bias')).dataSync(),
      };
    });
    // sparse_vecs: the reference's [B, V] scatter-max with special ids zeroed, built from the token weights.
    const sparse = new Float32Array(B * vocab);
    for (let i = 0; i < B; i++) {
      for (let j = 0; j < L; j++) {
        const id = batch.inputIds[i * L + j];
        const w = got.sparse_token_weights[i * L + j];
        if (!specials.has(id) && w > sparse[i * vocab + id]) sparse[i * vocab + id] = w;
      }
    }
    const all: Record<string, ArrayLike<number>> = { ...got, sparse_vecs: sparse };
    for (const name of c.spec.expected ?? []) {
      if (!(name in all)) throw new Error(`encoder case expects '${name}', which this runner does not produce`);
      expectClose(name, all[name], c.tensors.get(name)!, c.spec.tolerance);
    }
  } finally {
    disposeModel(model);
  }
};
