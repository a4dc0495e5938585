/**
 * Evaluation over several datasets at once, the way the M3 paper reports MIRACL, MLDR and the cross-lingual
 * sets: one row per dataset and language, then the macro average (the unweighted mean over those rows of
 * each mode's metric; a metric counts only the rows that report it).
 *
 *   beir, hf-jsonl  every requested mode; nDCG@10, Recall@100, MRR@10 (trec_eval's, src/eval/metrics.ts)
 *   xquad-r         mode dense; map@20 per question language (src/eval/xquad.ts)
 *   tatoeba         mode dense; accuracy, accuracy_to_eng, accuracy_from_eng (src/eval/bitext.ts)
 *
 * `mcls` scores dense through multiple CLS (`m3 encode --mcls`: a CLS every 256 tokens, inputs still cut at
 * the max length), for long documents as the paper's MLDR table does; it is dense-only.
 */
import * as fs from 'fs';
import * as path from 'path';
import { M3Model } from '../model/m3';
import { maxInputLength } from '../model/config';
import { Mode } from '../model/scores';
import { UserError } from '../util/errors';
import { evaluateBitext, readTatoebaPair, tatoebaPairOf } from './bitext';
import { BeirEvalOptions, checkModesSupported, DEFAULT_MAX_LENGTH, encodeCollection, parseModes, retrieveBeir, scoreRuns } from './beir';
import { loadBeir } from './data';
import { EvalDataSpec, EvalFormat, isRetrievalFormat } from './datasets';
import { hfSplitFile, hfSplits, loadHfJsonl } from './hf-jsonl';
import { evaluateXquadR, loadXquadR, XquadEncoder, XquadPool } from './xquad';

/** Every metric name a dataset row can carry, in table order. */
export const ALL_METRICS = ['ndcg@10', 'recall@100', 'mrr@10', 'map@20', 'accuracy', 'accuracy_to_eng', 'accuracy_from_eng'] as const;
export type MetricName = (typeof ALL_METRICS)[number];

/** The metrics each format reports; the first is the one a stage picks its best checkpoint by, by default. */
export const FORMAT_METRICS: Record<EvalFormat, readonly MetricName[]> = {
  'beir': ['ndcg@10', 'recall@100', 'mrr@10'],
  'hf-jsonl': ['ndcg@10', 'recall@100', 'mrr@10'],
  'xquad-r': ['map@20'],
  'tatoeba': ['accuracy', 'accuracy_to_eng', 'accuracy_from_eng'],
};

export type ModeMetrics = Partial<Record<Mode, Partial<Record<MetricName, number>>>>;

export interface DatasetResult {
  name: string;
  format: EvalFormat;
  language: string | null;
  metrics: ModeMetrics;
}

export interface MultiResults {
  datasets: DatasetResult[];
  macro: ModeMetrics;
}

export interface MultiEvalOptions extends BeirEvalOptions {
  /** Dense scoring through multiple CLS (dense mode only). */
  mcls?: boolean;
  /** One line per dataset on stderr: its size and timings (default: with progress). */
  log?: (line: string) => void;
}

/** Refuses modes a format cannot score: XQuAD-R and Tatoeba score with dense only. */
export function checkFormatModes(spec: Pick<EvalDataSpec, 'format' | 'name'>, modes: readonly Mode[], where = 'modes'): void {
  if (!isRetrievalFormat(spec.format) && (modes.length !== 1 || modes[0] !== 'dense')) {
    throw new UserError(`${where}: ${spec.name} is ${spec.format}, which is scored with mode dense only (got ${modes.join(', ')})`);
  }
}

