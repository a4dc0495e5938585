/**
 * GradCache sub-batching gives the one-pass gradient of every parameter, and bounds memory by the
 * sub-batch: the peak at batch 64 stays within 1.3× of batch 8.
 */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';
import { parseConfig } from '../../src/model/config';
import { m3Step, M3StepOptions } from '../../src/finetune/m3-step';
import { disposeModel, initModel, M3Model } from '../../src/model/m3';
import { createRng } from '../../src/util/rng';

beforeAll(() => useBackend('wasm'));

function model(layers: number, hidden: number, seed: number): M3Model {
  const config = parseConfig({
    model_type: 'xlm-roberta', vocab_size: 120, hidden_size: hidden, num_hidden_layers: layers, num_attention_heads: 4,
    intermediate_size: hidden * 4, max_position_embeddings: 80, type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1,
    hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
  });
  return initModel(config, { seed, heads: true });
}

function batchOf(n: number, len: number, seed: number) {
  const rng = createRng(seed);
  const inputIds = new Int32Array(n * len).fill(1);
  const attentionMask = new Int32Array(n * len);
  for (let i = 0; i < n; i++) {
    const real = 4 + rng.int(len - 4);
    inputIds[i * len] = 0;
    for (let j = 1; j < real - 1; j++) inputIds[i * len + j] = 4 + rng.int(116);
    inputIds[i * len + real - 1] = 2;
    attentionMask.fill(1, i * len, i * len + real);
  }
  return { inputIds, attentionMask, batch: n, length: len };
}

const lossOpts = (groupSize: number): M3StepOptions['loss'] => ({ temperature: 0.05, groupSize, unified: true, selfDistill: true, specialTokenIds: [0, 1, 2, 3] });

describe('GradCache', () => {
  test('3+ sub-batches give every parameter the one-pass gradient (dropout on, self-distillation on)', () => {
    const m = model(2, 32, 5);
    const batch = { queries: batchOf(6, 12, 1), passages: batchOf(12, 20, 2) };
    const one = m3Step(m, batch, { loss: lossOpts(2), subBatchSize: 0, seed: 99 });
    const sub = m3Step(m, batch, { loss: lossOpts(2), subBatchSize: 2, seed: 99 }); // 3 query and 6 passage sub-batches
    expect(sub.loss.dataSync()[0]).toBeCloseTo(one.loss.dataSync()[0], 5);
    const trainable = [...m.params].filter(([, v]) => (v as tf.Variable).trainable).map(([k]) => k);
    expect([...sub.grads.keys()].sort()).toEqual([...one.grads.keys()].sort());
    expect(one.grads.size).toBe(trainable.length);
    for (const [name, g] of one.grads) {
      const a = g.dataSync();
      const b = sub.grads.get(name)!.dataSync();
      const scale = Math.max(1e-3, ...Array.from(a, Math.abs));
      for (let i = 0; i < a.length; i++) {
        if (Math.abs(a[i] - b[i]) > 1e-4 * scale + 1e-6) throw new Error(`${name}[${i}]: one-pass ${a[i]} vs GradCache ${b[i]}`);
      }
    }
    tf.dispose([one.loss, sub.loss, ...one.grads.values(), ...sub.grads.values(), ...Object.values(one.parts), ...Object.values(sub.parts)]);
    disposeModel(m);
  });

  test('peak memory at batch 64 stays within 1.3× of batch 8 (sub-batch 8)', async () => {
    const m = model(4, 64, 6);
    const peak = async (n: number) => {
      const batch = { queries: batchOf(n, 32, 3), passages: batchOf(n, 32, 4) };
      const info = await tf.profile(() => {
        const r = m3Step(m, batch, { loss: lossOpts(1), subBatchSize: 8, seed: 1 });
        tf.dispose([r.loss, ...r.grads.values(), ...Object.values(r.parts)]);
      });
      return info.peakBytes;
    };
    const p8 = await peak(8);
    const p64 = await peak(64);
    expect(p64 / p8).toBeLessThanOrEqual(1.3);
    disposeModel(m);
  });
});
