/** The `train:` section shared by every stage config (HF TrainingArguments names where they exist). */
import { UserError } from '../util/errors';
import { Infer, Schema } from '../util/schema';
import { SCHEDULES } from './schedule';

export const TRAIN_SCHEMA = {
  learning_rate: { type: 'number', default: 1e-5, min: 0, doc: 'peak learning rate' },
  weight_decay: { type: 'number', default: 0.01, min: 0 },
  adam_beta1: { type: 'number', default: 0.9, min: 0, max: 1 },
  adam_beta2: { type: 'number', default: 0.999, min: 0, max: 1 },
  adam_epsilon: { type: 'number', default: 1e-8, min: 0 },
  max_grad_norm: { type: 'number', default: 1.0, min: 0, doc: '0 disables clipping' },
  schedule: { type: 'enum', values: SCHEDULES, default: 'linear' },
  warmup_ratio: { type: 'number', default: 0.1, min: 0, max: 1, doc: 'warmup as a fraction of max_steps (when warmup_steps is 0)' },
  warmup_steps: { type: 'int', default: 0, min: 0, doc: 'overrides warmup_ratio when > 0' },
  max_steps: { type: 'int', default: -1, min: -1, doc: 'optimizer steps; -1 = epochs × steps per epoch' },
  epochs: { type: 'number', default: 1, min: 0, doc: 'passes over the data when max_steps is -1' },
  grad_accum: { type: 'int', default: 1, min: 1, doc: 'micro-batches per optimizer step' },
  save_steps: { type: 'int', default: 0, min: 0, doc: 'checkpoint every N steps (and always at the end)' },
  save_total_limit: { type: 'int', default: 2, min: 0, doc: 'checkpoints kept; 0 = all' },
  log_steps: { type: 'int', default: 1, min: 1 },
  seed: { type: 'int', default: 42 },
  fix_position_embedding: { type: 'bool', default: false, doc: 'freeze position embeddings' },
  bf16: { type: 'bool', default: false, doc: 'bf16 autocast (torch backend): matmuls and attention in bfloat16; weights, optimizer, norms, softmax and losses in float32' },
  report_to: { type: 'list', of: { type: 'enum', values: ['tensorboard', 'all', 'none'] }, single: true, default: ['none'], doc: 'tensorboard (or all): event files in OUTPUT_DIR/runs as the run goes; none: metrics.jsonl only' },
  dist_timeout_s: { type: 'int', default: 60, min: 1, doc: 'data parallel: longest wait for another rank (joining, each collective) before stopping with an error' },
} as const satisfies Schema;

/** What the training loop reads (the stage runners read the rest of their `train:` section). */
export type TrainConfig = Infer<typeof TRAIN_SCHEMA>;

/** Whether `train.report_to` asks for TensorBoard event files; `none` beside an integration is a contradiction. */
export function reportsToTensorboard(reportTo: readonly string[], where = 'train'): boolean {
  if (reportTo.includes('none') && reportTo.length > 1) throw new UserError(`${where}: key 'train.report_to' lists 'none' beside ${reportTo.filter((r) => r !== 'none').join(', ')}; write one or the other`);
  return reportTo.includes('tensorboard') || reportTo.includes('all');
}
