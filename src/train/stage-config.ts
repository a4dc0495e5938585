/**
 * Reading a stage config: the `stage` key picks the schema (retromae, pairs, unified), `--set` overrides
 * apply, and input paths (model.*, data.train, data.cache_dir, eval.data) resolve against the config
 * file's folder so shipped configs work from any directory; output_dir resolves against the working dir.
 */
import * as path from 'path';
import { checkEvalConfig } from '../eval/config';
import { finetuneSchema, FinetuneConfig } from '../finetune/config';
import { pretrainSchema, PretrainConfig } from '../pretrain/config';
import { applySets, readYamlConfig } from '../util/config-file';
import { UserError } from '../util/errors';
import { closest, validate } from '../util/schema';

export const STAGES = ['retromae', 'pairs', 'unified'] as const;
export type StageKind = (typeof STAGES)[number];
export type StageConfig = PretrainConfig | FinetuneConfig;

export function loadStageConfig(file: string, sets: string[] = []): StageConfig {
  const { value, locate } = readYamlConfig(file);
  applySets(value, sets);
  const where = (p: string[]) => {
    const set = sets.find((s) => s.startsWith(p.join('.') + '='));
    return set ? `--set ${set.split('=')[0]}` : locate(p);
  };
  const stage = value.stage;
  if (typeof stage !== 'string' || !(STAGES as readonly string[]).includes(stage)) {
    const hint = typeof stage === 'string' ? closest(stage, [...STAGES]) : null;
    throw new UserError(`${where(['stage'])}: key 'stage' must be one of ${STAGES.join(', ')}, got ${JSON.stringify(stage)}${hint ? ` (did you mean '${hint}'?)` : ''}`);
  }
  const cfg = validate<StageConfig>(stage === 'retromae' ? pretrainSchema() : finetuneSchema(stage as 'pairs' | 'unified'), value, where);
  const base = path.dirname(path.resolve(file));
  const rel = (p: string | undefined) => (p === undefined ? p : path.resolve(base, p));
  cfg.model.init = rel(cfg.model.init);
  cfg.model.config = rel(cfg.model.config);
  cfg.model.tokenizer = rel(cfg.model.tokenizer);
  cfg.data.train = cfg.data.train.map((p) => path.resolve(base, p));
  cfg.data.cache_dir = path.resolve(base, cfg.data.cache_dir);
  cfg.output_dir = path.resolve(cfg.output_dir);
  if (cfg.eval.data) cfg.eval.data = path.resolve(base, cfg.eval.data);
  checkEvalConfig(cfg.eval, file);
  return cfg;
}
