/**
 * `train_step` cases: N AdamW steps of M3 fine-tuning on one batch, end to end through the library's
 * own step (m3Step), clipping and optimizer: per-step losses, pre-clip gradient norms, weights after.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { m3Step } from '../../src/finetune/m3-step';
import { disposeModel, loadModel } from '../../src/model/m3';
import { adamwStep, clipGradNorm, createAdamW, disposeAdamW } from '../../src/train/adamw';
import { lrAt } from '../../src/train/schedule';
import { expectClose, GoldenCase, KindRunner } from './common';

export const runTrainStepCase: KindRunner = async (c: GoldenCase) => {
  const p = c.spec.params!;
  const model = loadModel(path.join(c.dir, c.spec.model_dir ?? 'model'));
  const opt = createAdamW({ lr: p.lr, betas: p.betas, eps: p.eps, weightDecay: p.weight_decay });
  try {
    const batchOf = (prefix: string) => {
      const ids = c.tensors.get(`${prefix}_input_ids`)!;
      const mask = c.tensors.get(`${prefix}_attention_mask`)!;
      return { inputIds: Int32Array.from(ids.data), attentionMask: Int32Array.from(mask.data), batch: ids.shape[0], length: ids.shape[1] };
    };
    const batch = { queries: batchOf('q'), passages: batchOf('p') };
    const losses: number[] = [];
    const norms: number[] = [];
    for (let step = 0; step < p.steps; step++) {
      const r = m3Step(model, batch, {
        loss: {
          temperature: p.temperature, groupSize: p.group_size, unified: p.unified, selfDistill: p.self_distill,
          specialTokenIds: p.special_token_ids, kdLossType: p.kd_loss_type ?? undefined,
        },
        subBatchSize: 0,
      });
      losses.push(r.loss.dataSync()[0]);
      const { norm, grads } = clipGradNorm(r.grads, p.max_grad_norm);
      norms.push(norm);
      adamwStep(opt, model.params as Map<string, tf.Variable>, grads, lrAt(p.schedule, p.lr, step, 0, p.steps));
      tf.dispose([r.loss, ...r.grads.values(), ...grads.values(), ...Object.values(r.parts)]);
    }
    expectClose('losses', losses, c.spec.scalars!.losses as number[], c.spec.tolerance);
    expectClose('grad_norms_before_clip', norms, c.spec.scalars!.grad_norms_before_clip as number[], c.spec.tolerance);
    for (const name of c.spec.expected ?? []) {
      if (!name.startsWith('after.')) throw new Error(`train_step case expects '${name}', which this runner does not produce`);
      const param = model.params.get(name.slice('after.'.length));
      if (!param) throw new Error(`${name}: the model has no parameter '${name.slice(6)}'`);
      expectClose(name, param.dataSync(), c.tensors.get(name)!, c.spec.tolerance);
    }
  } finally {
    disposeAdamW(opt);
    disposeModel(model);
  }
};
