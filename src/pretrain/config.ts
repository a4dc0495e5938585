/** Stage config of RetroMAE pretraining (stage 1): masking ratios as RetroMAE's defaults (spec §6). */
import { EVAL_SCHEMA, EvalConfig } from '../eval/config';
import { MODEL_SCHEMA } from '../finetune/config';
import { TRAIN_SCHEMA } from '../train/config';
import { TrainConfig } from '../train/trainer';
import { Schema } from '../util/schema';

export function pretrainSchema(): Schema {
  return {
    stage: { type: 'enum', values: ['retromae'] },
    output_dir: { type: 'string' },
    model: { type: 'object', fields: MODEL_SCHEMA },
    data: { type: 'object', fields: {
      train: { type: 'list', of: { type: 'string' }, minItems: 1, doc: '{"text": ...} JSONL files/dirs or prepared pretrain datasets' },
      cache_dir: { type: 'string', default: '.cache/m3-data' },
      max_len: { type: 'int', default: 512, min: 8, doc: 'tokens per packed block, special tokens included' },
      batch_size: { type: 'int', default: 32, min: 1 },
      skip_invalid: { type: 'bool', default: false },
    } },
    masking: { type: 'object', fields: {
      encoder_mlm_probability: { type: 'number', default: 0.3, min: 0, max: 1 },
      decoder_mlm_probability: { type: 'number', default: 0.5, min: 0, max: 1 },
      decoder_mask_pool: { type: 'int', default: 128, min: 1, doc: 'whole-word masks drawn per sequence for the decoder rows (FlagEmbedding: 128)' },
    } },
    train: { type: 'object', fields: TRAIN_SCHEMA },
    eval: { type: 'object', fields: EVAL_SCHEMA },
  };
}

export interface PretrainConfig {
  stage: 'retromae';
  output_dir: string;
  model: { init?: string; config?: string; tokenizer?: string; colbert_dim: number; extend_positions: number };
  data: { train: string[]; cache_dir: string; max_len: number; batch_size: number; skip_invalid: boolean };
  masking: { encoder_mlm_probability: number; decoder_mlm_probability: number; decoder_mask_pool: number };
  train: TrainConfig & { sub_batch_size: number; fix_encoder: boolean; fix_position_embedding: boolean };
  eval: EvalConfig;
}
