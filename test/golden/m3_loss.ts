/**
 * `m3_loss` cases: encoder hidden states, token ids and masks (and heads, teacher scores) in; every score
 * matrix, loss term and gradient of the final loss (w.r.t. the hidden states and the heads, PyTorch layout)
 * out. Everything the loss does is read from the case's params; nothing here is specific to one case.
 */
import * as tf from '@tensorflow/tfjs';
import { M3LossBatch, M3LossOptions, m3Loss, M3LossTerms } from '../../src/losses/m3-loss';
import { M3Heads } from '../../src/model/heads';
import { HostTensor } from '../../src/model/weights/types';
import { expectClose, GoldenCase, KindRunner } from './common';

// case.json scalar → the loss term that produces it
const SCALARS: Record<string, keyof M3LossTerms> = {
  loss: 'loss',
  loss_dense: 'dense',
  loss_sparse: 'sparse',
  loss_colbert: 'colbert',
  loss_ensemble: 'ensemble',
  loss_contrastive: 'contrastive',
  loss_self_distill: 'selfDistill',
};
const SCORES: Record<string, 'dense' | 'sparse' | 'colbert' | 'ensemble'> = {
  dense_scores: 'dense',
  sparse_scores: 'sparse',
  colbert_scores: 'colbert',
  ensemble_scores: 'ensemble',
};
// gradient name → the differentiated input
const GRADS: Record<string, string> = {
  grad_q_hidden: 'q_hidden',
  grad_p_hidden: 'p_hidden',
  grad_sparse_linear_weight: 'sparse_linear.weight',
  grad_sparse_linear_bias: 'sparse_linear.bias',
  grad_colbert_linear_weight: 'colbert_linear.weight',
  grad_colbert_linear_bias: 'colbert_linear.bias',
};

function tensorOf(h: HostTensor): tf.Tensor {
  return tf.tensor(h.data, h.shape, h.dtype);
}

function tokenBatch(ids: HostTensor, mask: HostTensor) {
  const [batch, length] = ids.shape;
  return { inputIds: Int32Array.from(ids.data), attentionMask: Int32Array.from(mask.data), batch, length };
}

export const runM3LossCase: KindRunner = async (c: GoldenCase) => {
  const p = c.spec.params ?? {};
  const need = (name: string): HostTensor => {
    const t = c.tensors.get(name);
    if (!t) throw new Error(`case has no tensor '${name}'`);
    return t;
  };
  const queries = tokenBatch(need('q_input_ids'), need('q_attention_mask'));
  const passages = tokenBatch(need('p_input_ids'), need('p_attention_mask'));
  const vocab: number | undefined = p.vocab_size;
  if (vocab !== undefined) {
    for (const id of [...queries.inputIds, ...passages.inputIds]) if (id < 0 || id >= vocab) throw new Error(`token id ${id} outside the case's vocabulary of ${vocab}`);
  }
  const inputs = new Map<string, tf.Tensor>();
  for (const name of ['q_hidden', 'p_hidden', 'sparse_linear.weight', 'sparse_linear.bias', 'colbert_linear.weight', 'colbert_linear.bias', 'teacher_scores']) {
    const h = c.tensors.get(name);
    if (h) inputs.set(name, tensorOf(h));
  }
  const options: M3LossOptions = {
    temperature: p.temperature,
    groupSize: p.group_size,
    unified: !!p.unified,
    inBatchNegatives: !p.no_in_batch_neg,
    selfDistill: !!p.self_distill,
    kdLossType: p.kd_loss_type ?? undefined,
    specialTokenIds: p.special_token_ids,
  };
  const teacher = c.spec.inputs?.includes('teacher_scores') ? inputs.get('teacher_scores') : undefined;
  if (c.spec.inputs?.includes('teacher_scores') && !teacher) throw new Error('case lists teacher_scores but has none');

  // The loss as a function of the differentiated inputs, in GRADS order of the expected gradients.
  const gradNames = (c.spec.expected ?? []).filter((n) => n in GRADS);
  const run = (overrides: Map<string, tf.Tensor>) => {
    const t = (name: string) => overrides.get(name) ?? inputs.get(name)!;
    const batch: M3LossBatch = { queryHidden: t('q_hidden') as tf.Tensor3D, passageHidden: t('p_hidden') as tf.Tensor3D, queries, passages };
    const heads: M3Heads | null = options.unified
      ? { sparseWeight: t('sparse_linear.weight'), sparseBias: t('sparse_linear.bias'), colbertWeight: t('colbert_linear.weight'), colbertBias: t('colbert_linear.bias') }
      : null;
    return m3Loss(batch, heads, { ...options, teacherScores: teacher as tf.Tensor2D | undefined });
  };

  try {
    const got = new Map<string, ArrayLike<number>>();
    tf.tidy(() => {
      const out = run(new Map());
      for (const [name, key] of Object.entries(SCORES)) if (out.scores[key]) got.set(name, out.scores[key]!.dataSync());
      for (const [name, key] of Object.entries(SCALARS)) if (out.terms[key]) got.set(name, out.terms[key]!.dataSync());
    });
    if (gradNames.length > 0) {
      const xs = gradNames.map((n) => inputs.get(GRADS[n])!);
      tf.tidy(() => {
        const grads = tf.grads((...vals: tf.Tensor[]) => run(new Map(gradNames.map((n, i) => [GRADS[n], vals[i]]))).loss)(xs);
        gradNames.forEach((n, i) => got.set(n, grads[i].dataSync()));
      });
    }
    for (const name of c.spec.expected ?? []) {
      const g = got.get(name);
      if (!g) throw new Error(`m3_loss case expects '${name}', which this runner does not produce`);
      expectClose(name, g, need(name), c.spec.tolerance);
    }
    for (const [name, want] of Object.entries(c.spec.scalars ?? {})) {
      const g = got.get(name);
      if (!g) throw new Error(`m3_loss case expects scalar '${name}', which this runner does not produce`);
      expectClose(name, g, want as number, c.spec.tolerance);
    }
  } finally {
    tf.dispose([...inputs.values()]);
  }
};
