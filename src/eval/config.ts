/**
 * The `eval:` section of a stage config: evaluation every N optimizer steps on one dataset or a list of
 * them, in any format `m3 eval --data` reads (src/eval/datasets.ts: a BEIR or MIRACL/MLDR folder, XQuAD-R,
 * a Tatoeba pair), and which metric of which mode picks the best checkpoint. The section is optional in
 * effect: without `data`, evaluation is off (`evalEnabled`). Relative `data` paths are the stage runner's to
 * resolve (against the config file's folder). One BEIR folder logs `eval/<mode>/<metric>` as always;
 * anything else logs those names for the macro average over its rows (a row per dataset, and per language
 * of an XQuAD-R folder) and `eval/<row>/<mode>/<metric>` per row when there are several, so `m3 report`
 * shows them; the macro average picks the best checkpoint.
 *
 *   eval:
 *     data: ../shared/data/retrieval/nfcorpus      # or a list: [miracl/sw, miracl/te, xquad-r]
 *     split: dev
 *     modes: [dense, all]
 *     steps: 200
 *     max_queries: 100
 *     max_length: 256
 *     metric: ndcg@10
 */
import * as fs from 'fs';
import { UserError } from '../util/errors';
import { Infer, Schema } from '../util/schema';
import { M3Model } from '../model/m3';
import { BeirEvalOptions, DEFAULT_MAX_LENGTH, DEFAULT_TOP_K, evaluateBeir } from './beir';
import { DEFAULT_MODE_WEIGHTS, Mode, MODE_ALIASES, MODES } from '../model/scores';
import { detectEvalData, EvalDataSpec, isRetrievalFormat } from './datasets';
import { ALL_METRICS, checkFormatModes, evaluateDatasets, FORMAT_METRICS, MetricName, ModeMetrics, rowLabels } from './multi';

export const EVAL_SCHEMA = {
  data: { type: 'list', of: { type: 'string' }, single: true, minItems: 1, optional: true, doc: 'dataset(s) as m3 eval --data takes them (BEIR or MIRACL/MLDR folder, XQuAD-R file or folder, Tatoeba pair): one path or a list; evaluation is off without it' },
  split: { type: 'string', default: 'dev', doc: 'qrels/<split>.tsv of a BEIR folder, <split>.jsonl of a Hugging Face folder' },
  modes: { type: 'list', of: { type: 'enum', values: MODES, aliases: MODE_ALIASES }, default: ['dense'], minItems: 1, doc: 'sparse, colbert and the hybrids need M3 heads' },
  steps: { type: 'int', default: 0, min: 0, doc: 'evaluate every N optimizer steps (0: only at the end of the stage)' },
  max_queries: { type: 'int', optional: true, min: 1, doc: 'only the first N judged queries (qrels order)' },
  max_length: { type: 'int', default: DEFAULT_MAX_LENGTH, min: 2, doc: 'document truncation in tokens' },
  query_max_length: { type: 'int', optional: true, min: 2, doc: 'query truncation in tokens (default: max_length)' },
  top_k: { type: 'int', default: DEFAULT_TOP_K, min: 1, doc: 'documents retrieved per query and mode' },
  weights: { type: 'list', of: { type: 'number' }, default: [...DEFAULT_MODE_WEIGHTS], minItems: 3, doc: 'dense, sparse, colbert weights of the hybrid modes' },
  batch_size: { type: 'int', default: 32, min: 1, doc: 'encoding batch size' },
  metric: { type: 'enum', values: ALL_METRICS, optional: true, doc: "metric that picks the best checkpoint (default: the first dataset's first: ndcg@10, map@20 for XQuAD-R, accuracy for Tatoeba)" },
  mcls: { type: 'bool', default: false, doc: 'dense scoring through multiple CLS (a CLS every 256 tokens), dense mode only' },
  metric_mode: { type: 'enum', values: MODES, aliases: MODE_ALIASES, optional: true, doc: "mode whose metric picks the best checkpoint (default: 'all' when evaluated, else the first mode)" },
} as const satisfies Schema;

/** The validated section. */
export type EvalConfig = Infer<typeof EVAL_SCHEMA>;

/**
 * Checks what the schema cannot: three weights, a metric_mode among the evaluated modes, and, when `data`
 * exists, what its format can do (modes, metric); keys `written` that the format does not read are refused.
 */
