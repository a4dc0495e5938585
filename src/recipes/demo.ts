/**
 * The demo (`m3 demo`, `npm start`): a pipeline (configs/demo/pipeline.yaml: RetroMAE → pairs → unified
 * from scratch) run into OUT (resumable: finished stages are skipped, an interrupted one continues from its
 * newest checkpoint), with a BEIR evaluation (configs/demo/eval.yaml, an `eval:` section of a stage config)
 * of the untrained model and of every stage's final model, always in the same modes. Writes
 * OUT/results.json and OUT/report.html.
 *
 * Models without M3 heads (the untrained encoder, RetroMAE's and the pairs stage's) are evaluated with the
 * fresh heads the unified stage adds when it starts (`addHeads` with its colbert_dim and seed), so that
 * every row of the table has every mode: their sparse / ColBERT numbers are those of untrained heads over
 * that stage's encoder. The untrained model is stage 1's own starting point (the same seeded init).
 */
import * as fs from 'fs';
import * as path from 'path';
import { addHeads, disposeModel, hasHeads, loadModel, loadOrInitModel, M3Model } from '../model/m3';
import { evaluateBeir, EvalResults, formatResultsTable } from '../eval/beir';
import { checkEvalConfig, EVAL_SCHEMA, EvalConfig, evalOptions } from '../eval/config';
import { BeirDataset, loadBeir } from '../eval/data';
import { METRIC_NAMES, RetrievalMetrics } from '../eval/metrics';
import { writeReport } from '../eval/report';
import { FinetuneConfig } from '../finetune/config';
import { unifiedHeadSpec } from '../finetune/runner';
import { Mode } from '../model/scores';
import { readFinished } from '../train/checkpoint';
import { loadConfig } from '../util/config-file';
import { UserError } from '../util/errors';
import { writeFileAtomic } from '../util/fsx';
import { pipelineStages, runPipeline } from './pipeline';
import { StageConfig } from './stage-config';

export interface DemoOptions {
  /** The pipeline YAML (configs/demo/pipeline.yaml). */
  pipeline: string;
  /** A YAML file holding an `eval:` section's keys (configs/demo/eval.yaml); `data` resolves against its folder. */
  evalConfig: string;
  /** Where the stages, results.json and report.html go (the pipeline's output_dir is replaced). */
  outputDir: string;
  /** Stage overrides, as `m3 pipeline --set` (`train.max_steps=2`, `unified:train.max_steps=5`). */
  sets?: string[];
  /** Overrides of the evaluation config (`max_queries=20`). */
  evalSets?: string[];
  /** Where the per-stage tables go (default: stdout). */
  write?: (text: string) => void;
}

export interface DemoStage {
  name: string;
  'ndcg@10': number;
  'recall@100': number;
  'mrr@10': number;
  modes: EvalResults;
  /** The evaluated model dir (null for the untrained model, which exists only in memory). */
  model: string | null;
  /** Whether fresh heads were added to evaluate the sparse / ColBERT modes (see the file comment). */
  fresh_heads: boolean;
  /** Training wall time of the stage in the run that trained it (null: untrained, or unknown). */
  train_s: number | null;
  eval_s: number;
}

export interface DemoResults {
  stages: DemoStage[];
  final_model: string;
  eval: { data: string; split: string; queries: number; documents: number; modes: Mode[]; max_length: number; query_max_length: number | null };
  wall_s: number;
}

export function loadEvalConfig(file: string, sets: string[] = []): EvalConfig {
  const cfg = loadConfig<EvalConfig>(file, EVAL_SCHEMA, sets, '--eval-set').config;
  if (!cfg.data) throw new UserError(`${file}: key 'data' is required (a BEIR folder to evaluate on)`);
  cfg.data = path.resolve(path.dirname(path.resolve(file)), cfg.data);
  checkEvalConfig(cfg, file);
  return cfg;
}

/** The heads added to a head-less model for evaluation: those the first unified stage starts with. */
function headSpec(stages: StageConfig[]): { colbertDim: number; seed: number } {
  const s = stages.find((c): c is FinetuneConfig => c.stage === 'unified') ?? stages.find((c): c is FinetuneConfig => c.stage !== 'retromae');
  if (!s) throw new UserError('demo: the pipeline has no pairs or unified stage to take evaluation heads from');
  return unifiedHeadSpec(s);
}

interface Cached { key: string; results: EvalResults; eval_s: number; train_s: number | null }

const round = (x: number) => Math.round(x * 1e4) / 1e4;

/** A stage × mode table of nDCG@10. */
export function formatSummary(stages: DemoStage[], modes: readonly Mode[]): string {
  const width = Math.max(10, ...stages.map((s) => s.name.length + 1));
  const head = ['stage'.padEnd(width), ...modes.map((m) => m.padStart(13))].join(' ');
  const rows = stages.map((s) => [s.name.padEnd(width), ...modes.map((m) => (s.modes[m] ? s.modes[m]!['ndcg@10'].toFixed(4) : '—').padStart(13))].join(' '));
  return ['nDCG@10 by stage and mode', head, ...rows].join('\n') + '\n';
}

