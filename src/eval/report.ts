/**
 * `m3 report RUN_DIR`: one self-contained HTML page (Chart.js inlined from node_modules, data inlined as
 * JSON; no network) with the training curves and the evaluation results of a run:
 *
 *   - loss per stage, with the stage's loss terms (loss_encoder, dense, sparse, ...);
 *   - learning rate, throughput (tokens/s) and gradient norm over the run's steps, one line per stage;
 *   - evaluation during training (`eval/<mode>/<metric>` rows of metrics.jsonl, and `eval/<dataset>/<mode>/
 *     <metric>` per dataset row of a multilingual set), when a stage had an `eval:` section: a chart per
 *     stage, and a table of each stage's last evaluation;
 *   - the demo's evaluation per stage and mode (results.json), one bar chart per metric, and its ablations
 *     (nDCG@10 with and without each ablated part) as a table.
 *
 * RUN_DIR is a pipeline's output dir (stage dirs `<n>-<stage>` holding metrics.jsonl, optionally
 * results.json beside them) or a single stage's output dir.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../util/errors';
import { writeFileAtomic } from '../util/fsx';
import { METRIC_NAMES } from './metrics';

type Row = Record<string, unknown>;

export interface StageSeries {
  name: string;
  dir: string;
  /** Training rows (those with a `loss`), in step order. */
  train: Row[];
  /** Evaluation rows (`eval/<mode>/<metric>` keys). */
  eval: Row[];
  /** Lines of metrics.jsonl that did not parse (a crash can cut the last one). */
  badLines: number;
}

export interface RunData {
  dir: string;
  stages: StageSeries[];
  /** results.json of `m3 demo`, when present. */
  results: {
    stages: { name: string; modes: Record<string, Record<string, number>>; model?: string | null; train_s?: number | null; eval_s?: number }[];
    final_model?: string; wall_s?: number; eval?: Record<string, unknown>;
    ablations?: Record<string, { with: Record<string, number>; without: Record<string, number> }>;
  } | null;
}

const BASE_KEYS = new Set(['stage', 'step', 'epoch', 'loss', 'lr', 'grad_norm', 'tokens_per_s', 'step_s']);

function readMetrics(dir: string, fallbackName: string): StageSeries {
  const file = path.join(dir, 'metrics.jsonl');
  const train: Row[] = [];
  const evalRows: Row[] = [];
  let badLines = 0;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let row: Row;
    try {
      row = JSON.parse(line) as Row;
    } catch {
      badLines++;
      continue;
    }
    if (!row || typeof row !== 'object' || typeof row.step !== 'number') {
      badLines++;
      continue;
    }
    if (typeof row.loss === 'number') train.push(row);
    else if (Object.keys(row).some((k) => k.startsWith('eval/'))) evalRows.push(row);
  }
  const name = String(train[0]?.stage ?? evalRows[0]?.stage ?? fallbackName);
  return { name, dir, train, eval: evalRows, badLines };
}

/** Reads a run dir: its stage dirs' metrics.jsonl (or its own) and results.json. */
export function readRun(runDir: string): RunData {
  const dir = path.resolve(runDir);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`${runDir}: run dir does not exist`);
  let stages: StageSeries[];
  if (fs.existsSync(path.join(dir, 'metrics.jsonl'))) stages = [readMetrics(dir, path.basename(dir))];
  else {
    const subdirs = fs.readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory() && !e.name.startsWith('.') && fs.existsSync(path.join(dir, e.name, 'metrics.jsonl')))
      .map((e) => e.name)
      .sort((a, b) => (parseInt(a, 10) || 0) - (parseInt(b, 10) || 0) || a.localeCompare(b));
    stages = subdirs.map((s) => readMetrics(path.join(dir, s), s.replace(/^\d+-/, '')));
  }
  let results: RunData['results'] = null;
  const resultsFile = path.join(dir, 'results.json');
  if (fs.existsSync(resultsFile)) {
    try {
      results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'));
    } catch (e) {
      throw new UserError(`${resultsFile}: not valid JSON (${(e as Error).message})`);
    }
    if (!results || !Array.isArray(results.stages)) throw new UserError(`${resultsFile}: expected {"stages": [...]} as m3 demo writes it`);
  }
  if (!stages.length && !results) throw new UserError(`${runDir}: no metrics.jsonl (in it or in its stage dirs) and no results.json; is this a training run dir?`);
  return { dir, stages, results };
}

interface ChartSpec {
  id: string;
  title: string;
  kind: 'line' | 'bar';
  /** line: datasets of {x, y}; bar: labels and datasets of values. */
  labels?: string[];
  datasets: { label: string; data: (number | null | { x: number; y: number })[] }[];
  xLabel?: string;
  yLabel?: string;
  logY?: boolean;
}

