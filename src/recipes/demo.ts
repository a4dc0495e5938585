/**
 * The demo (`m3 demo`, `npm start`): a pipeline (configs/demo/pipeline.yaml: RetroMAE → pairs → unified
 * from scratch) run into OUT (resumable: finished stages are skipped, an interrupted one continues from its
 * newest checkpoint), with a BEIR evaluation (configs/demo/eval.yaml, an `eval:` section of a stage config)
 * of the untrained model and of every stage's final model, always in the same modes. Writes
 * OUT/results.json and OUT/report.html.
 *
 * Models without M3 heads (the untrained encoder, RetroMAE's and the pairs stage's) are evaluated with the
 * fresh heads the unified stage adds when it starts (`addStageHeads`: its colbert_dim, seed and sparse_init), so that
 * every row of the table has every mode: their sparse / ColBERT numbers are those of untrained heads over
 * that stage's encoder. The untrained model is stage 1's own starting point (the same seeded init).
 *
 * With `ablations` two arms follow, each rerunning part of the pipeline with the same budget and settings
 * through `runPipeline` into OUT/ablations/<arm>, its final model evaluated as the stages are; "with" is the
 * demo's own final model (see `ablationArms`). results.json gets `ablations` only from a run that asked for
 * them; the arms' stage dirs and cached evaluations stay, so asking again re-reads them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { resolveModelSources } from '../model/hub';
import { disposeModel, hasHeads, loadModel, loadOrInitModel, M3Model } from '../model/m3';
import { evaluateBeir, EvalResults, formatResultsTable } from '../eval/beir';
import { checkEvalConfig, EVAL_SCHEMA, EvalConfig, evalOptions } from '../eval/config';
import { BeirDataset, loadBeir } from '../eval/data';
import { detectEvalData } from '../eval/datasets';
import { METRIC_NAMES, RetrievalMetrics } from '../eval/metrics';
import { writeReport } from '../eval/report';
import { FinetuneConfig } from '../finetune/config';
import { addStageHeads, unifiedHeadSpec } from '../finetune/runner';
import { CONFIG_OVERRIDES } from '../model/schema';
import { Mode } from '../model/scores';
import { readFinished } from '../train/checkpoint';
import { loadConfig } from '../util/config-file';
import { UserError } from '../util/errors';
import { writeFileAtomic } from '../util/fsx';
import { activeBackend } from '../backend';
import { estimateLine } from './demo-estimate';
import { pipelineStages, runPipeline, StageRun, StartAt } from './pipeline';
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
  /** Also run the ablation arms (`ablationArms`) and evaluate their final models. */
  ablations?: boolean;
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

/** nDCG@10 of one model by evaluated mode. */
export type ModeNdcg = Partial<Record<Mode, number>>;

export type Ablation = 'retromae' | 'self_distill';

export interface DemoResults {
  stages: DemoStage[];
  final_model: string;
  eval: { data: string; split: string; queries: number; documents: number; modes: Mode[]; max_length: number; query_max_length: number | null };
  /** With `ablations` only: "with" is the final stage's model, "without" the arm's final model. */
  ablations?: Record<Ablation, { with: ModeNdcg; without: ModeNdcg }>;
  wall_s: number;
}

export function loadEvalConfig(file: string, sets: string[] = []): EvalConfig {
  const cfg = loadConfig<EvalConfig>(file, EVAL_SCHEMA, sets, '--eval-set').config;
  if (!cfg.data) throw new UserError(`${file}: key 'data' is required (a BEIR folder to evaluate on)`);
  cfg.data = cfg.data.map((d) => path.resolve(path.dirname(path.resolve(file)), d));
  if (cfg.data.length !== 1 || detectEvalData(cfg.data[0]).format !== 'beir') {
    throw new UserError(`${file}: key 'data' must be one BEIR folder for m3 demo (its report compares stages on nDCG@10, Recall@100, MRR@10); got ${cfg.data.join(', ')}`);
  }
  checkEvalConfig(cfg, file);
  return cfg;
}

