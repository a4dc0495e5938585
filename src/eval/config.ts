/**
 * The `eval:` section of a stage config: evaluation on a BEIR dev split every N optimizer steps, and which
 * metric of which mode picks the best checkpoint. The section is optional in effect: without `data`,
 * evaluation is off (`evalEnabled`). A relative `data` path is the stage runner's to resolve (against the
 * config file's folder).
 *
 *   eval:
 *     data: ../shared/data/retrieval/nfcorpus
 *     split: dev
 *     modes: [dense, all]
 *     steps: 200
 *     max_queries: 100
 *     max_length: 256
 *     metric: ndcg@10
 */
import { UserError } from '../util/errors';
import { Infer, Schema } from '../util/schema';
import { M3Model } from '../model/m3';
import { BeirEvalOptions, DEFAULT_MAX_LENGTH, DEFAULT_TOP_K, evaluateBeir, EvalResults } from './beir';
import { DEFAULT_MODE_WEIGHTS, Mode, MODE_ALIASES, MODES } from '../model/scores';
import { METRIC_NAMES, RetrievalMetrics } from './metrics';

export const EVAL_SCHEMA = {
  data: { type: 'string', optional: true, doc: 'BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv); evaluation is off without it' },
  split: { type: 'string', default: 'dev', doc: 'qrels/<split>.tsv' },
  modes: { type: 'list', of: { type: 'enum', values: MODES, aliases: MODE_ALIASES }, default: ['dense'], minItems: 1, doc: 'sparse, colbert and the hybrids need M3 heads' },
  steps: { type: 'int', default: 0, min: 0, doc: 'evaluate every N optimizer steps (0: only at the end of the stage)' },
  max_queries: { type: 'int', optional: true, min: 1, doc: 'only the first N judged queries (qrels order)' },
  max_length: { type: 'int', default: DEFAULT_MAX_LENGTH, min: 2, doc: 'document truncation in tokens' },
  query_max_length: { type: 'int', optional: true, min: 2, doc: 'query truncation in tokens (default: max_length)' },
  top_k: { type: 'int', default: DEFAULT_TOP_K, min: 1, doc: 'documents retrieved per query and mode' },
  weights: { type: 'list', of: { type: 'number' }, default: [...DEFAULT_MODE_WEIGHTS], minItems: 3, doc: 'dense, sparse, colbert weights of the hybrid modes' },
  batch_size: { type: 'int', default: 32, min: 1, doc: 'encoding batch size' },
  metric: { type: 'enum', values: METRIC_NAMES, default: 'ndcg@10', doc: 'metric that picks the best checkpoint' },
  metric_mode: { type: 'enum', values: MODES, aliases: MODE_ALIASES, optional: true, doc: "mode whose metric picks the best checkpoint (default: 'all' when evaluated, else the first mode)" },
} as const satisfies Schema;

/** The validated section. */
export type EvalConfig = Infer<typeof EVAL_SCHEMA>;

/** Checks what the schema cannot: three weights, and a metric_mode that is among the evaluated modes. */
export function checkEvalConfig(cfg: EvalConfig, where = 'eval'): void {
  if (cfg.weights.length !== 3) throw new UserError(`${where}: key 'eval.weights' needs exactly 3 numbers (dense, sparse, colbert), got ${cfg.weights.length}`);
  if (cfg.metric_mode && !cfg.modes.includes(cfg.metric_mode)) {
    throw new UserError(`${where}: key 'eval.metric_mode' is '${cfg.metric_mode}', which is not in eval.modes (${cfg.modes.join(', ')})`);
  }
}

export const evalEnabled = (cfg: EvalConfig): boolean => !!cfg.data;

/** Whether to evaluate after optimizer step `step` (1-based) of a stage of `totalSteps` steps. */
export function evalDue(cfg: EvalConfig, step: number, totalSteps: number): boolean {
  if (!evalEnabled(cfg)) return false;
  return step === totalSteps || (cfg.steps > 0 && step % cfg.steps === 0);
}

/** evaluateBeir options for this section (`progress` off: the training log reports the result). */
export function evalOptions(cfg: EvalConfig): BeirEvalOptions {
  return {
    split: cfg.split,
    modes: cfg.modes,
    weights: cfg.weights.slice(0, 3) as [number, number, number],
    maxLength: cfg.max_length,
    queryMaxLength: cfg.query_max_length,
    topK: cfg.top_k,
    batchSize: cfg.batch_size,
    maxQueries: cfg.max_queries,
    progress: false,
  };
}

/** The mode whose metric decides the best checkpoint. */
export function selectionMode(cfg: EvalConfig): Mode {
  return cfg.metric_mode ?? (cfg.modes.includes('all') ? 'all' : cfg.modes[0]);
}

/** The number that decides the best checkpoint (higher is better). */
export function selectionScore(cfg: EvalConfig, results: EvalResults): number {
  const m = results[selectionMode(cfg)];
  if (!m) throw new Error(`eval: mode '${selectionMode(cfg)}' was not evaluated (modes: ${cfg.modes.join(', ')})`);
  return m[cfg.metric];
}

/** Flat metric names for metrics.jsonl: { "eval/dense/ndcg@10": x, ... }. */
export function flattenResults(results: EvalResults, prefix = 'eval'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [mode, m] of Object.entries(results) as [Mode, RetrievalMetrics][]) {
    for (const name of METRIC_NAMES) out[`${prefix}/${mode}/${name}`] = m[name];
  }
  return out;
}

/** A stage's `evaluate` hook: the BEIR dev evaluation when due, its flat metrics and selection score. */
export function stageEvaluator(model: M3Model, cfg: EvalConfig) {
  return {
    due: (step: number, total: number) => evalDue(cfg, step, total),
    run: async (): Promise<{ metrics: Record<string, number>; score: number }> => {
      const results = await evaluateBeir(model, cfg.data!, evalOptions(cfg));
      return { metrics: flattenResults(results), score: selectionScore(cfg, results) };
    },
  };
}
