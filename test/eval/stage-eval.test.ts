/**
 * A stage's `eval.data` in every format `m3 eval` reads: the config checks each format's modes, metric and
 * keys (every written key acts or is refused), the stage evaluator logs the macro average under the usual
 * `eval/<mode>/<metric>` names plus one set per row, and `m3 report` shows the last evaluation in a table.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { checkEvalConfig, EVAL_SCHEMA, EvalConfig, stageEvaluator } from '../../src/eval/config';
import { evaluateDatasets } from '../../src/eval/multi';
import { detectEvalData } from '../../src/eval/datasets';
import { readRun, renderReport } from '../../src/eval/report';
import { loadStageConfig } from '../../src/recipes/stage-config';
import { validate } from '../../src/util/schema';
import { useBackend } from '../../src/backend';
import { sharedDir } from '../helpers/shared';
import { TINY_BERT } from './fixtures';
import { loadModel } from '../../src/model/m3';

const XQUAD = sharedDir('data', 'retrieval', 'xquad-r');
const TINY = path.resolve(__dirname, '../../configs/tiny');
const parse = (v: unknown) => validate<EvalConfig>(EVAL_SCHEMA, v, () => 'stage.yaml:3', ['eval']);
let tmp: string;
let xq: string;
let pair: string;

beforeAll(async () => {
  await useBackend('wasm');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-stage-eval-'));
  xq = path.join(tmp, 'xquad-r');
  fs.mkdirSync(xq);
  for (const l of ['de', 'en']) {
    const d = JSON.parse(fs.readFileSync(path.join(XQUAD, `${l}.json`), 'utf8'));
    fs.writeFileSync(path.join(xq, `${l}.json`), JSON.stringify({ data: [{ title: d.data[0].title, paragraphs: d.data[0].paragraphs.slice(0, 2) }] }));
  }
  pair = path.join(tmp, 'tatoeba.deu-eng.deu');
  fs.writeFileSync(pair, 'foo bar\nbaz\n');
  fs.writeFileSync(path.join(tmp, 'tatoeba.deu-eng.eng'), 'bar foo\nbaz qux\n');
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test("each format's modes, metric and keys are checked; written keys a format does not read are refused", () => {
  const written = (...keys: string[]) => (k: string) => keys.includes(k);
  expect(() => checkEvalConfig(parse({ data: xq }))).not.toThrow();
  expect(() => checkEvalConfig(parse({ data: xq, metric: 'map@20' }))).not.toThrow();
  expect(() => checkEvalConfig(parse({ data: xq, metric: 'ndcg@10' }), 'stage.yaml')).toThrow(/stage\.yaml: key 'eval\.metric' is 'ndcg@10', which no dataset of eval\.data reports \(xquad-r: map@20\)/);
  expect(() => checkEvalConfig(parse({ data: pair, modes: ['dense', 'sparse'] }), 'stage.yaml')).toThrow(/key 'eval\.modes': tatoeba\.deu-eng is tatoeba, which is scored with mode dense only/);
  expect(() => checkEvalConfig(parse({ data: pair, split: 'test' }), 'stage.yaml', written('split'))).toThrow(/key 'eval\.split' has no effect: tatoeba\.deu-eng is scored by dense nearest neighbours \(tatoeba\)/);
  expect(() => checkEvalConfig(parse({ data: pair, max_length: 64 }), 'stage.yaml', written('max_length'))).toThrow(/key 'eval\.max_length' has no effect: a Tatoeba pair is encoded as m3 encode does/);
  expect(() => checkEvalConfig(parse({ data: xq, max_length: 64 }), 'stage.yaml', written('max_length'))).not.toThrow(); // XQuAD-R reads it
  expect(() => checkEvalConfig(parse({ data: 'missing-dir', modes: ['dense', 'all'], mcls: true }))).toThrow(/key 'eval\.mcls' scores dense only/);
  expect(() => checkEvalConfig(parse({ data: pair, metric: 'accuracy_to_eng' }))).not.toThrow();
  // one path or a list: a scalar is a one-item list; the checks hold for each path
  expect(parse({ data: xq }).data).toEqual([xq]);
  expect(parse({ data: [xq, pair] }).data).toEqual([xq, pair]);
  expect(() => parse({ data: 3 })).toThrow(/key 'eval\.data' must be a string, got 3/);
  expect(() => parse({ data: [] })).toThrow(/key 'eval\.data' needs at least 1 item/);
  expect(() => checkEvalConfig(parse({ data: [xq, pair], metric: 'ndcg@10' }), 'stage.yaml')).toThrow(/'ndcg@10', which no dataset of eval\.data reports \(xquad-r: map@20; tatoeba\.deu-eng: accuracy, accuracy_to_eng, accuracy_from_eng\)/);
  expect(() => checkEvalConfig(parse({ data: [xq, pair], split: 'x' }), 'stage.yaml', written('split'))).toThrow(/key 'eval\.split' has no effect: xquad-r, tatoeba\.deu-eng are scored by dense nearest neighbours/);
  expect(() => checkEvalConfig(parse({ data: [xq, pair], max_length: 64 }), 'stage.yaml', written('max_length'))).not.toThrow(); // XQuAD-R reads it
});

test('a stage config with eval.data an XQuAD-R folder loads; a key the format does not read is refused, named with the file', () => {
  const cfgFile = path.join(tmp, 'pairs.yaml');
  fs.writeFileSync(cfgFile, [
    'stage: pairs', `output_dir: ${path.join(tmp, 'out')}`,
    'model:', `  config: ${TINY}/model/config.json`, `  tokenizer: ${TINY}/tokenizer`,
    'data:', `  train: [${TINY}/data/toy_pairs.jsonl]`, `  cache_dir: ${path.join(tmp, 'cache')}`,
    'eval:', `  data: ${xq}`, '  steps: 5', '',
  ].join('\n'));
  expect(loadStageConfig(cfgFile).eval).toMatchObject({ data: [xq], modes: ['dense'] });
  expect(loadStageConfig(cfgFile, [`eval.data=[${xq}, ${path.basename(pair)}]`]).eval.data).toEqual([xq, pair]); // relative to the config's folder
  fs.appendFileSync(cfgFile, '  top_k: 10\n');
  expect(() => loadStageConfig(cfgFile)).toThrow(/key 'eval\.top_k' has no effect: xquad-r is scored by dense nearest neighbours/);
});

test('the stage evaluator: macro under eval/<mode>/<metric>, each language under eval/<row>/…, selection on map@20; the report table', async () => {
  const model = loadModel(TINY_BERT);
  const cfg = parse({ data: xq });
  const { metrics, score } = await stageEvaluator(model, cfg).run();
  const direct = await evaluateDatasets(model, [detectEvalData(xq)], { modes: ['dense'], progress: false });
  expect(Object.keys(metrics).sort()).toEqual(['eval/dense/map@20', 'eval/xquad-r/de/dense/map@20', 'eval/xquad-r/en/dense/map@20']);
  expect(metrics['eval/xquad-r/de/dense/map@20']).toBe(direct.datasets[0].metrics.dense!['map@20']);
  expect(metrics['eval/dense/map@20']).toBeCloseTo((direct.datasets[0].metrics.dense!['map@20']! + direct.datasets[1].metrics.dense!['map@20']!) / 2, 12);
  expect(score).toBe(metrics['eval/dense/map@20']);
  // a list: the macro average over every row picks the best checkpoint, each row logged on its own
  const both = await stageEvaluator(model, parse({ data: [xq, pair] })).run();
  expect(Object.keys(both.metrics).sort()).toEqual([
    'eval/dense/accuracy', 'eval/dense/accuracy_from_eng', 'eval/dense/accuracy_to_eng', 'eval/dense/map@20',
    'eval/tatoeba.deu-eng/dense/accuracy', 'eval/tatoeba.deu-eng/dense/accuracy_from_eng', 'eval/tatoeba.deu-eng/dense/accuracy_to_eng',
    'eval/xquad-r/de/dense/map@20', 'eval/xquad-r/en/dense/map@20',
  ]);
  expect(both.metrics['eval/dense/map@20']).toBe(metrics['eval/dense/map@20']);
  expect(both.score).toBe(both.metrics['eval/dense/map@20']); // the first dataset's format picks the metric
  const tat = await stageEvaluator(model, parse({ data: pair, metric: 'accuracy_from_eng' })).run();
  expect(Object.keys(tat.metrics)).toEqual(['eval/dense/accuracy', 'eval/dense/accuracy_to_eng', 'eval/dense/accuracy_from_eng']);
  expect(tat.score).toBe(tat.metrics['eval/dense/accuracy_from_eng']);

  // the rows as a stage's metrics.jsonl holds them reach `m3 report`'s table
  const stage = path.join(tmp, 'run', '1-pairs');
  fs.mkdirSync(stage, { recursive: true });
  fs.writeFileSync(path.join(stage, 'metrics.jsonl'), [
    { stage: 'pairs', step: 1, epoch: 0, loss: 2, lr: 1e-4, step_s: 0.1 },
    { stage: 'pairs', step: 1, ...metrics },
  ].map((r) => JSON.stringify(r)).join('\n') + '\n');
  const html = renderReport(readRun(path.join(tmp, 'run')));
  const table = /<table id="stage-evaluation">(.*?)<\/table>/s.exec(html)![1];
  expect(table).toContain('<th>1. pairs (step 1)</th>');
  expect(table).toContain(`<td>xquad-r/de/dense/map@20</td><td>${metrics['eval/xquad-r/de/dense/map@20'].toFixed(4)}</td>`);
  expect(table).toContain(`<td>dense/map@20</td><td>${metrics['eval/dense/map@20'].toFixed(4)}</td>`);
});