/** The unweighted mean over rows of each (mode, metric) that some row reports. */
export function macroAverage(rows: readonly DatasetResult[]): ModeMetrics {
  const sums = new Map<string, { mode: Mode; metric: MetricName; sum: number; n: number }>();
  for (const r of rows) {
    for (const [mode, ms] of Object.entries(r.metrics) as [Mode, Partial<Record<MetricName, number>>][]) {
      for (const [metric, v] of Object.entries(ms) as [MetricName, number][]) {
        const k = `${mode}\t${metric}`;
        const s = sums.get(k) ?? { mode, metric, sum: 0, n: 0 };
        s.sum += v;
        s.n++;
        sums.set(k, s);
      }
    }
  }
  const out: ModeMetrics = {};
  for (const { mode, metric, sum, n } of sums.values()) (out[mode] ??= {})[metric] = sum / n;
  for (const mode of Object.keys(out) as Mode[]) {
    out[mode] = Object.fromEntries(ALL_METRICS.filter((m) => out[mode]![m] !== undefined).map((m) => [m, out[mode]![m]]));
  }
  return out;
}

/** Evaluates each dataset in turn (rows in --data order; an XQuAD-R folder gives one row per language). */
export async function evaluateDatasets(model: M3Model, specs: readonly EvalDataSpec[], opts: MultiEvalOptions = {}): Promise<MultiResults> {
  const modes = opts.modes ?? ['dense'];
  if (opts.mcls && modes.some((m) => m !== 'dense')) throw new UserError(`--mcls scores dense only; use --modes dense (got ${modes.join(', ')})`);
  parseModes(modes);
  for (const s of specs) checkFormatModes(s, modes);
  checkModesSupported(model, modes);
  if (!model.tokenizer) throw new UserError(`${model.source}: no tokenizer files (tokenizer.json or vocab.txt); evaluation needs one to encode text`);
  const progress = opts.progress ?? true;
  const log = opts.log ?? ((line: string) => progress && process.stderr.write(line + '\n'));
  const modelMax = maxInputLength(model.config);
  const maxLength = Math.min(opts.maxLength ?? DEFAULT_MAX_LENGTH, modelMax);
  const queryMaxLength = Math.min(opts.queryMaxLength ?? maxLength, modelMax);
  const denseEncoder: XquadEncoder = async (m, texts, len, label) =>
    (await encodeCollection(m, texts, ['dense'], { maxLength: len, batchSize: opts.batchSize, label, progress, mcls: opts.mcls })).dense!;
  // The small formats are read (and any fault in them reported) before anything is encoded; BEIR and
  // Hugging Face corpora, which can be large, are loaded one at a time.
  const small = specs.map((s) => (s.format === 'xquad-r' ? loadXquadR(s.path, { maxQueries: opts.maxQueries })
    : s.format === 'tatoeba' ? readTatoebaPair(tatoebaPairOf(s.path)!, opts.maxQueries) : null));
  for (const s of specs) {
    const split = opts.split ?? 'dev';
    if (s.format === 'beir' && !fs.existsSync(path.join(s.path, 'qrels', `${split}.tsv`))) throw new UserError(`${s.path}: no qrels/${split}.tsv for split '${split}'`);
    if (s.format === 'hf-jsonl' && !hfSplitFile(s.path, split)) throw new UserError(`${s.path}: no ${split}.jsonl for split '${split}' (splits here: ${hfSplits(s.path).join(', ')})`);
  }
  const rows: DatasetResult[] = [];
  for (const [i, spec] of specs.entries()) {
    const t = performance.now();
    const secs = () => ((performance.now() - t) / 1000).toFixed(1);
    if (isRetrievalFormat(spec.format)) {
      const dataset = spec.format === 'beir'
        ? loadBeir(spec.path, opts.split ?? 'dev', { maxQueries: opts.maxQueries })
        : loadHfJsonl(spec.path, opts.split ?? 'dev', { maxQueries: opts.maxQueries });
      const { runs } = await retrieveBeir(model, dataset, opts);
      rows.push({ name: spec.name, format: spec.format, language: spec.language, metrics: scoreRuns(dataset, runs) as ModeMetrics });
      log(`${spec.name} (${spec.format}, ${dataset.split}): ${dataset.queryIds.length} queries, ${dataset.corpus.ids.length} documents, ${secs()} s`);
    } else if (spec.format === 'xquad-r') {
      const pool = small[i] as XquadPool;
      const byLang = await evaluateXquadR(model, pool, denseEncoder, { maxLength, queryMaxLength });
      for (const [lang, map] of byLang) rows.push({ name: spec.name, format: spec.format, language: lang, metrics: { dense: { 'map@20': map } } });
      const questions = [...pool.questions.values()].reduce((a, q) => a + q.ids.length, 0);
      log(`${spec.name} (xquad-r, ${pool.languages.join(' ')}): ${questions} questions, ${pool.candidates.texts.length} candidates, ${secs()} s`);
    } else {
      const r = await evaluateBitext(model, small[i] as { xxx: string[]; eng: string[] }, spec.language!, { batchSize: opts.batchSize, mcls: opts.mcls, progress });
      rows.push({ name: spec.name, format: spec.format, language: spec.language, metrics: { dense: { 'accuracy': r.accuracy, 'accuracy_to_eng': r.accuracy_to_eng, 'accuracy_from_eng': r.accuracy_from_eng } } });
      log(`${spec.name} (tatoeba): ${r.pairs} sentence pairs, ${secs()} s`);
    }
  }
  return { datasets: rows, macro: macroAverage(rows) };
}

