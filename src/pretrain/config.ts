/**
 * Stage config of RetroMAE pretraining (stage 1). Masking defaults are RetroMAE's (staoxiao/RetroMAE
 * `DataTrainingArguments`: encoder_mlm_probability 0.3, decoder_mlm_probability 0.5).
 */
import { EVAL_SCHEMA } from '../eval/config';
import { MODEL_SCHEMA } from '../model/schema';
import { TRAIN_SCHEMA } from '../train/config';
import { Infer, Schema } from '../util/schema';
import { RETROMAE_DEFAULTS } from './masking';

export function pretrainSchema() {
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
      encoder_mlm_probability: { type: 'number', default: RETROMAE_DEFAULTS.encoderRatio, min: 0, max: 1 },
      decoder_mlm_probability: { type: 'number', default: RETROMAE_DEFAULTS.decoderRatio, min: 0, max: 1 },
      decoder_mask_pool: { type: 'int', default: RETROMAE_DEFAULTS.poolSize, min: 1, doc: 'whole-word masks drawn per sequence for the decoder rows (FlagEmbedding: 128)' },
    } },
    train: { type: 'object', fields: TRAIN_SCHEMA },
    eval: { type: 'object', fields: EVAL_SCHEMA },
  } as const satisfies Schema;
}

export type PretrainConfig = Infer<ReturnType<typeof pretrainSchema>>;