/** The stage whose fresh heads a head-less model is evaluated with: the first unified stage (else pairs). */
function headStage(stages: StageConfig[]): FinetuneConfig {
  const s = stages.find((c): c is FinetuneConfig => c.stage === 'unified') ?? stages.find((c): c is FinetuneConfig => c.stage !== 'retromae');
  if (!s) throw new UserError('demo: the pipeline has no pairs or unified stage to take evaluation heads from');
  return s;
}

/** A demo ablation arm: the pipeline rerun from stage `from.index` into OUT/ablations/<dir>. */
interface Arm { ablation: Ablation; dir: string; from: StartAt; what: string }

/**
 * The arms of `--ablations`, each with the same budget and settings as the demo's stages:
 *   retromae      stages 2.. from stage 1's own starting point (the untrained model) instead of RetroMAE's final;
 *   self_distill  the last (unified) stage again from the previous stage's final, with loss.use_self_distill off
 *                 (and self_distill_start_step, then inert, removed).
 * A from-scratch arm initialises with its own stage's train.seed: stage 1's init when the seeds agree, as in
 * the shipped configs (overriding it would change the arm's data order instead).
 */
export function ablationArms(file: string, stages: StageConfig[]): Arm[] {
  const first = stages[0];
  const last = stages[stages.length - 1];
  if (first.stage !== 'retromae' || stages.length < 2) throw new UserError(`${file}: --ablations needs a retromae first stage followed by others (to train without it)`);
  if (last.stage !== 'unified' || !last.loss.use_self_distill) throw new UserError(`${file}: --ablations needs a last stage 'unified' with loss.use_self_distill: true (to train without it)`);
  const n = stages.length;
  const later = n > 2 ? `stages 2-${n}` : 'stage 2';
  return [
    { ablation: 'retromae', dir: 'no-retromae', from: { index: 1, sets: startOf(first, stages[1]) }, what: `${later} from the ${first.model.init ? 'initial' : 'untrained'} model` },
    {
      ablation: 'self_distill', dir: 'no-self-distill', what: `stage ${n} without self-distillation`,
      from: { index: n - 1, sets: [...startOf(last, last), 'loss.use_self_distill=false', 'loss.self_distill_start_step=null'] },
    },
  ];
}

/**
 * Overrides that start stage `to` where `from` starts: its model dir, or its from-scratch config and
 * tokenizer with the config.json overrides `to` would have inherited through `from`'s saved model.
 */
function startOf(from: StageConfig, to: StageConfig): string[] {
  const m = from.model;
  const sets = m.init ? [`model.init=${m.init}`] : ['model.init=null', `model.config=${m.config}`];
  if (m.tokenizer) sets.push(`model.tokenizer=${m.tokenizer}`);
  for (const k of CONFIG_OVERRIDES) if (m[k] !== undefined && to.model[k] === undefined) sets.push(`model.${k}=${m[k]}`);
  return sets;
}

interface Cached { key: string; results: EvalResults; eval_s: number; train_s: number | null; fresh_heads?: boolean }

const round = (x: number) => Math.round(x * 1e4) / 1e4;

const ndcgByMode = (r: EvalResults): ModeNdcg => Object.fromEntries(Object.entries(r).map(([m, x]) => [m, x!['ndcg@10']]));

/** A table of nDCG@10: one row per model, one column per mode. */
export function formatNdcgTable(title: string, first: string, rows: { name: string; modes: ModeNdcg }[], modes: readonly Mode[]): string {
  const width = Math.max(10, first.length + 1, ...rows.map((r) => r.name.length + 1));
  const head = [first.padEnd(width), ...modes.map((m) => m.padStart(13))].join(' ');
  const lines = rows.map((r) => [r.name.padEnd(width), ...modes.map((m) => (r.modes[m] !== undefined ? r.modes[m]!.toFixed(4) : '—').padStart(13))].join(' '));
  return [title, head, ...lines].join('\n') + '\n';
}

