/** The `model:` section of a stage config: where the encoder comes from and what a stage changes in it. */
import { Infer, Schema } from '../util/schema';

export const MODEL_SCHEMA = {
  init: { type: 'string', optional: true, doc: 'model dir to start from (HF / FlagEmbedding / a previous stage)' },
  config: { type: 'string', optional: true, doc: 'HF config.json to start from scratch (with `tokenizer`)' },
  tokenizer: { type: 'string', optional: true, doc: 'tokenizer dir (default: the init dir)' },
  extend_positions: { type: 'int', default: 0, min: 0, doc: 'grow the position table to this many rows (stage 1 of the paper: 8194)' },
} as const satisfies Schema;

/** The section of stages that train the M3 heads (pairs and unified). */
export const HEADS_MODEL_SCHEMA = {
  ...MODEL_SCHEMA,
  colbert_dim: { type: 'int', default: -1, doc: 'ColBERT head width when heads are created; -1 = hidden size' },
} as const satisfies Schema;

export type ModelSection = Infer<typeof MODEL_SCHEMA>;