export async function runDemo(o: DemoOptions): Promise<DemoResults> {
  const t0 = performance.now();
  const write = o.write ?? ((s: string) => process.stdout.write(s));
  const out = path.resolve(o.outputDir);
  const sets = [...(o.sets ?? []).filter((s) => !s.startsWith('output_dir=')), `output_dir=${out}`];
  const stages = pipelineStages(o.pipeline, sets); // validates every stage config before anything runs
  const evalCfg = loadEvalConfig(o.evalConfig, o.evalSets ?? []);
  const opts = { ...evalOptions(evalCfg), progress: true };
  const heads = headSpec(stages);
  let dataset: BeirDataset | null = null;
  const data = () => (dataset ??= loadBeir(evalCfg.data!, evalCfg.split, { maxQueries: evalCfg.max_queries }));
  const cacheDir = path.join(out, 'eval');
  fs.mkdirSync(cacheDir, { recursive: true });
  const results: DemoStage[] = [];

  /** Evaluates (or reuses the cached evaluation of an unchanged model) and prints the stage's table. */
  const evaluate = async (index: number, name: string, modelDir: string | null, makeModel: () => M3Model, key: object, trainS: number | null, reuse: boolean) => {
    const file = path.join(cacheDir, `${index}-${name}.json`);
    const keyStr = JSON.stringify({ ...key, eval: evalCfg, heads });
    let cached: Cached | null = null;
    if (reuse && fs.existsSync(file)) {
      try {
        const c = JSON.parse(fs.readFileSync(file, 'utf8')) as Cached;
        if (c.key === keyStr) cached = c;
      } catch { /* a damaged cache entry is recomputed */ }
    }
    let freshHeads = false;
    if (!cached) {
      const t = performance.now();
      const model = makeModel();
      try {
        if (!hasHeads(model)) {
          addHeads(model, heads.colbertDim, heads.seed);
          freshHeads = true;
        }
        process.stderr.write(`demo: evaluating ${name} on ${evalCfg.data} (${evalCfg.split})\n`);
        const r = await evaluateBeir(model, data(), opts);
        cached = { key: keyStr, results: r, eval_s: (performance.now() - t) / 1000, train_s: trainS };
      } finally {
        disposeModel(model);
      }
      writeFileAtomic(file, JSON.stringify({ ...cached, fresh_heads: freshHeads }) + '\n');
    } else {
      freshHeads = !!(cached as Cached & { fresh_heads?: boolean }).fresh_heads;
    }
    const all = cached.results.all ?? Object.values(cached.results)[0]!;
    const stage: DemoStage = {
      name,
      ...(Object.fromEntries(METRIC_NAMES.map((m) => [m, round(all[m])])) as Record<keyof RetrievalMetrics, number>),
      modes: Object.fromEntries(Object.entries(cached.results).map(([m, r]) => [m, Object.fromEntries(METRIC_NAMES.map((k) => [k, round(r![k])]))])) as EvalResults,
      model: modelDir,
      fresh_heads: freshHeads,
      train_s: cached.train_s === null ? null : Math.round(cached.train_s * 10) / 10,
      eval_s: Math.round(cached.eval_s * 10) / 10,
    };
    results.push(stage);
    write(`\n== ${index}. ${name}${freshHeads ? ' (fresh sparse/ColBERT heads)' : ''} ==\n${formatResultsTable(cached.results)}`);
  };

  const first = stages[0];
  const initName = first.model.init ? 'initial' : 'untrained';
  await evaluate(0, initName, first.model.init ?? null,
    () => loadOrInitModel(first.model, first.train.seed, first.output_dir),
    { model: first.model, seed: first.train.seed }, null, true);

  let stageStart = performance.now();
  const runs = await runPipeline(o.pipeline, sets, {
    resume: true,
    onStage: async (run, i) => {
      const trainS = run.result ? (performance.now() - stageStart) / 1000 : null;
      const dir = path.join(run.config.output_dir, 'final');
      if (run.result?.stoppedEarly) return;
      const finished = readFinished(run.config.output_dir);
      await evaluate(i + 1, run.name, dir, () => loadModel(dir, { requireTokenizer: true }), { model: dir, finished }, trainS, run.result === null);
      stageStart = performance.now();
    },
  });
  if (runs.length < stages.length || runs[runs.length - 1].result?.stoppedEarly) {
    throw new UserError(`demo: stopped before the last stage finished; rerun the same command to continue`);
  }
  const finalModel = path.join(stages[stages.length - 1].output_dir, 'final');
  const ds = data();
  const res: DemoResults = {
    stages: results,
    final_model: finalModel,
    eval: {
      data: evalCfg.data!, split: evalCfg.split, queries: ds.queryIds.length, documents: ds.corpus.ids.length,
      modes: evalCfg.modes, max_length: evalCfg.max_length, query_max_length: evalCfg.query_max_length ?? null,
    },
    wall_s: Math.round((performance.now() - t0) / 100) / 10,
  };
  writeFileAtomic(path.join(out, 'results.json'), JSON.stringify(res, null, 2) + '\n');
  write(`\n${formatSummary(results, evalCfg.modes)}`);
  const report = writeReport(out);
  process.stderr.write(`demo: ${path.join(out, 'results.json')}, ${report}; final model ${finalModel}\n`);
  return res;
}
