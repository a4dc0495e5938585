/**
 * `retromae` cases: an HF config + weights (`roberta.*`, `lm_head.*`, `c_head.*`) and one masked batch;
 * checks both losses, their sum, the sentence embedding and the listed weight gradients
 * (`grad_<parameter name with dots as underscores>`).
 */
import * as path from 'path';
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { RetroMaeBatch } from '../../src/model/retromae';
import { retroMaeObjective } from '../../src/pretrain/retromae-step';
import { parseConfig } from '../../src/model/config';
import { readSafetensors } from '../../src/model/weights/safetensors';
import { HostTensor } from '../../src/model/weights/types';
import { expectClose, GoldenCase, KindRunner } from './common';

export const runRetroMAECase: KindRunner = async (c: GoldenCase) => {
  const need = (name: string): HostTensor => {
    const t = c.tensors.get(name);
    if (!t) throw new Error(`case has no tensor '${name}'`);
    return t;
  };
  const cfgFile = path.join(c.dir, c.spec.config ?? 'config.json');
  const cfg = parseConfig(JSON.parse(fs.readFileSync(cfgFile, 'utf8')), cfgFile);
  const params = new Map<string, tf.Tensor>();
  for (const [name, h] of readSafetensors(path.join(c.dir, c.spec.weights ?? 'retromae.safetensors'))) params.set(name, tf.tensor(h.data, h.shape, h.dtype));
  const tokens = (ids: string, mask: string) => {
    const i = need(ids);
    return { inputIds: Int32Array.from(i.data), attentionMask: Int32Array.from(need(mask).data), batch: i.shape[0], length: i.shape[1] };
  };
  const batch: RetroMaeBatch = {
    encoder: tokens('encoder_input_ids', 'encoder_attention_mask'),
    encoderLabels: Int32Array.from(need('encoder_labels').data),
    // decoder_input_ids are the uncorrupted encoder input, so they share its padding (and its mask).
    decoder: tokens('decoder_input_ids', 'encoder_attention_mask'),
    decoderAttentionMask: Int32Array.from(need('decoder_attention_mask').data),
    decoderLabels: Int32Array.from(need('decoder_labels').data),
  };

  const paramOfGrad = new Map<string, string>();
  for (const name of params.keys()) paramOfGrad.set('grad_' + name.replace(/\./g, '_'), name);
  const gradNames = (c.spec.expected ?? []).filter((n) => n.startsWith('grad_'));
  for (const n of gradNames) if (!paramOfGrad.has(n)) throw new Error(`retromae case expects '${n}', which names no parameter`);

  try {
    const got = new Map<string, ArrayLike<number>>();
    tf.tidy(() => {
      const out = retroMaeObjective(cfg, params, batch);
      got.set('loss', out.loss.dataSync());
      got.set('loss_encoder', out.encoderLoss.dataSync());
      got.set('loss_decoder', out.decoderLoss.dataSync());
      got.set('sentence_embedding', out.sentenceEmbedding.dataSync());
    });
    if (gradNames.length > 0) {
      const names = gradNames.map((n) => paramOfGrad.get(n)!);
      tf.tidy(() => {
        const grads = tf.grads((...vals: tf.Tensor[]) => {
          const p = new Map(params);
          names.forEach((n, i) => p.set(n, vals[i]));
          return retroMaeObjective(cfg, p, batch).loss;
        })(names.map((n) => params.get(n)!));
        gradNames.forEach((n, i) => got.set(n, grads[i].dataSync()));
      });
    }
    for (const name of c.spec.expected ?? []) {
      const g = got.get(name);
      if (!g) throw new Error(`retromae case expects '${name}', which this runner does not produce`);
      expectClose(name, g, need(name), c.spec.tolerance);
    }
    for (const [name, want] of Object.entries(c.spec.scalars ?? {})) {
      const g = got.get(name);
      if (!g) throw new Error(`retromae case expects scalar '${name}', which this runner does not produce`);
      expectClose(name, g, want as number, c.spec.tolerance);
    }
  } finally {
    tf.dispose([...params.values()]);
  }
};
