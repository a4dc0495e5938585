/**
 * Stage configs of fine-tuning: `pairs` (stage 2, weakly-supervised dense InfoNCE, group size 1) and
 * `unified` (stage 3: dense + sparse + ColBERT with self-distillation). Names follow FlagEmbedding's
 * arguments where they exist (temperature, unified_finetuning, use_self_distill, kd_loss_type, ...).
 */
import { EVAL_SCHEMA, EvalConfig } from '../eval/config';
import { TRAIN_SCHEMA } from '../train/config';
import { TrainConfig } from '../train/trainer';
import { Schema } from '../util/schema';

export const MODEL_SCHEMA: Schema = {
  init: { type: 'string', optional: true, doc: 'model dir to start from (HF / FlagEmbedding / a previous stage)' },
  config: { type: 'string', optional: true, doc: 'HF config.json to start from scratch (with `tokenizer`)' },
  tokenizer: { type: 'string', optional: true, doc: 'tokenizer dir (default: the init dir)' },
  colbert_dim: { type: 'int', default: -1, doc: 'ColBERT head width when heads are created; -1 = hidden size' },
  extend_positions: { type: 'int', default: 0, min: 0, doc: 'grow the position table to this many rows (stage 1 of the paper: 8194)' },
};

const HEAD_WEIGHTS: Schema = {
  dense: { type: 'number', default: 1 },
  sparse: { type: 'number', default: 0.3 },
  colbert: { type: 'number', default: 1 },
};

export function finetuneSchema(stage: 'pairs' | 'unified'): Schema {
  const pairs = stage === 'pairs';
  return {
    stage: { type: 'enum', values: ['pairs', 'unified'] },
    output_dir: { type: 'string' },
    model: { type: 'object', fields: MODEL_SCHEMA },
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
      ensemble_weights: { type: 'object', fields: HEAD_WEIGHTS },
      loss_weights: { type: 'object', fields: { ...HEAD_WEIGHTS, sparse: { type: 'number', default: 0.1 } } },
    } },
    train: { type: 'object', fields: TRAIN_SCHEMA },
    eval: { type: 'object', fields: EVAL_SCHEMA },
  };
}

export interface HeadWeightsConfig { dense: number; sparse: number; colbert: number }

export interface FinetuneConfig {
  stage: 'pairs' | 'unified';
  output_dir: string;
  model: { init?: string; config?: string; tokenizer?: string; colbert_dim: number; extend_positions: number };
  data: {
    train: string[]; cache_dir: string; query_max_len: number; passage_max_len: number; train_group_size: number;
    batch_size: number; batch_size_by_bucket: Record<string, number>; shuffle_ratio: number; pad_to_multiple_of: number;
    knowledge_distillation: boolean; skip_invalid: boolean; small_threshold: number; drop_threshold: number;
  };
  loss: {
    temperature: number; unified_finetuning: boolean; use_self_distill: boolean; self_distill_start_step: number;
    kd_loss_type: 'kl_div' | 'm3_kd_loss'; ensemble_weights: HeadWeightsConfig; loss_weights: HeadWeightsConfig;
  };
  train: TrainConfig & { sub_batch_size: number; fix_encoder: boolean; fix_position_embedding: boolean };
  eval: EvalConfig;
}