const MAX_POINTS = 1500;

/** At most MAX_POINTS evenly spaced points, the last one always kept. */
function thin<T>(a: T[]): T[] {
  if (a.length <= MAX_POINTS) return a;
  const step = a.length / MAX_POINTS;
  const out: T[] = [];
  for (let i = 0; i < MAX_POINTS - 1; i++) out.push(a[Math.floor(i * step)]);
  out.push(a[a.length - 1]);
  return out;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function series(rows: Row[], key: string, offset = 0): { x: number; y: number }[] {
  return thin(rows.flatMap((r) => {
    const y = num(r[key]);
    return y === null ? [] : [{ x: (r.step as number) + offset, y }];
  }));
}

export function buildCharts(run: RunData): ChartSpec[] {
  const charts: ChartSpec[] = [];
  run.stages.forEach((s, i) => {
    if (!s.train.length) return;
    const terms = [...new Set(s.train.flatMap((r) => Object.keys(r)))].filter((k) => !BASE_KEYS.has(k) && s.train.some((r) => num(r[k]) !== null));
    charts.push({
      id: `loss-${i}`, title: `Loss — stage ${i + 1} (${s.name})`, kind: 'line', xLabel: 'step', yLabel: 'loss',
      datasets: [{ label: 'loss', data: series(s.train, 'loss') }, ...terms.map((k) => ({ label: k, data: series(s.train, k) }))],
    });
  });
  // whole-run curves: steps continue across stages
  const offsets: number[] = [];
  let total = 0;
  for (const s of run.stages) {
    offsets.push(total);
    total += s.train.length ? Math.max(...s.train.map((r) => r.step as number)) : 0;
  }
  const across = (key: string) => run.stages.map((s, i) => ({ label: `${i + 1}. ${s.name}`, data: series(s.train, key, offsets[i]) })).filter((d) => d.data.length);
  const whole: [string, string, string, string][] = [
    ['lr', 'Learning rate', 'lr', 'learning rate'],
    ['throughput', 'Throughput', 'tokens_per_s', 'tokens / s'],
    ['grad-norm', 'Gradient norm (before clipping)', 'grad_norm', 'global L2 norm'],
  ];
  for (const [id, title, key, yLabel] of whole) {
    const datasets = across(key);
    if (datasets.length) charts.push({ id, title, kind: 'line', xLabel: 'step (whole run)', yLabel, datasets });
  }
  run.stages.forEach((s, i) => {
    if (!s.eval.length) return;
    const keys = [...new Set(s.eval.flatMap((r) => Object.keys(r)))].filter((k) => k.startsWith('eval/')).sort();
    charts.push({
      id: `eval-${i}`, title: `Evaluation during training — stage ${i + 1} (${s.name})`, kind: 'line', xLabel: 'step', yLabel: 'metric',
      datasets: keys.map((k) => ({ label: k.slice('eval/'.length), data: series(s.eval, k) })),
    });
  });
  if (run.results?.stages.length) {
    const stages = run.results.stages;
    const modes = [...new Set(stages.flatMap((s) => Object.keys(s.modes ?? {})))];
    for (const metric of METRIC_NAMES) {
      charts.push({
        id: `results-${metric.replace(/[^a-z0-9]/g, '')}`, title: `${metric} per stage and mode`, kind: 'bar', yLabel: metric,
        labels: stages.map((s) => s.name),
        datasets: modes.map((m) => ({ label: m, data: stages.map((s) => num(s.modes?.[m]?.[metric])) })),
      });
    }
  }
  return charts;
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function chartJsSource(): string {
  // chart.js exports only its entry points; the UMD build sits beside the CommonJS one
  const file = path.join(path.dirname(require.resolve('chart.js')), 'chart.umd.js');
  if (!fs.existsSync(file)) throw new UserError(`${file}: Chart.js UMD build not found (run npm install)`);
  return fs.readFileSync(file, 'utf8').replace(/<\/script/gi, '<\\/script');
}

function fmt(x: number | null | undefined, digits = 4): string {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '—';
}

/** Short column heads, so that 5 modes × 3 metrics fit a laptop-wide page. */
const METRIC_HEADS: Record<string, string> = { 'ndcg@10': 'nDCG@10', 'recall@100': 'R@100', 'mrr@10': 'MRR@10' };

const ABLATION_ABOUT: Record<string, string> = {
  retromae: 'the stages after RetroMAE trained from the untrained model',
  self_distill: 'the last (unified) stage trained again from the same start without self-distillation',
};

function evaluationTable(results: NonNullable<RunData['results']>): string {
  const stages = results.stages;
  const modes = [...new Set(stages.flatMap((s) => Object.keys(s.modes ?? {})))];
  const head = `<tr><th>stage</th>${modes.map((m) => `<th colspan="3" class="group">${esc(m)}</th>`).join('')}</tr>` +
    `<tr><th></th>${modes.map(() => METRIC_NAMES.map((k, j) => `<th class="metric${j ? '' : ' group'}" title="${esc(k)}">${METRIC_HEADS[k] ?? esc(k)}</th>`).join('')).join('')}</tr>`;
  const rows = stages.map((s) => `<tr><td>${esc(s.name)}</td>${modes.map((m) => METRIC_NAMES.map((k, j) => `<td${j ? '' : ' class="group"'}>${fmt(s.modes?.[m]?.[k])}</td>`).join('')).join('')}</tr>`);
  const ev = results.eval as { data?: string; split?: string; queries?: number; documents?: number } | undefined;
  const about = ev ? `<p>${esc(String(ev.data ?? ''))} (${esc(String(ev.split ?? ''))}): ${ev.queries ?? '?'} queries, ${ev.documents ?? '?'} documents.</p>` : '';
  return `<h2>Retrieval evaluation</h2>${about}<div class="fit"><table id="evaluation">${head}${rows.join('')}</table></div>`;
}

/** Each stage's last evaluation during training: a row per `eval/...` metric, a column per stage. */
function stageEvalTable(run: RunData): string {
  const stages = run.stages.map((s, i) => ({ title: `${i + 1}. ${s.name}`, last: s.eval[s.eval.length - 1] })).filter((s) => s.last);
  const keys = [...new Set(stages.flatMap((s) => Object.keys(s.last)))].filter((k) => k.startsWith('eval/')).sort();
  const head = `<tr><th>metric</th>${stages.map((s) => `<th>${esc(s.title)} (step ${esc(String(s.last.step))})</th>`).join('')}</tr>`;
  const rows = keys.map((k) => `<tr><td>${esc(k.slice('eval/'.length))}</td>${stages.map((s) => `<td>${fmt(num(s.last[k]))}</td>`).join('')}</tr>`);
  return `<h2>Evaluation during training</h2><p>The last evaluation of each stage (its <code>eval:</code> section; metrics.jsonl).</p>` +
    `<div class="fit"><table id="stage-evaluation">${head}${rows.join('')}</table></div>`;
}

function ablationTable(ablations: NonNullable<NonNullable<RunData['results']>['ablations']>): string {
  const arms = Object.entries(ablations);
  const modes = [...new Set(arms.flatMap(([, a]) => [...Object.keys(a.with ?? {}), ...Object.keys(a.without ?? {})]))];
  const rows = arms.map(([name, a]) => (['with', 'without'] as const).map((w, j) =>
    `<tr>${j ? '' : `<td rowspan="2">${esc(name)}</td>`}<td class="text">${w}</td>${modes.map((m) => `<td>${fmt(a[w]?.[m])}</td>`).join('')}</tr>`).join(''));
  const about = arms.map(([name]) => (ABLATION_ABOUT[name] ? ` Without ${esc(name)}: ${ABLATION_ABOUT[name]}.` : '')).join('');
  return `<h2>Ablations</h2><p>nDCG@10 of the final model with each part (the demo's own model) and without it, same steps and settings.${about}</p>` +
    `<div class="fit"><table id="ablations"><tr><th>ablation</th><th></th>${modes.map((m) => `<th>${esc(m)}</th>`).join('')}</tr>${rows.join('')}</table></div>`;
}

function stageTable(run: RunData): string {
  // the demo's evaluation of each stage's final model, matched by stage dir name (OUT/<n>-<stage>/final)
  const evalS = new Map((run.results?.stages ?? []).filter((r) => r.model).map((r) => [path.basename(path.dirname(r.model!)), r.eval_s]));
  const withEval = run.stages.some((s) => evalS.has(path.basename(s.dir)));
  const rows = run.stages.map((s, i) => {
    const last = s.train[s.train.length - 1];
    const times = s.train.map((r) => num(r.step_s)).filter((x): x is number => x !== null);
    // every step is logged by default; with train.log_steps > 1 the logged steps stand for all of them
    const secs = times.length && last ? (times.reduce((a, x) => a + x, 0) / times.length) * (last.step as number) : null;
    const tps = s.train.map((r) => num(r.tokens_per_s)).filter((x): x is number => x !== null);
    const median = tps.length ? [...tps].sort((a, b) => a - b)[tps.length >> 1] : null;
    return `<tr><td>${i + 1}. ${esc(s.name)}</td><td>${last ? last.step : '—'}</td><td>${fmt(num(last?.loss))}</td><td>${fmt(median, 0)}</td><td>${fmt(secs, 1)}</td>` +
      (withEval ? `<td>${fmt(evalS.get(path.basename(s.dir)), 1)}</td>` : '') +
      `<td>${esc(path.relative(run.dir, s.dir) || '.')}${s.badLines ? ` (${s.badLines} unreadable line${s.badLines > 1 ? 's' : ''} skipped)` : ''}</td></tr>`;
  });
  const heads = ['stage', 'steps', 'final loss', 'median tokens/s',
    '<span title="optimizer steps only (step_s in metrics.jsonl): no data preparation, checkpoints or evaluation">training time (s)</span>',
    ...(withEval ? ['<span title="the demo\'s retrieval evaluation of the stage\'s final model (eval_s in results.json)">evaluation time (s)</span>'] : []), 'dir'];
  return `<h2>Stages</h2><div class="fit"><table>${`<tr>${heads.map((h) => `<th>${h}</th>`).join('')}</tr>`}${rows.join('')}</table></div>`;
}

function tables(run: RunData): string {
  const parts: string[] = [];
  if (run.results?.stages.length) {
    parts.push(evaluationTable(run.results));
    if (run.results.final_model) parts.push(`<p>Final model: <code>${esc(run.results.final_model)}</code>${run.results.wall_s ? ` · demo wall time ${fmt(run.results.wall_s / 60, 1)} min` : ''}</p>`);
  }
  if (run.results?.ablations && Object.keys(run.results.ablations).length) parts.push(ablationTable(run.results.ablations));
  if (run.stages.some((s) => s.eval.length)) parts.push(stageEvalTable(run));
  if (run.stages.length) parts.push(stageTable(run));
  return parts.join('\n');
}

const PAGE_SCRIPT = `
(function () {
  var palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  var specs = JSON.parse(document.getElementById('report-data').textContent);
  var drawn = 0;
  specs.forEach(function (s) {
    var canvas = document.getElementById('chart-' + s.id);
    var datasets = s.datasets.map(function (d, i) {
      var c = palette[i % palette.length];
      return { label: d.label, data: d.data, borderColor: c, backgroundColor: s.kind === 'bar' ? c : c + '33',
        borderWidth: s.kind === 'bar' ? 0 : 1.5, pointRadius: s.kind === 'bar' ? 0 : (d.data.length > 60 ? 0 : 2), tension: 0 };
    });
    var scales = s.kind === 'bar'
      ? { y: { beginAtZero: true, title: { display: !!s.yLabel, text: s.yLabel } } }
      : { x: { type: 'linear', title: { display: !!s.xLabel, text: s.xLabel } }, y: { title: { display: !!s.yLabel, text: s.yLabel } } };
    new Chart(canvas, {
      type: s.kind,
      data: s.kind === 'bar' ? { labels: s.labels, datasets: datasets } : { datasets: datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false, parsing: s.kind === 'bar' ? undefined : false,
        interaction: { mode: 'nearest', intersect: false }, scales: scales,
        plugins: { title: { display: true, text: s.title }, legend: { position: 'bottom' } } },
    });
    drawn++;
  });
  window.__reportCharts = drawn;
})();
`;

/** The report page as one HTML string. */
export function renderReport(run: RunData): string {
  const charts = buildCharts(run);
  const data = JSON.stringify(charts).replace(/</g, '\\u003c');
  const title = `m3 training report — ${path.basename(run.dir)}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
th.group, td.group { border-left: 2px solid #888; }
th.metric { font-size: 12px; font-weight: normal; }
th[colspan] { text-align: center; }
.fit { max-width: 100%; overflow-x: auto; } /* a table wider than the window scrolls by itself, not the page */
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
.chart { position: relative; height: 320px; border: 1px solid #ddd; padding: 8px; }
code { font-size: 12px; }
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p>Run dir <code>${esc(run.dir)}</code> · ${run.stages.length} stage${run.stages.length === 1 ? '' : 's'} · generated ${esc(new Date().toISOString())}</p>
${tables(run)}
<h2>Charts</h2>
<div class="charts">
${charts.map((c) => `<div class="chart"><canvas id="chart-${c.id}" data-chart="${esc(c.id)}" role="img" aria-label="${esc(c.title)}"></canvas></div>`).join('\n')}
</div>
<script>${chartJsSource()}</script>
<script id="report-data" type="application/json">${data}</script>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
}

/** Writes RUN_DIR/report.html (or `file`) atomically; returns its path. */
export function writeReport(runDir: string, file?: string): string {
  const run = readRun(runDir);
  const target = path.resolve(file ?? path.join(run.dir, 'report.html'));
  writeFileAtomic(target, renderReport(run));
  return target;
}
