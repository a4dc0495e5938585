/**
 * `m3 report`: the page is self-contained (Chart.js inlined, no network) and renders in headless Chromium
 * (Debian's chromium driven by playwright-core) without page or console errors, every chart drawn.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { chromium, BrowserContext } from 'playwright-core';
import { buildCharts, readRun, writeReport } from '../../src/eval/report';
import { UserError } from '../../src/util/errors';
import { runCli } from '../helpers/cli';

const CHROMIUM = '/usr/bin/chromium';
const MODES = ['dense', 'sparse', 'colbert', 'dense+sparse', 'all'];
let tmp: string;
let runDir: string;

function writeStage(dir: string, stage: string, steps: number, terms: string[], evalEvery = 0) {
  fs.mkdirSync(dir, { recursive: true });
  const rows: string[] = [];
  for (let s = 1; s <= steps; s++) {
    const row: Record<string, unknown> = { stage, step: s, epoch: 0, loss: 3 / (1 + s / 10), lr: 1e-3 * Math.min(1, s / 5), grad_norm: 1 + 1 / s, tokens_per_s: 1000 + 10 * s, step_s: 0.5 };
    for (const t of terms) row[t] = 1 / s;
    rows.push(JSON.stringify(row));
    if (evalEvery && s % evalEvery === 0) rows.push(JSON.stringify({ stage, step: s, 'eval/dense/ndcg@10': s / 100, 'eval/all/ndcg@10': s / 80 }));
  }
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), rows.join('\n') + '\n{"stage": "' + stage + '", "step"'); // a cut last line
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-report-'));
  runDir = path.join(tmp, 'run');
  writeStage(path.join(runDir, '1-retromae'), 'retromae', 30, ['loss_encoder', 'loss_decoder']);
  writeStage(path.join(runDir, '2-pairs'), 'pairs', 20, []);
  writeStage(path.join(runDir, '3-unified'), 'unified', 25, ['dense', 'sparse', 'colbert', 'ensemble', 'distill'], 5);
  const metrics = (x: number) => ({ 'ndcg@10': x, 'recall@100': 2 * x, 'mrr@10': 1.5 * x });
  const stages = ['untrained', 'retromae', 'pairs', 'unified'].map((name, i) => ({
    name, ...metrics(0.1 + i / 50), modes: Object.fromEntries(MODES.map((m, j) => [m, metrics(0.05 + i / 50 + j / 100)])),
  }));
  const ndcg = (x: number) => Object.fromEntries(MODES.map((m, j) => [m, x + j / 100]));
  const ablations = { retromae: { with: ndcg(0.2), without: ndcg(0.15) }, self_distill: { with: ndcg(0.2), without: ndcg(0.18) } };
  fs.writeFileSync(path.join(runDir, 'results.json'), JSON.stringify({ stages, final_model: path.join(runDir, '3-unified/final'), ablations }));
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('charts: loss per stage with its terms, lr / throughput / grad norm across stages, evaluation', () => {
  const run = readRun(runDir);
  expect(run.stages.map((s) => [s.name, s.train.length, s.eval.length, s.badLines])).toEqual([['retromae', 30, 0, 1], ['pairs', 20, 0, 1], ['unified', 25, 5, 1]]);
  const charts = buildCharts(run);
  expect(charts.map((c) => c.id)).toEqual(['loss-0', 'loss-1', 'loss-2', 'lr', 'throughput', 'grad-norm', 'eval-2', 'results-ndcg10', 'results-recall100', 'results-mrr10']);
  expect(charts[0].datasets.map((d) => d.label)).toEqual(['loss', 'loss_encoder', 'loss_decoder']);
  const lr = charts.find((c) => c.id === 'lr')!;
  // steps continue across stages: pairs starts after retromae's 30
  expect((lr.datasets[1].data[0] as { x: number }).x).toBe(31);
  const ndcg = charts.find((c) => c.id === 'results-ndcg10')!;
  expect(ndcg.labels).toEqual(['untrained', 'retromae', 'pairs', 'unified']);
  expect(ndcg.datasets.map((d) => d.label)).toEqual(MODES);
});

test('tables: evaluation per stage and mode, ablations with and without, stages with what their times measure', () => {
  const html = fs.readFileSync(writeReport(runDir), 'utf8');
  const ablations = html.match(/<table id="ablations">.*?<\/table>/s)![0];
  expect(ablations.match(/<tr>/g)).toHaveLength(5); // head + 2 ablations × with/without
  expect(ablations).toMatch(/<td rowspan="2">retromae<\/td><td class="text">with<\/td><td>0\.2000<\/td>/);
  expect(ablations).toMatch(/<td class="text">without<\/td><td>0\.1800<\/td>(<td>0\.\d{4}<\/td>){4}<\/tr>/);
  expect(html).toContain('training time (s)</span>');
});

test('a dir without metrics or results is one clear error', () => {
  const empty = fs.mkdtempSync(path.join(tmp, 'empty-'));
  expect(() => readRun(empty)).toThrow(UserError);
  expect(() => readRun(path.join(tmp, 'missing'))).toThrow(/run dir does not exist/);
  const r = runCli(['report', empty]);
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toMatch(/^m3: error: .*no metrics\.jsonl .* no results\.json/);
});

describe('in headless Chromium', () => {
  let browser: BrowserContext;
  let userDataDir: string;

  beforeAll(async () => {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)`);
    userDataDir = fs.mkdtempSync(path.join(tmp, 'chromium-profile-'));
    // a fresh profile (user-data-dir) per run
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
  });

  afterAll(async () => {
    await browser?.close();
  });

  test('the evaluation table fits a 1280 px wide window without scrolling the page', async () => {
    const file = writeReport(runDir);
    const page = await browser.newPage();
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto('file://' + file, { waitUntil: 'load' });
    const box = await page.evaluate(() => ({
      table: document.getElementById('evaluation')!.getBoundingClientRect().right,
      columns: document.querySelectorAll('#evaluation tr:last-child td').length,
      page: document.documentElement.scrollWidth,
      window: document.documentElement.clientWidth,
    }));
    await page.close();
    expect(box.columns).toBe(1 + 3 * MODES.length);
    expect(box.table).toBeLessThanOrEqual(box.window);
    expect(box.page).toBeLessThanOrEqual(box.window);
  });

  test.each([['a pipeline run with results.json', () => runDir], ['a single stage', () => path.join(runDir, '3-unified')]])('%s renders every chart without errors', async (_, dir) => {
    const file = writeReport(dir());
    const html = fs.readFileSync(file, 'utf8');
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)=["']?(https?:)?\/\//i); // nothing fetched
    const page = await browser.newPage();
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    page.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
    await page.goto('file://' + file, { waitUntil: 'load' });
    await page.waitForFunction(() => (window as unknown as { __reportCharts?: number }).__reportCharts !== undefined, undefined, { timeout: 10000 });
    const state = await page.evaluate(() => {
      const w = window as unknown as { __reportCharts: number; Chart: { instances: Record<string, unknown> } };
      const canvases = [...document.querySelectorAll('canvas[data-chart]')] as HTMLCanvasElement[];
      return {
        drawn: w.__reportCharts,
        instances: Object.keys(w.Chart.instances).length,
        canvases: canvases.map((c) => {
          const ctx = c.getContext('2d')!;
          const px = ctx.getImageData(0, 0, c.width, c.height).data;
          let ink = 0;
          for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink++;
          return { id: c.dataset.chart, width: c.width, ink };
        }),
      };
    });
    await page.close();
    expect(errors).toEqual([]);
    expect(requests).toEqual([]);
    const expected = buildCharts(readRun(dir())).length;
    expect(state.canvases.length).toBe(expected);
    expect(state.drawn).toBe(expected);
    expect(state.instances).toBe(expected);
    for (const c of state.canvases) {
      expect(c.width).toBeGreaterThan(100);
      expect([c.id, c.ink > 500]).toEqual([c.id, true]);
    }
  });
});