export async function runDemo(o: DemoOptions): Promise<DemoResults> {
  const t0 = performance.now();
  const write = o.write ?? ((s: string) => process.stdout.write(s));
  const out = path.resolve(o.outputDir);
  const userSets = (o.sets ?? []).filter((s) => !s.startsWith('output_dir='));
  const sets = [...userSets, `output_dir=${out}`];
  const stages = pipelineStages(o.pipeline, sets); // validates every stage config before anything runs
  const arms = o.ablations ? ablationArms(o.pipeline, stages) : [];
  const armSets = (arm: Arm) => [...userSets, `output_dir=${path.join(out, 'ablations', arm.dir)}`];
  const armStages = arms.flatMap((arm) => pipelineStages(o.pipeline, armSets(arm), arm.from)); // and the arms' configs
  const evalCfg = loadEvalConfig(o.evalConfig, o.evalSets ?? []);
  const opts = { ...evalOptions(evalCfg), progress: true };
  const headCfg = headStage(stages);
  const heads = { ...unifiedHeadSpec(headCfg), sparseInit: headCfg.model.sparse_init, ...(headCfg.model.sparse_init === 'idf' && { data: headCfg.data }) };
  let dataset: BeirDataset | null = null;
  const data = () => (dataset ??= loadBeir(evalCfg.data![0], evalCfg.split, { maxQueries: evalCfg.max_queries }));
  process.stderr.write(estimateLine(activeBackend(), {
    stages: [...stages, ...armStages], evaluations: stages.length + 1 + arms.length, evalTexts: data().queryIds.length + data().corpus.ids.length,
  }));
  const cacheDir = path.join(out, 'eval');
  fs.mkdirSync(cacheDir, { recursive: true });
  const stopped = () => new UserError(`demo: stopped before the last stage finished; rerun the same command to continue`);

  /** Evaluates a model (or reuses the cached evaluation OUT/eval/<file> of an unchanged one) and prints its table. */
  const evaluate = async (file: string, title: string, makeModel: () => M3Model, key: object, trainS: number | null, reuse: boolean): Promise<Cached> => {
    const cacheFile = path.join(cacheDir, file);
    const keyStr = JSON.stringify({ ...key, eval: evalCfg, heads });
    let cached: Cached | null = null;
    if (reuse && fs.existsSync(cacheFile)) {
      try {
        const c = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as Cached;
        if (c.key === keyStr) cached = c;
      } catch { /* a damaged cache entry is recomputed */ }
    }
    if (!cached) {
      const t = performance.now();
      const model = makeModel();
      try {
        const freshHeads = !hasHeads(model);
        if (freshHeads) await addStageHeads(model, headCfg);
        process.stderr.write(`demo: evaluating ${title} on ${evalCfg.data![0]} (${evalCfg.split})\n`);
        const r = await evaluateBeir(model, data(), opts);
        cached = { key: keyStr, results: r, eval_s: (performance.now() - t) / 1000, train_s: trainS, fresh_heads: freshHeads };
      } finally {
        disposeModel(model);
      }
      writeFileAtomic(cacheFile, JSON.stringify(cached) + '\n');
    }
    write(`\n== ${title}${cached.fresh_heads ? ' (fresh sparse/ColBERT heads)' : ''} ==\n${formatResultsTable(cached.results)}`);
    return cached;
  };

  const results: DemoStage[] = [];
  const evaluateStage = async (index: number, name: string, modelDir: string | null, makeModel: () => M3Model, key: object, trainS: number | null, reuse: boolean) => {
    const c = await evaluate(`${index}-${name}.json`, `${index}. ${name}`, makeModel, key, trainS, reuse);
    const all = c.results.all ?? Object.values(c.results)[0]!;
    results.push({
      name,
      ...(Object.fromEntries(METRIC_NAMES.map((m) => [m, round(all[m])])) as Record<keyof RetrievalMetrics, number>),
      modes: Object.fromEntries(Object.entries(c.results).map(([m, r]) => [m, Object.fromEntries(METRIC_NAMES.map((k) => [k, round(r![k])]))])) as EvalResults,
      model: modelDir,
      fresh_heads: !!c.fresh_heads,
      train_s: c.train_s === null ? null : Math.round(c.train_s * 10) / 10,
      eval_s: Math.round(c.eval_s * 10) / 10,
    });
  };
  /** A stage's final model, evaluated unless the stage was skipped and its evaluation is cached. */
  const finalOf = (run: StageRun) => {
    const dir = path.join(run.config.output_dir, 'final');
    return { dir, make: () => loadModel(dir, { requireTokenizer: true }), key: { model: dir, finished: readFinished(run.config.output_dir) }, reuse: run.result === null };
  };

  const first = stages[0];
  const initName = first.model.init ? 'initial' : 'untrained';
  const firstModel = await resolveModelSources(first.model);
  await evaluateStage(0, initName, first.model.init ?? null,
    () => loadOrInitModel(firstModel, first.train.seed, first.output_dir),
    { model: first.model, seed: first.train.seed }, null, true);

  let stageStart = performance.now();
  const runs = await runPipeline(o.pipeline, sets, {
    resume: true,
    onStage: async (run, i) => {
      const trainS = run.result ? (performance.now() - stageStart) / 1000 : null;
      if (run.result?.stoppedEarly) return;
      const f = finalOf(run);
      await evaluateStage(i + 1, run.name, f.dir, f.make, f.key, trainS, f.reuse);
      stageStart = performance.now();
    },
  });
  if (runs.length < stages.length || runs[runs.length - 1].result?.stoppedEarly) throw stopped();

  let ablations: DemoResults['ablations'];
  for (const arm of arms) {
    const armOut = path.join(out, 'ablations', arm.dir);
    process.stderr.write(`demo: ablation ${arm.ablation}: ${arm.what}, in ${armOut}\n`);
    const armRuns = await runPipeline(o.pipeline, armSets(arm), { resume: true, from: arm.from });
    const last = armRuns[armRuns.length - 1];
    if (armRuns.length < stages.length - arm.from.index || last.result?.stoppedEarly) throw stopped();
    const f = finalOf(last);
    const c = await evaluate(`ablation-${arm.dir}.json`, `without ${arm.ablation}: ${arm.what}`, f.make, f.key, null, f.reuse);
    const without = Object.fromEntries(Object.entries(ndcgByMode(c.results)).map(([m, x]) => [m, round(x!)]));
    (ablations ??= {} as NonNullable<DemoResults['ablations']>)[arm.ablation] = { with: ndcgByMode(results[results.length - 1].modes), without };
  }

  const finalModel = path.join(stages[stages.length - 1].output_dir, 'final');
  const ds = data();
  const res: DemoResults = {
    stages: results,
    final_model: finalModel,
    eval: {
      data: evalCfg.data![0], split: evalCfg.split, queries: ds.queryIds.length, documents: ds.corpus.ids.length,
      modes: evalCfg.modes, max_length: evalCfg.max_length, query_max_length: evalCfg.query_max_length ?? null,
    },
    ...(ablations && { ablations }),
    wall_s: Math.round((performance.now() - t0) / 100) / 10,
  };
  writeFileAtomic(path.join(out, 'results.json'), JSON.stringify(res, null, 2) + '\n');
  write(`\n${formatNdcgTable('nDCG@10 by stage and mode', 'stage', results.map((s) => ({ name: s.name, modes: ndcgByMode(s.modes) })), evalCfg.modes)}`);
  if (ablations) {
    const rows = Object.entries(ablations).flatMap(([a, x]) => [{ name: `${a}: with`, modes: x.with }, { name: `${a}: without`, modes: x.without }]);
    write(`\n${formatNdcgTable('nDCG@10 with and without each ablated part', 'ablation', rows, evalCfg.modes)}`);
  }
  const report = writeReport(out);
  process.stderr.write(`demo: ${path.join(out, 'results.json')}, ${report}; final model ${finalModel}\n`);
  return res;
}