/** The `--json` object: exactly {datasets: [{name, format, language, metrics}], macro}. */
export function multiResultsJson(r: MultiResults): MultiResults {
  return { datasets: r.datasets.map(({ name, format, language, metrics }) => ({ name, format, language, metrics })), macro: r.macro };
}

const HEADS: Record<MetricName, string> = {
  'ndcg@10': 'nDCG@10', 'recall@100': 'Recall@100', 'mrr@10': 'MRR@10', 'map@20': 'mAP@20',
  'accuracy': 'Acc', 'accuracy_to_eng': 'Acc→eng', 'accuracy_from_eng': 'Acc←eng',
};

/** One fixed-width table: a row per dataset, language and mode, then the macro average per mode. */
export function formatMultiTable(r: MultiResults): string {
  const metrics = ALL_METRICS.filter((m) => r.datasets.some((d) => Object.values(d.metrics).some((ms) => ms?.[m] !== undefined)));
  const rows: string[][] = [];
  for (const d of r.datasets) {
    for (const [mode, ms] of Object.entries(d.metrics) as [Mode, Partial<Record<MetricName, number>>][]) {
      rows.push([d.name, d.language ?? '-', mode, ...metrics.map((m) => (ms[m] === undefined ? '-' : ms[m]!.toFixed(4)))]);
    }
  }
  const macro = (Object.entries(r.macro) as [Mode, Partial<Record<MetricName, number>>][])
    .map(([mode, ms]) => ['macro', '', mode, ...metrics.map((m) => (ms[m] === undefined ? '-' : ms[m]!.toFixed(4)))]);
  const head = ['dataset', 'lang', 'mode', ...metrics.map((m) => HEADS[m])];
  const all = [head, ...rows, ...macro];
  const widths = head.map((_, i) => Math.max(...all.map((row) => [...row[i]].length)));
  const line = (row: string[]) => row.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  const rule = '-'.repeat(widths.reduce((a, w) => a + w + 2, -2));
  return [line(head), ...rows.map(line), rule, ...macro.map(line)].join('\n') + '\n';
}

/** A short, unique label per row for flat metric names: the name, with the language when the name repeats. */
export function rowLabels(rows: readonly DatasetResult[]): string[] {
  const count = new Map<string, number>();
  for (const r of rows) count.set(r.name, (count.get(r.name) ?? 0) + 1);
  const used = new Set<string>();
  return rows.map((r) => {
    const base = (count.get(r.name)! > 1 && r.language ? `${r.name}/${r.language}` : r.name).replace(/\s+/g, '_');
    let label = base;
    for (let i = 2; used.has(label); i++) label = `${base}#${i}`;
    used.add(label);
    return label;
  });
}
