/**
 * One RetroMAE micro-step's pieces: the masked inputs of a batch of packed blocks (src/pretrain/masking.ts,
 * seeded per row) and the objective, the forward pass of src/model/retromae.ts under the loss of
 * src/losses/retromae.ts.
 */
import * as tf from '@tensorflow/tfjs';
import { retroMaeLoss, RetroMaeLoss } from '../losses/retromae';
import { EncoderConfig } from '../model/config';
import { Params } from '../model/encoder';
import { TokenBatch } from '../util/token-batch';
import { encoderPrefix, mlmHead, RetroMaeBatch, retroMaeForward, RetroMaeForwardOptions } from '../model/retromae';
import { Tokenizer } from '../model/tokenizer';
import { createRng, deriveSeed } from '../util/rng';
import { IGNORE, RetroMaeMasking, retroMaeExample } from './masking';

/** RetroMAE inputs of a padded batch of packed blocks; row r draws from deriveSeed(seed, r). */
/** `rowOffset`: the global index of the first row (data parallel), since masks are drawn per row. */
export function retroMaeBatch(ids: TokenBatch, tok: Tokenizer, masking: RetroMaeMasking, seed: number, rowOffset = 0): RetroMaeBatch {
  const { batch: B, length: L } = ids;
  const encIds = new Int32Array(B * L);
  const encLabels = new Int32Array(B * L).fill(IGNORE);
  const decLabels = new Int32Array(B * L).fill(IGNORE);
  const visible = new Uint8Array(B * L * L);
  for (let r = 0; r < B; r++) {
    const row = ids.inputIds.subarray(r * L, (r + 1) * L);
    let n = 0;
    while (n < L && ids.attentionMask[r * L + n]) n++;
    const ex = retroMaeExample(Array.from(row.subarray(0, n)), tok, createRng(deriveSeed(seed, rowOffset + r)), masking);
    encIds.set(row, r * L);
    encIds.set(ex.encoder.inputIds, r * L);
    encLabels.set(ex.encoder.labels, r * L);
    decLabels.set(ex.decoderLabels, r * L);
    for (let i = 0; i < n; i++) visible.set(ex.decoderVisible.subarray(i * n, (i + 1) * n), r * L * L + i * L);
  }
  return {
    encoder: { inputIds: encIds, attentionMask: ids.attentionMask, batch: B, length: L },
    encoderLabels: encLabels,
    decoder: ids,
    decoderAttentionMask: visible.length ? Float32Array.from(visible) : new Float32Array(0),
    decoderLabels: decLabels,
  };
}

/** The RetroMAE loss of a batch (L_enc + L_dec) and the sentence embeddings h_CLS [B, d]. */
export function retroMaeObjective(
  cfg: EncoderConfig, params: Params, batch: RetroMaeBatch, opts: RetroMaeForwardOptions = {},
): RetroMaeLoss & { sentenceEmbedding: tf.Tensor2D } {
  return tf.tidy(() => {
    const hidden = retroMaeForward(cfg, params, batch, opts);
    const prefix = opts.encoderPrefix ?? encoderPrefix(cfg);
    const loss = retroMaeLoss(hidden.encoder, batch.encoderLabels, hidden.decoder, batch.decoderLabels, mlmHead(cfg, params, prefix));
    return { ...loss, sentenceEmbedding: hidden.sentenceEmbedding };
  });
}
