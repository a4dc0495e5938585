/**
 * bf16 autocast (train.bf16) on the torch backend: matmuls and attention run in bfloat16 and keep their
 * outputs in bf16, every other kernel sees float32, parameter gradients come back in float32, and 20 unified
 * training steps follow float32's loss within 2%. Other backends refuse it in one line.
 */
import * as tf from '@tensorflow/tfjs';
import { setBf16Autocast, useBackend } from '../../../src/backend';
import { addon } from '../../../src/backend/torch/addon';
import type { TorchBackend } from '../../../src/backend/torch/backend';
import { linear } from '../../../src/backend/ops';
import { m3Step } from '../../../src/finetune/m3-step';
import { parseConfig } from '../../../src/model/config';
import { disposeModel, initModel } from '../../../src/model/m3';
import { adamwStep, clipGradNorm, createAdamW, disposeAdamW } from '../../../src/train/adamw';
import { describeTorch } from './setup';

const config = parseConfig({
  model_type: 'xlm-roberta', vocab_size: 400, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
  intermediate_size: 128, max_position_embeddings: 48, type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1,
  hidden_dropout_prob: 0, attention_probs_dropout_prob: 0,
});

function batchOf(rows: number, length: number, seed: number) {
  const inputIds = new Int32Array(rows * length);
  const attentionMask = new Int32Array(rows * length);
  for (let r = 0; r < rows; r++) {
    const used = length - (r % 4); // some right padding
    for (let i = 0; i < length; i++) {
      const on = i < used;
      inputIds[r * length + i] = !on ? 1 : i === 0 ? 0 : i === used - 1 ? 2 : 5 + ((seed * 31 + r * 17 + i * 7) % 390);
      attentionMask[r * length + i] = on ? 1 : 0;
    }
  }
  return { inputIds, attentionMask, batch: rows, length };
}

/** The unified loss over 20 steps of AdamW on fixed batches, from the same initial weights. */
function losses(bf16: boolean, handles: number[] = []): number[] {
  const model = initModel(config, { seed: 3, heads: true, colbertDim: 32 });
  const opt = createAdamW({ lr: 2e-4, weightDecay: 0.01 });
  const out: number[] = [];
  setBf16Autocast(bf16);
  try {
    for (let i = 0; i < 20; i++) {
      const batch = { queries: batchOf(4, 16, i % 5), passages: batchOf(4 * 3, 32, 100 + (i % 5)) };
      const r = m3Step(model, batch, { loss: { temperature: 0.05, groupSize: 3, unified: true, selfDistill: true, specialTokenIds: [0, 1, 2, 3] }, subBatchSize: 0 });
      out.push(r.loss.dataSync()[0]);
      const { grads } = clipGradNorm(r.grads, 1);
      adamwStep(opt, model.params as Map<string, tf.Variable>, grads, 2e-4);
      tf.dispose([r.loss, ...r.grads.values(), ...Object.values(r.parts), ...(grads !== r.grads ? grads.values() : [])]);
      handles.push(addon().liveHandles());
    }
  } finally {
    setBf16Autocast(false);
    disposeAdamW(opt);
    disposeModel(model);
  }
  return out;
}

describeTorch('bf16 autocast on torch', () => {
  const bf16Code = () => addon().dtypeCodes.bfloat16;
  const storedType = (t: tf.Tensor) => addon().meta((tf.backend() as TorchBackend).h(t))[0];
  afterAll(() => tf.setBackend('cpu'));

  test('a linear layer computes in bf16 and keeps its output there; its weight gradients come back in float32', async () => {
    await tf.setBackend('torch');
    setBf16Autocast(true);
    try {
      const x = tf.randomNormal([6, 8], 0, 1, 'float32', 1);
      const w = tf.randomNormal([5, 8], 0, 1, 'float32', 2);
      const b = tf.randomNormal([5], 0, 1, 'float32', 3);
      const y = linear(x, w, b);
      expect(y.dtype).toBe('float32');
      expect(storedType(y)).toBe(bf16Code());
      tf.tidy(() => {
        setBf16Autocast(false);
        const exact = tf.add(tf.matMul(x, w, false, true), b).arraySync() as number[][];
        setBf16Autocast(true);
        const got = y.arraySync() as number[][];
        // bf16 keeps 8 significant bits: relative error ≲ 2⁻⁸ per product term
        exact.flat().forEach((v, i) => expect(Math.abs(got.flat()[i] - v)).toBeLessThan(0.05 * (1 + Math.abs(v))));
      });
      // A kernel outside the bf16 list (Sum) sees float32 and answers in float32.
      const s = tf.sum(y);
      expect(storedType(s)).toBe(addon().dtypeCodes.float32);
      const { grads } = tf.variableGrads(() => tf.sum(tf.square(linear(x, wv, bv))) as tf.Scalar, [wv, bv]);
      for (const g of Object.values(grads)) expect(storedType(g)).toBe(addon().dtypeCodes.float32);
      tf.dispose([x, w, b, y, s, ...Object.values(grads)]);
    } finally {
      setBf16Autocast(false);
    }
  });
  // variables for the gradient check (made once, on torch)
  let wv: tf.Variable;
  let bv: tf.Variable;
  beforeAll(async () => {
    await useBackend('torch');
    wv = tf.variable(tf.randomNormal([5, 8], 0, 1, 'float32', 4));
    bv = tf.variable(tf.randomNormal([5], 0, 1, 'float32', 5));
  });

  test('20 unified steps (self-distillation) in bf16 stay within 2% of float32', async () => {
    await tf.setBackend('torch');
    const fp32 = losses(false);
    const handles: number[] = [];
    const bf16 = losses(true, handles);
    expect(handles[19]).toBe(handles[1]); // cached bf16 parameter copies are replaced, not accumulated
    expect(fp32[19]).toBeLessThan(fp32[0]); // it learns, so the comparison covers moving weights
    for (let i = 0; i < 20; i++) expect(Math.abs(bf16[i] - fp32[i])).toBeLessThanOrEqual(0.02 * Math.abs(fp32[i]));
    expect(bf16.some((v, i) => v !== fp32[i])).toBe(true); // bf16 really ran
  }, 120_000);
});

describe('bf16 autocast elsewhere', () => {
  test('wasm refuses it in one line', async () => {
    await useBackend('wasm');
    expect(() => setBf16Autocast(true)).toThrow(/^train\.bf16 needs the torch backend \(the active backend is wasm\)/);
    expect(() => setBf16Autocast(false)).not.toThrow();
  });
});
