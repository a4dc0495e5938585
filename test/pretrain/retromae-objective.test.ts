/**
 * RetroMAE loss on a tiny random XLM-R-style model: loss = encoder + decoder, ignored labels do not count,
 * the BERT MLM-head naming computes the same function as RoBERTa's `lm_head`, and every parameter that
 * takes part gets a gradient on every backend (the goldens pin the numbers).
 */
import * as tf from '@tensorflow/tfjs';
import { RetroMaeBatch } from '../../src/model/retromae';
import { retroMaeObjective } from '../../src/pretrain/retromae-step';
import { parseConfig } from '../../src/model/config';
import { Params } from '../../src/model/encoder';
import { randomNormal, rng, testBackends } from '../losses/helpers';

const cfg = parseConfig({
  model_type: 'xlm-roberta', vocab_size: 30, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32,
  max_position_embeddings: 20, type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0,
});

function randomParams(seed: number): Params {
  const p: Params = new Map();
  let s = seed;
  const d = cfg.hidden;
  const lin = (name: string, out: number, inp: number) => {
    p.set(name + '.weight', tf.mul(randomNormal([out, inp], s++), 0.2));
    p.set(name + '.bias', tf.mul(randomNormal([out], s++), 0.02));
  };
  const ln = (name: string) => {
    p.set(name + '.weight', tf.add(1, tf.mul(randomNormal([d], s++), 0.1)));
    p.set(name + '.bias', tf.mul(randomNormal([d], s++), 0.1));
  };
  const layer = (prefix: string) => {
    for (const x of ['query', 'key', 'value']) lin(`${prefix}attention.self.${x}`, d, d);
    lin(`${prefix}attention.output.dense`, d, d);
    ln(`${prefix}attention.output.LayerNorm`);
    lin(`${prefix}intermediate.dense`, cfg.intermediate, d);
    lin(`${prefix}output.dense`, d, cfg.intermediate);
    ln(`${prefix}output.LayerNorm`);
  };
  p.set('roberta.embeddings.word_embeddings.weight', randomNormal([cfg.vocabSize, d], s++));
  p.set('roberta.embeddings.position_embeddings.weight', randomNormal([cfg.maxPositions, d], s++));
  p.set('roberta.embeddings.token_type_embeddings.weight', randomNormal([1, d], s++));
  ln('roberta.embeddings.LayerNorm');
  layer('roberta.encoder.layer.0.');
  layer('c_head.');
  lin('lm_head.dense', d, d);
  ln('lm_head.layer_norm');
  p.set('lm_head.bias', tf.mul(randomNormal([cfg.vocabSize], s++), 0.1));
  return p;
}

function randomBatch(seed: number): RetroMaeBatch {
  const r = rng(seed);
  const b = 2;
  const l = 8;
  const lengths = [8, 6];
  const ids = new Int32Array(b * l).fill(1);
  const mask = new Int32Array(b * l);
  const encIds = new Int32Array(b * l).fill(1);
  const encLabels = new Int32Array(b * l).fill(-100);
  const decLabels = new Int32Array(b * l).fill(-100);
  const decMask = new Int32Array(b * l * l);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < lengths[i]; j++) {
      const k = i * l + j;
      ids[k] = j === 0 ? 0 : j === lengths[i] - 1 ? 2 : 4 + Math.floor(r() * 26);
      mask[k] = 1;
      encIds[k] = ids[k];
      if (j > 0 && j < lengths[i] - 1) {
        decLabels[k] = ids[k];
        if (r() < 0.4) {
          encLabels[k] = ids[k];
          encIds[k] = 3; // a stand-in [MASK] id
        }
      }
      for (let c = 0; c < lengths[i]; c++) decMask[(i * l + j) * l + c] = c !== j && r() < 0.6 ? 1 : 0;
    }
  }
  return {
    encoder: { inputIds: encIds, attentionMask: mask, batch: b, length: l },
    encoderLabels: encLabels,
    decoder: { inputIds: ids, attentionMask: mask, batch: b, length: l },
    decoderAttentionMask: decMask,
    decoderLabels: decLabels,
  };
}

let backends: string[];
beforeAll(async () => {
  backends = await testBackends();
});

test('loss = encoder + decoder; ignored labels do not count; BERT head names compute the same', async () => {
  for (const backend of backends) {
    await tf.setBackend(backend);
    tf.tidy(() => {
      const params = randomParams(90);
      const batch = randomBatch(91);
      const out = retroMaeObjective(cfg, params, batch);
      const [loss, enc, dec] = [out.loss, out.encoderLoss, out.decoderLoss].map((t) => t.dataSync()[0]);
      expect(enc).toBeGreaterThan(0);
      expect(dec).toBeGreaterThan(0);
      expect(loss).toBeCloseTo(enc + dec, 5);
      expect(out.sentenceEmbedding.shape).toEqual([2, cfg.hidden]);

      // Changing the id under an ignored label (the padding of row 1) changes nothing.
      const padded = { ...batch, decoderLabels: Int32Array.from(batch.decoderLabels) };
      padded.decoderLabels[15] = -100;
      expect(retroMaeObjective(cfg, params, padded).decoderLoss.dataSync()[0]).toBeCloseTo(dec, 6);

      const bert = new Map(params);
      const rename: Record<string, string> = {
        'lm_head.dense.weight': 'cls.predictions.transform.dense.weight', 'lm_head.dense.bias': 'cls.predictions.transform.dense.bias',
        'lm_head.layer_norm.weight': 'cls.predictions.transform.LayerNorm.weight', 'lm_head.layer_norm.bias': 'cls.predictions.transform.LayerNorm.bias',
        'lm_head.bias': 'cls.predictions.bias',
      };
      for (const [from, to] of Object.entries(rename)) {
        bert.set(to, bert.get(from)!);
        bert.delete(from);
      }
      expect(retroMaeObjective(cfg, bert, batch).loss.dataSync()[0]).toBeCloseTo(loss, 5);
    });
  }
});

test('every parameter but the pooler gets a finite, non-zero gradient', async () => {
  for (const backend of backends) {
    await tf.setBackend(backend);
    tf.tidy(() => {
      const params = randomParams(92);
      const batch = randomBatch(93);
      const names = [...params.keys()];
      const grads = tf.grads((...vals: tf.Tensor[]) => retroMaeObjective(cfg, new Map(names.map((n, i) => [n, vals[i]])), batch).loss)(names.map((n) => params.get(n)!));
      grads.forEach((g, i) => {
        const v = g.dataSync();
        expect([names[i], Array.from(v).every(Number.isFinite)]).toEqual([names[i], true]);
        expect([names[i], Array.from(v).some((x) => x !== 0)]).toEqual([names[i], true]);
      });
    });
  }
});
