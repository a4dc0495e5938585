/** The eval: config section: defaults, validation through util/schema, and the checkpoint-selection rules. */
import { checkEvalConfig, EVAL_SCHEMA, EvalConfig, evalDue, evalEnabled, evalOptions, flattenResults, selectionMetric, selectionScore } from '../../src/eval/config';
import { validate } from '../../src/util/schema';

const locate = () => 'stage.yaml:3';
const parse = (v: unknown) => validate<EvalConfig>(EVAL_SCHEMA, v, locate, ['eval']);

test('defaults: off without data; dense, dev, nDCG@10', () => {
  const cfg = parse({});
  expect(evalEnabled(cfg)).toBe(false);
  expect(cfg).toMatchObject({ split: 'dev', modes: ['dense'], steps: 0, top_k: 100, weights: [1, 0.3, 1], mcls: false });
  expect(selectionMetric(cfg)).toBe('ndcg@10'); // a BEIR folder's default; XQuAD-R's is map@20, Tatoeba's accuracy
  expect(selectionMetric(cfg, { format: 'xquad-r' })).toBe('map@20');
  expect(selectionMetric(cfg, { format: 'tatoeba' })).toBe('accuracy');
  expect(evalDue(cfg, 10, 10)).toBe(false);
});

test('a full section validates and maps onto evaluateBeir options', () => {
  const cfg = parse({ data: 'nfcorpus', modes: ['dense', 'all'], steps: 50, max_queries: 20, max_length: 128, metric: 'recall@100' });
  checkEvalConfig(cfg);
  expect(evalOptions(cfg)).toEqual({ split: 'dev', modes: ['dense', 'all'], weights: [1, 0.3, 1], maxLength: 128, queryMaxLength: undefined, topK: 100, batchSize: 32, maxQueries: 20, mcls: false, progress: false });
  expect([50, 100, 120, 130].map((s) => evalDue(cfg, s, 130))).toEqual([true, true, false, true]);
  const results = { dense: { 'ndcg@10': 0.1, 'recall@100': 0.2, 'mrr@10': 0.3 }, all: { 'ndcg@10': 0.4, 'recall@100': 0.5, 'mrr@10': 0.6 } };
  expect(selectionScore(cfg, results)).toBe(0.5); // 'all' is preferred when evaluated
  expect(selectionScore({ ...cfg, metric_mode: 'dense' }, results)).toBe(0.2);
  expect(flattenResults(results)['eval/all/mrr@10']).toBe(0.6);
});

test('bad values are errors naming the key', () => {
  expect(() => parse({ modes: ['dense', 'splade'] })).toThrow(/eval\.modes\.1' must be one of dense, sparse, colbert, dense\+sparse, all/);
  expect(() => parse({ metric: 'ndcg@20' })).toThrow(/eval\.metric/);
  expect(() => parse({ step: 5 })).toThrow(/unknown key 'eval\.step' \(did you mean 'eval\.steps'\?\)/);
  expect(() => parse({ max_queries: 0 })).toThrow(/eval\.max_queries' must be ≥ 1/);
  expect(() => checkEvalConfig(parse({ weights: [1, 2, 3, 4] }))).toThrow(/exactly 3/);
  expect(() => checkEvalConfig(parse({ modes: ['dense'], metric_mode: 'all' }))).toThrow(/metric_mode' is 'all', which is not in eval\.modes/);
});