export function checkEvalConfig(cfg: EvalConfig, where = 'eval', written: (key: string) => boolean = () => false): void {
  if (cfg.weights.length !== 3) throw new UserError(`${where}: key 'eval.weights' needs exactly 3 numbers (dense, sparse, colbert), got ${cfg.weights.length}`);
  if (cfg.metric_mode && !cfg.modes.includes(cfg.metric_mode)) {
    throw new UserError(`${where}: key 'eval.metric_mode' is '${cfg.metric_mode}', which is not in eval.modes (${cfg.modes.join(', ')})`);
  }
  if (cfg.mcls && cfg.modes.some((m) => m !== 'dense')) throw new UserError(`${where}: key 'eval.mcls' scores dense only, but eval.modes is ${cfg.modes.join(', ')}`);
  const specs = (cfg.data ?? []).filter((d) => fs.existsSync(d)).map((d) => detectEvalData(d)); // a missing path fails when evaluation loads it
  for (const spec of specs) checkFormatModes(spec, cfg.modes, `${where}: key 'eval.modes'`);
  if (cfg.metric && specs.length && !specs.some((s) => FORMAT_METRICS[s.format].includes(cfg.metric!))) {
    throw new UserError(`${where}: key 'eval.metric' is '${cfg.metric}', which no dataset of eval.data reports (${specs.map((s) => `${s.name}: ${FORMAT_METRICS[s.format].join(', ')}`).join('; ')})`);
  }
  if (specs.length && specs.every((s) => !isRetrievalFormat(s.format))) {
    for (const k of ['split', 'top_k', 'weights', 'metric_mode']) {
      if (written(k)) throw new UserError(`${where}: key 'eval.${k}' has no effect: ${specs.map((s) => s.name).join(', ')} ${specs.length > 1 ? 'are' : 'is'} scored by dense nearest neighbours (${[...new Set(specs.map((s) => s.format))].join(', ')}); remove it`);
    }
  }
  if (specs.length && specs.every((s) => s.format === 'tatoeba')) {
    for (const k of ['max_length', 'query_max_length']) {
      if (written(k)) throw new UserError(`${where}: key 'eval.${k}' has no effect: a Tatoeba pair is encoded as m3 encode does (the model's maximum length); remove it`);
    }
  }
}

export const evalEnabled = (cfg: EvalConfig): boolean => !!cfg.data?.length;

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
    mcls: cfg.mcls,
    progress: false,
  };
}

/** The mode whose metric decides the best checkpoint. */
export function selectionMode(cfg: EvalConfig): Mode {
  return cfg.metric_mode ?? (cfg.modes.includes('all') ? 'all' : cfg.modes[0]);
}

/** The metric that decides the best checkpoint: eval.metric, else the first dataset's format's first. */
export function selectionMetric(cfg: EvalConfig, spec?: Pick<EvalDataSpec, 'format'>): MetricName {
  return cfg.metric ?? FORMAT_METRICS[spec?.format ?? 'beir'][0];
}

/** The number that decides the best checkpoint (higher is better). */
export function selectionScore(cfg: EvalConfig, results: ModeMetrics, spec?: Pick<EvalDataSpec, 'format'>): number {
  const m = results[selectionMode(cfg)];
  const metric = selectionMetric(cfg, spec);
  if (!m || m[metric] === undefined) throw new Error(`eval: ${selectionMode(cfg)}/${metric} was not evaluated (modes: ${cfg.modes.join(', ')})`);
  return m[metric]!;
}

/** Flat metric names for metrics.jsonl: { "eval/dense/ndcg@10": x, ... }. */
export function flattenResults(results: ModeMetrics, prefix = 'eval'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [mode, m] of Object.entries(results) as [Mode, Partial<Record<MetricName, number>>][]) {
    for (const [name, v] of Object.entries(m) as [MetricName, number][]) out[`${prefix}/${mode}/${name}`] = v;
  }
  return out;
}

/**
 * A stage's `evaluate` hook: the evaluation when due, its flat metrics and selection score. One BEIR folder
 * is evaluated as always; anything else through evaluateDatasets, its macro average under the same names.
 */
export function stageEvaluator(model: M3Model, cfg: EvalConfig) {
  return {
    due: (step: number, total: number) => evalDue(cfg, step, total),
    run: async (): Promise<{ metrics: Record<string, number>; score: number }> => {
      const specs = cfg.data!.map((d) => detectEvalData(d));
      if (specs.length === 1 && specs[0].format === 'beir') {
        const results = await evaluateBeir(model, specs[0].path, evalOptions(cfg));
        return { metrics: flattenResults(results), score: selectionScore(cfg, results, specs[0]) };
      }
      const r = await evaluateDatasets(model, specs, evalOptions(cfg));
      const metrics = flattenResults(r.macro);
      if (r.datasets.length > 1) rowLabels(r.datasets).forEach((label, i) => Object.assign(metrics, flattenResults(r.datasets[i].metrics, `eval/${label}`)));
      return { metrics, score: selectionScore(cfg, r.macro, specs[0]) };
    },
  };
}
