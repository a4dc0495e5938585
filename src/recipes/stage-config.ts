/**
 * Reading a stage config: the `stage` key picks the schema (retromae, pairs, unified), `--set` overrides
 * apply, and input paths (model.*, data.train, data.cache_dir, eval.data) resolve against the config
 * file's folder so shipped configs work from any directory; output_dir resolves against the working dir.
 * `model.init` and `model.tokenizer` that are no path there but read `org/name[@revision]` stay Hub ids (the
 * stage runners fetch them, src/model/hub.ts).
 *
 * Every key a user writes must act: a key of another stage's schema is an error naming the stage, and so
 * is a key whose setting makes it inert (SETTING_RULES). Defaults the schema fills in are never errors.
 */
import * as path from 'path';
import { checkEvalConfig } from '../eval/config';
import { finetuneSchema, FinetuneConfig } from '../finetune/config';
import { modelSpec } from '../model/hub';
import { pretrainSchema, PretrainConfig } from '../pretrain/config';
import { reportsToTensorboard } from '../train/config';
import { isWritten, loadConfig } from '../util/config-file';
import { UserError } from '../util/errors';
import { closest, Locate, Schema } from '../util/schema';

export const STAGES = ['retromae', 'pairs', 'unified'] as const;
export type StageKind = (typeof STAGES)[number];
export type StageConfig = PretrainConfig | FinetuneConfig;

const schemaOf = (stage: StageKind): Schema => (stage === 'retromae' ? pretrainSchema() : finetuneSchema(stage));

/**
 * Keys that act only in some settings; writing one where it does nothing is an error (not a notice: a run
 * that silently ignores a setting is the failure this guards against). `inert` says when and why.
 */
export const SETTING_RULES: { key: string; inert: (c: StageConfig) => string | null }[] = [
  { key: 'train.warmup_ratio', inert: (c) => (c.train.warmup_steps > 0 ? 'train.warmup_steps > 0 sets the warmup' : null) },
  { key: 'train.epochs', inert: (c) => (c.train.max_steps > 0 ? 'train.max_steps > 0 sets the length of the run' : null) },
  { key: 'model.config', inert: (c) => (c.model.init ? 'model.init is set (config.json comes from that dir)' : null) },
  { key: 'model.initializer_range', inert: (c) => (c.model.init && c.stage !== 'retromae' ? 'model.init is set and this stage initialises no weights from it' : null) },
  ...['ensemble_weights', 'loss_weights', 'use_self_distill', 'self_distill_start_step'].map((k) => ({
    key: `loss.${k}`, inert: (c: StageConfig) => (c.stage !== 'retromae' && !c.loss.unified_finetuning ? 'loss.unified_finetuning is false (dense loss only)' : null),
  })),
  ...['colbert_dim', 'sparse_init'].map((k) => ({
    key: `model.${k}`, inert: (c: StageConfig) => (c.stage !== 'retromae' && !c.loss.unified_finetuning ? 'loss.unified_finetuning is false (no heads are added)' : null),
  })),
  { key: 'loss.self_distill_start_step', inert: (c) => (c.stage !== 'retromae' && !c.loss.use_self_distill ? 'loss.use_self_distill is false' : null) },
  { key: 'loss.negatives_cross_device_modes', inert: (c) => (c.stage !== 'retromae' && !c.loss.negatives_cross_device ? 'loss.negatives_cross_device is false' : null) },
  { key: 'loss.kd_loss_type', inert: (c) => (c.stage !== 'retromae' && !c.data.knowledge_distillation ? 'data.knowledge_distillation is false (no teacher scores)' : null) },
  ...['split', 'modes', 'steps', 'max_queries', 'max_length', 'query_max_length', 'top_k', 'weights', 'batch_size', 'metric', 'metric_mode', 'mcls'].map((k) => ({
    key: `eval.${k}`, inert: (c: StageConfig) => (!c.eval.data?.length ? 'eval.data is not set (evaluation is off)' : null),
  })),
];

export function loadStageConfig(file: string, sets: string[] = []): StageConfig {
  // `--set model.init=DIR` (and a pipeline's previous stage) replaces the file's starting point, from-scratch
  // `model.config` included, rather than leaving it written and inert; `model.init=null` removes it instead.
  const init = sets.filter((s) => s.startsWith('model.init=')).pop();
  const overrides = init && init !== 'model.init=null' ? [...sets, 'model.config=null'] : sets;
  const { config: cfg, written, where } = loadConfig<StageConfig>(file, (w, at) => schemaOf(stageOf(w, at)), overrides);
  checkSettings(cfg, written, where);
  const base = path.dirname(path.resolve(file));
  const rel = (p: string | undefined) => (p === undefined ? p : path.resolve(base, p));
  const spec = (p: string | undefined) => (p === undefined ? p : modelSpec(p, base));
  cfg.model.init = spec(cfg.model.init);
  cfg.model.config = rel(cfg.model.config);
  cfg.model.tokenizer = spec(cfg.model.tokenizer);
  cfg.data.train = cfg.data.train.map((p) => path.resolve(base, p));
  cfg.data.cache_dir = path.resolve(base, cfg.data.cache_dir);
  cfg.output_dir = path.resolve(cfg.output_dir);
  if (cfg.eval.data) cfg.eval.data = cfg.eval.data.map((p) => path.resolve(base, p));
  checkEvalConfig(cfg.eval, file, (k) => isWritten(written, ['eval', k]));
  reportsToTensorboard(cfg.train.report_to, file);
  return cfg;
}

/** The written `stage`; a key that belongs to another stage only is named with the stages that read it. */
function stageOf(written: Record<string, unknown>, where: Locate): StageKind {
  const stage = written.stage;
  if (typeof stage !== 'string' || !(STAGES as readonly string[]).includes(stage)) {
    const hint = typeof stage === 'string' ? closest(stage, [...STAGES]) : null;
    throw new UserError(`${where(['stage'])}: key 'stage' must be one of ${STAGES.join(', ')}, got ${JSON.stringify(stage)}${hint ? ` (did you mean '${hint}'?)` : ''}`);
  }
  const own = schemaOf(stage as StageKind);
  for (const [section, value] of Object.entries(written)) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) continue;
    const ownFields = own[section]?.type === 'object' ? (own[section] as { fields: Schema }).fields : null;
    for (const key of Object.keys(value)) {
      if (ownFields && key in ownFields) continue;
      const readers = STAGES.filter((s) => s !== stage && (schemaOf(s)[section] as { fields?: Schema } | undefined)?.fields?.[key]);
      if (readers.length) {
        throw new UserError(`${where([section, key])}: key '${section}.${key}' is not read by stage '${stage}' (only by ${readers.join(', ')}); remove it`);
      }
    }
  }
  return stage as StageKind;
}

function checkSettings(cfg: StageConfig, written: Record<string, unknown>, where: Locate): void {
  for (const rule of SETTING_RULES) {
    const p = rule.key.split('.');
    if (!isWritten(written, p)) continue;
    const why = rule.inert(cfg);
    if (why) throw new UserError(`${where(p)}: key '${rule.key}' has no effect in stage '${cfg.stage}': ${why}; remove it`);
  }
}
