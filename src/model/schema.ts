/** The `model:` section of a stage config: where the encoder comes from and what a stage changes in it. */
import { Infer, Schema } from '../util/schema';
import { SPARSE_INITS } from './sparse-init';

/**
 * config.json fields a stage may override: numbers that change no tensor shape. The stage trains with the
 * value and its saved config.json records it (as HF does), so later stages inherit it unless they override
 * it too.
 */
const CONFIG_OVERRIDE_SCHEMA = {
  hidden_dropout_prob: { type: 'number', optional: true, min: 0, max: 1, doc: 'dropout on embeddings and hidden states (config.json override)' },
  attention_probs_dropout_prob: { type: 'number', optional: true, min: 0, max: 1, doc: 'dropout on attention probabilities (config.json override)' },
  layer_norm_eps: { type: 'number', optional: true, min: 0, doc: 'LayerNorm epsilon (config.json override)' },
  initializer_range: { type: 'number', optional: true, min: 0, doc: 'std of freshly initialised weights (config.json override)' },
} as const satisfies Schema;

export const CONFIG_OVERRIDES = Object.keys(CONFIG_OVERRIDE_SCHEMA) as (keyof typeof CONFIG_OVERRIDE_SCHEMA)[];
export type ConfigOverrides = Infer<typeof CONFIG_OVERRIDE_SCHEMA>;

export const MODEL_SCHEMA = {
  init: { type: 'string', optional: true, doc: 'model dir to start from (HF / FlagEmbedding / a previous stage) or Hub id org/name[@revision]' },
  config: { type: 'string', optional: true, doc: 'HF config.json to start from scratch (with `tokenizer`)' },
  tokenizer: { type: 'string', optional: true, doc: 'tokenizer dir or Hub id (default: the init model\'s)' },
  license: { type: 'string', optional: true, doc: 'license id for the model card (apache-2.0, mit, ...)' },
  extend_positions: { type: 'int', default: 0, min: 0, doc: 'grow the position table to this many rows (stage 1 of the paper: 8194)' },
  ...CONFIG_OVERRIDE_SCHEMA,
} as const satisfies Schema;

/** The section of stages that train the M3 heads (pairs and unified). */
export const HEADS_MODEL_SCHEMA = {
  ...MODEL_SCHEMA,
  colbert_dim: { type: 'int', default: -1, doc: 'ColBERT head width when heads are created; -1 = hidden size' },
  sparse_init: { type: 'enum', values: SPARSE_INITS, default: 'torch', doc: "sparse head when heads are created: torch.nn.Linear's init (FlagEmbedding's), or idf: fitted to the IDF of the stage's training passages (for encoders trained from scratch)" },
} as const satisfies Schema;

export type ModelSection = Infer<typeof MODEL_SCHEMA>;
