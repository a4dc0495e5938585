/**
 * A real M3 fine-tuning step of the framework (encoder, unified loss with self-distillation, clipping,
 * AdamW) on the torch backend: no kernel may take the cpu fallback, data read back to JS stays at the
 * scalars the step reports, and tensors, data ids and native handles stay flat over repeated steps.
 */
import * as tf from '@tensorflow/tfjs';
import { fallbackStats, resetFallbackStats } from '../../../src/backend/torch';
import { m3Step } from '../../../src/finetune/m3-step';
import { parseConfig } from '../../../src/model/config';
import { disposeModel, initModel } from '../../../src/model/m3';
import { adamwStep, clipGradNorm, createAdamW, disposeAdamW } from '../../../src/train/adamw';
import { describeTorch } from './setup';

const config = parseConfig({
  model_type: 'xlm-roberta', vocab_size: 300, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4,
  intermediate_size: 64, max_position_embeddings: 40, type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1,
});

function batchOf(rows: number, length: number, seed: number) {
  const inputIds = new Int32Array(rows * length);
  const attentionMask = new Int32Array(rows * length);
  for (let r = 0; r < rows; r++) {
    const used = length - (r % 3); // some right padding
    for (let i = 0; i < length; i++) {
      const on = i < used;
      inputIds[r * length + i] = !on ? 1 : i === 0 ? 0 : i === used - 1 ? 2 : 5 + ((seed * 31 + r * 17 + i * 7) % 290);
      attentionMask[r * length + i] = on ? 1 : 0;
    }
  }
  return { inputIds, attentionMask, batch: rows, length };
}

describeTorch('a framework training step on torch', () => {
  afterAll(() => tf.setBackend('cpu'));

  test('takes no cpu fallback, reads back only scalars, and leaks nothing over steps', async () => {
    await tf.setBackend('torch');
    const model = initModel(config, { seed: 7, heads: true, colbertDim: 32 });
    const opt = createAdamW({ lr: 1e-3 });
    const batch = { queries: batchOf(2, 12, 1), passages: batchOf(2 * 3, 20, 2) };
    const backend = tf.backend();
    const readSync = jest.spyOn(backend, 'readSync');
    const read = jest.spyOn(backend, 'read');
    const step = (i: number) => {
      const r = m3Step(model, batch, {
        loss: { temperature: 0.02, groupSize: 3, unified: true, selfDistill: true, specialTokenIds: [0, 1, 2, 3] },
        subBatchSize: 0,
        seed: i,
      });
      const loss = r.loss.dataSync()[0];
      const { grads } = clipGradNorm(r.grads, 1.0);
      adamwStep(opt, model.params as Map<string, tf.Variable>, grads, 1e-3);
      tf.dispose([r.loss, ...r.grads.values(), ...grads.values(), ...Object.values(r.parts)]);
      return loss;
    };
    try {
      step(0); // warm-up: optimizer state is created here
      const memBefore = tf.memory() as tf.MemoryInfo & { nativeHandles: number };
      const idsBefore = backend.numDataIds();
      resetFallbackStats();
      readSync.mockClear();
      read.mockClear();
      const losses = [1, 2, 3].map(step);
      expect(fallbackStats()).toEqual({});
      // per step: the loss and the gradient norm (clipGradNorm returns it as a number)
      expect(readSync.mock.calls.length + read.mock.calls.length).toBeLessThanOrEqual(2 * 3);
      const memAfter = tf.memory() as tf.MemoryInfo & { nativeHandles: number };
      expect(memAfter.numTensors).toBe(memBefore.numTensors);
      expect(backend.numDataIds()).toBe(idsBefore);
      expect(memAfter.nativeHandles).toBe(memBefore.nativeHandles);
      expect(losses.every(Number.isFinite)).toBe(true);
    } finally {
      readSync.mockRestore();
      read.mockRestore();
      disposeAdamW(opt);
      disposeModel(model);
    }
  });
});
