/**
 * Retrieval metrics computed exactly as trec_eval 10 computes them, so numbers here can be compared with
 * papers and with pytrec_eval / BEIR:
 *  - a query's documents are ordered by score descending, ties broken by docid in descending lexical
 *    order (the rank column of a run file is ignored);
 *  - nDCG@k (`ndcg_cut.k`): gain = the judged grade when > 0 (linear, not 2^rel − 1), discount log2(rank + 1),
 *    ideal DCG from all judged documents of the query sorted by grade;
 *  - Recall@k (`recall.k`): relevant documents in the top k / relevant documents judged;
 *  - MRR@k: `recip_rank` on the run cut to each query's top k (trec_eval's recip_rank has no cut-off);
 *  - relevant = grade ≥ 1; averages are over the queries that are both in the run and in the qrels
 *    (trec_eval without -c); a query whose list is empty counts, with 0 for every metric.
 */

/** query id → doc id → graded judgement. */
export type Qrels = Map<string, Map<string, number>>;

export interface ScoredDoc {
  docId: string;
  score: number;
}

/** query id → retrieved documents (any order; `trecOrder` sorts them). */
export type Run = Map<string, ScoredDoc[]>;

export interface RetrievalMetrics {
  'ndcg@10': number;
  'recall@100': number;
  'mrr@10': number;
}

export const METRIC_NAMES: (keyof RetrievalMetrics)[] = ['ndcg@10', 'recall@100', 'mrr@10'];

/** trec_eval's `strcmp` order on docids, by UTF-16 code unit (the same as bytes for ASCII ids). */
function compareDocIdDesc(a: string, b: string): number {
  return a < b ? 1 : a > b ? -1 : 0;
}

/** trec_eval's evaluation order: score descending, then docid descending. Returns a new array. */
export function trecOrder(docs: readonly ScoredDoc[]): ScoredDoc[] {
  return [...docs].sort((x, y) => y.score - x.score || compareDocIdDesc(x.docId, y.docId));
}

const relevant = (grade: number | undefined): boolean => grade !== undefined && grade >= 1;

/** nDCG@k of one query's documents, already in trecOrder. */
export function ndcgAt(ranked: readonly ScoredDoc[], judged: ReadonlyMap<string, number>, k: number): number {
  let dcg = 0;
  for (let i = 0; i < Math.min(k, ranked.length); i++) {
    const gain = judged.get(ranked[i].docId) ?? 0;
    if (gain > 0) dcg += gain / Math.log2(i + 2);
  }
  const ideal = [...judged.values()].filter((g) => g > 0).sort((a, b) => b - a);
  let idcg = 0;
  for (let i = 0; i < Math.min(k, ideal.length); i++) idcg += ideal[i] / Math.log2(i + 2);
  return idcg > 0 ? dcg / idcg : dcg;
}

/** Recall@k of one query's documents, already in trecOrder (0 when nothing is relevant, as trec_eval). */
export function recallAt(ranked: readonly ScoredDoc[], judged: ReadonlyMap<string, number>, k: number): number {
  let numRel = 0;
  for (const g of judged.values()) if (relevant(g)) numRel++;
  if (numRel === 0) return 0;
  let found = 0;
  for (let i = 0; i < Math.min(k, ranked.length); i++) if (relevant(judged.get(ranked[i].docId))) found++;
  return found / numRel;
}

/** 1 / rank of the first relevant document within the top k (trec_eval `recip_rank` when k = Infinity). */
export function reciprocalRank(ranked: readonly ScoredDoc[], judged: ReadonlyMap<string, number>, k = Infinity): number {
  for (let i = 0; i < Math.min(k, ranked.length); i++) if (relevant(judged.get(ranked[i].docId))) return 1 / (i + 1);
  return 0;
}

export interface RunEvaluation {
  /** Means over the evaluated queries (all zero when none). */
  mean: RetrievalMetrics;
  perQuery: Map<string, RetrievalMetrics>;
}

/** nDCG@10, Recall@100 and MRR@10 per query and averaged, over queries in both the run and the qrels. */
export function evaluateRun(qrels: Qrels, run: Run): RunEvaluation {
  const perQuery = new Map<string, RetrievalMetrics>();
  const sum: RetrievalMetrics = { 'ndcg@10': 0, 'recall@100': 0, 'mrr@10': 0 };
  for (const [qid, docs] of run) {
    const judged = qrels.get(qid);
    // A query with an empty list is present and scores 0 (a sparse search may match nothing); a run file
    // cannot express such a query, so for runs read from files this is exactly trec_eval's set.
    if (!judged) continue;
    const ranked = trecOrder(docs);
    const m: RetrievalMetrics = {
      'ndcg@10': ndcgAt(ranked, judged, 10),
      'recall@100': recallAt(ranked, judged, 100),
      'mrr@10': reciprocalRank(ranked, judged, 10),
    };
    perQuery.set(qid, m);
    for (const name of METRIC_NAMES) sum[name] += m[name];
  }
  const n = perQuery.size;
  const mean = Object.fromEntries(METRIC_NAMES.map((name) => [name, n ? sum[name] / n : 0])) as unknown as RetrievalMetrics;
  return { mean, perQuery };
}
