/**
 * The metrics against trec_eval 10's own output (../shared/data/trec-eval-fixture): every per-query line and
 * the `all` line of `trec_eval -q -m ndcg_cut.10 -m recall.100 -m recip_rank`, to the 4 printed decimals.
 * The run scores have two decimals, so many documents tie and the docid tie-break decides the order.
 */
import * as fs from 'fs';
import { evaluateRun, ndcgAt, recallAt, reciprocalRank, Run, trecOrder } from '../../src/eval/metrics';
import { formatRunTrec, readQrelsTrec, readRunTrec } from '../../src/eval/trec';
import { sharedDir } from '../helpers/shared';

const fixture = (f: string) => sharedDir('data', 'trec-eval-fixture', f);

/** trec_eval.out → measure → query id (or 'all') → printed value. */
function readTrecEvalOut(): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  for (const line of fs.readFileSync(fixture('trec_eval.out'), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const [measure, qid, value] = line.trim().split(/\s+/);
    if (!out.has(measure)) out.set(measure, new Map());
    out.get(measure)!.set(qid, value);
  }
  return out;
}

const qrels = readQrelsTrec(fixture('qrels.trec'));
const run = readRunTrec(fixture('run.trec'));
const expected = readTrecEvalOut();

test('the fixture has the three measures for 25 queries and all', () => {
  expect([...expected.keys()].sort()).toEqual(['ndcg_cut_10', 'recall_100', 'recip_rank']);
  for (const m of expected.values()) expect(m.size).toBe(26);
  expect(run.size).toBe(25);
});

test('per-query ndcg_cut.10, recall.100 and recip_rank equal trec_eval to 4 decimals', () => {
  let checked = 0;
  for (const [qid, docs] of run) {
    const ranked = trecOrder(docs);
    const judged = qrels.get(qid)!;
    expect(ndcgAt(ranked, judged, 10).toFixed(4)).toBe(expected.get('ndcg_cut_10')!.get(qid));
    expect(recallAt(ranked, judged, 100).toFixed(4)).toBe(expected.get('recall_100')!.get(qid));
    expect(reciprocalRank(ranked, judged).toFixed(4)).toBe(expected.get('recip_rank')!.get(qid));
    checked++;
  }
  expect(checked).toBe(25);
});

test('the all line: means over the queries of the run', () => {
  const { mean, perQuery } = evaluateRun(qrels, run);
  expect(perQuery.size).toBe(25);
  expect(mean['ndcg@10'].toFixed(4)).toBe(expected.get('ndcg_cut_10')!.get('all'));
  expect(mean['recall@100'].toFixed(4)).toBe(expected.get('recall_100')!.get('all'));
  // recip_rank has no cut-off, so the fixture's `all` is MRR over the whole run; evaluateRun's mrr@10
  // is recip_rank on the run cut to the top 10.
  const cut: Run = new Map([...run].map(([q, d]) => [q, trecOrder(d).slice(0, 10)]));
  let uncut = 0;
  for (const [q, d] of run) uncut += reciprocalRank(trecOrder(d), qrels.get(q)!);
  expect((uncut / run.size).toFixed(4)).toBe(expected.get('recip_rank')!.get('all'));
  let cutMean = 0;
  for (const [q, d] of cut) cutMean += reciprocalRank(d, qrels.get(q)!);
  expect(mean['mrr@10']).toBeCloseTo(cutMean / cut.size, 12);
  expect(mean['mrr@10']).toBeLessThan(uncut / run.size); // some first hits are below rank 10 in this run
});

test('ties are broken by docid descending and the rank column is ignored', () => {
  // Tie-break matters in this fixture: evaluating with ascending-docid ties changes at least one query.
  let differs = 0;
  for (const [qid, docs] of run) {
    const asc = [...docs].sort((x, y) => y.score - x.score || (x.docId < y.docId ? -1 : x.docId > y.docId ? 1 : 0));
    if (ndcgAt(asc, qrels.get(qid)!, 10) !== ndcgAt(trecOrder(docs), qrels.get(qid)!, 10)) differs++;
  }
  expect(differs).toBeGreaterThan(0);
  const shuffled: Run = new Map([...run].map(([q, d]) => [q, [...d].reverse()]));
  expect(evaluateRun(qrels, shuffled).mean).toEqual(evaluateRun(qrels, run).mean);
});

test('a written run reads back to the same evaluation', () => {
  const dir = fs.mkdtempSync(require('path').join(require('os').tmpdir(), 'm3-trec-'));
  const file = require('path').join(dir, 'run.trec');
  fs.writeFileSync(file, formatRunTrec(run, 'again'));
  expect(evaluateRun(qrels, readRunTrec(file)).mean).toEqual(evaluateRun(qrels, run).mean);
  fs.rmSync(dir, { recursive: true });
});

test('queries absent from the qrels are not averaged; graded gains are linear', () => {
  const judged = new Map([['a', 2], ['b', 1], ['c', 0]]);
  const ranked = [{ docId: 'b', score: 3 }, { docId: 'a', score: 2 }, { docId: 'c', score: 1 }];
  const ideal = 2 + 1 / Math.log2(3);
  expect(ndcgAt(ranked, judged, 10)).toBeCloseTo((1 + 2 / Math.log2(3)) / ideal, 12);
  const r = evaluateRun(new Map([['q1', judged]]), new Map([['q1', ranked], ['q-unjudged', ranked]]));
  expect([...r.perQuery.keys()]).toEqual(['q1']);
  expect(r.mean['mrr@10']).toBe(1);
  // a judged query with nothing retrieved (a sparse search that matched no token) counts as 0
  const withEmpty = evaluateRun(new Map([['q1', judged], ['q2', judged]]), new Map([['q1', ranked], ['q2', []]]));
  expect(withEmpty.perQuery.get('q2')).toEqual({ 'ndcg@10': 0, 'recall@100': 0, 'mrr@10': 0 });
  expect(withEmpty.mean['mrr@10']).toBe(0.5);
});
