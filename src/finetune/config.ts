/**
 * Stage configs of fine-tuning: `pairs` (stage 2, weakly-supervised dense InfoNCE, group size 1) and
 * `unified` (stage 3: dense + sparse + ColBERT with self-distillation). Names follow FlagEmbedding's
 * arguments where they exist (temperature, unified_finetuning, use_self_distill, kd_loss_type, ...).
 */
import { EVAL_SCHEMA } from '../eval/config';
import { DEFAULT_ENSEMBLE_WEIGHTS, HeadWeights } from '../losses/ensemble-score';
import { CROSS_DEVICE_MODES, DEFAULT_LOSS_WEIGHTS } from '../losses/m3-loss';
import { HEADS_MODEL_SCHEMA } from '../model/schema';
import { TRAIN_SCHEMA } from '../train/config';
import { Infer, Schema } from '../util/schema';

const headWeights = (w: Readonly<HeadWeights>) => ({
  dense: { type: 'number', default: w.dense },
  sparse: { type: 'number', default: w.sparse },
  colbert: { type: 'number', default: w.colbert },
}) as const satisfies Schema;

export function finetuneSchema(stage: 'pairs' | 'unified') {
  const pairs = stage === 'pairs';
  return {
    stage: { type: 'enum', values: ['pairs', 'unified'] },
    output_dir: { type: 'string' },
    model: { type: 'object', fields: HEADS_MODEL_SCHEMA },
    data: { type: 'object', fields: {
      train: { type: 'list', of: { type: 'string' }, minItems: 1, doc: 'JSONL files/dirs (prepared on demand) or prepared dataset dirs' },
      cache_dir: { type: 'string', default: '.cache/m3-data', doc: 'where raw JSONL is prepared' },
      query_max_len: { type: 'int', default: 32, min: 3 },
      passage_max_len: { type: 'int', default: 128, min: 3 },
      train_group_size: { type: 'int', default: pairs ? 1 : 8, min: 1 },
      batch_size: { type: 'int', default: pairs ? 32 : 8, min: 1, doc: 'queries per device batch' },
      batch_size_by_bucket: { type: 'map', of: { type: 'int', min: 1 }, default: {}, doc: 'per length bucket ("0-500": 48, ...), as Table 9 of the paper' },
      shuffle_ratio: { type: 'number', default: 0, min: 0, max: 1 },
      pad_to_multiple_of: { type: 'int', default: 0, min: 0 },
      knowledge_distillation: { type: 'bool', default: false, doc: 'use pos_scores / neg_scores as teacher' },
      skip_invalid: { type: 'bool', default: false },
      small_threshold: { type: 'int', default: 0, min: 0 },
      drop_threshold: { type: 'int', default: 0, min: 0 },
    } },
    loss: { type: 'object', fields: {
      temperature: { type: 'number', default: 0.02, min: 1e-6 },
      unified_finetuning: { type: 'bool', default: !pairs },
      use_self_distill: { type: 'bool', default: false },
      self_distill_start_step: { type: 'int', default: -1, min: -1, doc: 'distillation on when optimizer step > this (FlagEmbedding counts micro-batches)' },
      kd_loss_type: { type: 'enum', values: ['kl_div', 'm3_kd_loss'], default: 'kl_div' },
      ensemble_weights: { type: 'object', fields: headWeights(DEFAULT_ENSEMBLE_WEIGHTS) },
      loss_weights: { type: 'object', fields: headWeights(DEFAULT_LOSS_WEIGHTS) },
      negatives_cross_device: { type: 'bool', default: false, doc: 'in-batch negatives from every data-parallel rank (FlagEmbedding\'s negatives_cross_device)' },
      negatives_cross_device_modes: { type: 'list', of: { type: 'enum', values: CROSS_DEVICE_MODES }, minItems: 1, default: ['dense'], doc: 'heads whose losses share negatives across ranks; FlagEmbedding: dense only' },
    } },
    train: { type: 'object', fields: {
      ...TRAIN_SCHEMA,
      sub_batch_size: { type: 'int', default: 0, min: 0, doc: 'GradCache sub-batch size; 0 = one pass' },
      fix_encoder: { type: 'bool', default: false, doc: 'train only the M3 heads' },
    } },
    eval: { type: 'object', fields: EVAL_SCHEMA },
  } as const satisfies Schema;
}

export type FinetuneConfig = Infer<ReturnType<typeof finetuneSchema>>;
