/**
 * Exact search over encoded collections, and the M3 paper's hybrid protocol (§4, footnotes 6–8):
 *   dense         top-k by inner product (blocked matrix product over corpus chunks)
 *   sparse        top-k by lexical matching score through an inverted index (only documents sharing a token)
 *   colbert       the dense top-k reranked by the ColBERT score
 *   dense+sparse  dense top-k ∪ sparse top-k, reranked by w0·dense + w1·sparse
 *   all           dense top-k ∪ sparse top-k, reranked by w0·dense + w1·sparse + w2·colbert
 * Component scores of hybrid candidates are recomputed exactly for every candidate (a document found by only
 * one retriever still gets its score from the other). Ties are broken by the lower corpus index, so every
 * search is deterministic and the chunked search equals brute force.
 */
import { lexicalScore, Mode, SparseVec } from '../model/scores';

/** Which model outputs a mode needs. */
export function outputsFor(modes: readonly Mode[]): ('dense' | 'sparse' | 'colbert')[] {
  const out = new Set<'dense' | 'sparse' | 'colbert'>();
  for (const m of modes) {
    if (m !== 'sparse') out.add('dense'); // colbert and the hybrids start from the dense top-k
    if (m === 'sparse' || m === 'dense+sparse' || m === 'all') out.add('sparse');
    if (m === 'colbert' || m === 'all') out.add('colbert');
  }
  return (['dense', 'sparse', 'colbert'] as const).filter((o) => out.has(o));
}

/** One query's results, best first. */
export interface Hits {
  indices: Int32Array;
  scores: Float64Array;
}

/** Row-major vectors: row i is data[i*dim .. (i+1)*dim). */
export interface Matrix {
  data: Float32Array;
  rows: number;
  dim: number;
}

/** Several vectors of one text (ColBERT), packed row-major. */
export interface PackedVectors {
  data: Float32Array;
  count: number;
}

/** An encoded collection (queries or corpus); each output present when it was computed. */
export interface EncodedSet {
  count: number;
  dense?: Matrix;
  sparse?: SparseVec[];
  colbert?: PackedVectors[];
  colbertDim?: number;
}

/**
 * Keeps the k best (score, index) pairs seen: a binary min-heap whose root is the worst kept pair. "Better"
 * means a higher score, or an equal score and a lower index.
 */
export function topKCollector(k: number) {
  const idx = new Int32Array(k);
  const sc = new Float64Array(k);
  let size = 0;
  const worse = (a: number, b: number) => sc[a] < sc[b] || (sc[a] === sc[b] && idx[a] > idx[b]);
  const swap = (a: number, b: number) => {
    const i = idx[a]; idx[a] = idx[b]; idx[b] = i;
    const s = sc[a]; sc[a] = sc[b]; sc[b] = s;
  };
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && worse(l, m)) m = l;
      if (r < size && worse(r, m)) m = r;
      if (m === i) return;
      swap(i, m);
      i = m;
    }
  };
  return {
    /** The score a new pair must beat to enter (−∞ until k pairs are kept). */
    threshold: () => (size < k ? -Infinity : sc[0]),
    push(index: number, score: number): void {
      if (k === 0) return;
      if (size < k) {
        idx[size] = index;
        sc[size] = score;
        let i = size++;
        while (i > 0) {
          const p = (i - 1) >> 1;
          if (!worse(i, p)) break;
          swap(i, p);
          i = p;
        }
        return;
      }
      if (score < sc[0] || (score === sc[0] && index > idx[0])) return;
      idx[0] = index;
      sc[0] = score;
      siftDown(0);
    },
    /** The kept pairs, best first. */
    result(): Hits {
      const order = Array.from({ length: size }, (_, i) => i).sort((a, b) => sc[b] - sc[a] || idx[a] - idx[b]);
      return { indices: Int32Array.from(order, (i) => idx[i]), scores: Float64Array.from(order, (i) => sc[i]) };
    },
  };
}

const QUERY_BLOCK = 8;

/**
 * out[b*nc + j] = ⟨query qStart+b, corpus row cStart+j⟩ for b < nb, j < nc. A 4-query × 2-row register
 * block (8 sums per pass over the dims) runs about 3× faster than one dot product at a time. TF.js matMul
 * on wasm is as fast at dim 64 and about 2× faster at dim 1024 (bench/eval.ts: 0.56 s vs 0.31 s for NFCorpus
 * dev at dim 1024), but either is small next to encoding the corpus, and this path is exact (each sum runs
 * over the dims in order in double precision, so it equals `denseRowScore` bit for bit), needs no tensor
 * memory and behaves the same on every backend.
 */
function blockScores(q: Float32Array, qStart: number, nb: number, c: Float32Array, cStart: number, nc: number, dim: number, out: Float64Array): void {
  const nb4 = nb - (nb % 4);
  const nc2 = nc - (nc % 2);
  for (let j = 0; j < nc2; j += 2) {
    const c0 = (cStart + j) * dim;
    const c1 = c0 + dim;
    for (let b = 0; b < nb4; b += 4) {
      const q0 = (qStart + b) * dim;
      const q1 = q0 + dim;
      const q2 = q1 + dim;
      const q3 = q2 + dim;
      let s00 = 0, s10 = 0, s20 = 0, s30 = 0, s01 = 0, s11 = 0, s21 = 0, s31 = 0;
      for (let d = 0; d < dim; d++) {
        const x = c[c0 + d];
        const y = c[c1 + d];
        const a0 = q[q0 + d], a1 = q[q1 + d], a2 = q[q2 + d], a3 = q[q3 + d];
        s00 += a0 * x; s10 += a1 * x; s20 += a2 * x; s30 += a3 * x;
        s01 += a0 * y; s11 += a1 * y; s21 += a2 * y; s31 += a3 * y;
      }
      out[b * nc + j] = s00; out[(b + 1) * nc + j] = s10; out[(b + 2) * nc + j] = s20; out[(b + 3) * nc + j] = s30;
      out[b * nc + j + 1] = s01; out[(b + 1) * nc + j + 1] = s11; out[(b + 2) * nc + j + 1] = s21; out[(b + 3) * nc + j + 1] = s31;
    }
  }
  // The edges the register block leaves: queries beyond the last group of 4, rows beyond the last pair.
  const one = (b: number, j: number) => {
    const qo = (qStart + b) * dim;
    const co = (cStart + j) * dim;
    let s = 0;
    for (let d = 0; d < dim; d++) s += q[qo + d] * c[co + d];
    out[b * nc + j] = s;
  };
  for (let b = nb4; b < nb; b++) for (let j = 0; j < nc; j++) one(b, j);
  if (nc2 < nc) for (let b = 0; b < nb4; b++) one(b, nc - 1);
}

/**
 * Exact dense top-k: inner products of every query with every corpus row, over corpus chunks of
 * `chunkRows` rows for blocks of 8 queries, accumulated in double precision so scores equal `denseScore`.
 */
export function denseSearch(queries: Matrix, corpus: Matrix, k: number, opts: { chunkRows?: number } = {}): Hits[] {
  if (queries.dim !== corpus.dim) throw new Error(`dense dims differ: queries ${queries.dim}, corpus ${corpus.dim}`);
  const chunkRows = Math.max(1, opts.chunkRows ?? 4096);
  const kk = Math.min(k, corpus.rows);
  const out: Hits[] = new Array(queries.rows);
  const scores = new Float64Array(QUERY_BLOCK * Math.min(chunkRows, corpus.rows));
  for (let q0 = 0; q0 < queries.rows; q0 += QUERY_BLOCK) {
    const nb = Math.min(QUERY_BLOCK, queries.rows - q0);
    const collectors = Array.from({ length: nb }, () => topKCollector(kk));
    for (let c0 = 0; c0 < corpus.rows; c0 += chunkRows) {
      const nc = Math.min(chunkRows, corpus.rows - c0);
      blockScores(queries.data, q0, nb, corpus.data, c0, nc, corpus.dim, scores);
      for (let b = 0; b < nb; b++) {
        const col = collectors[b];
        let bar = col.threshold();
        for (let j = 0; j < nc; j++) {
          const s = scores[b * nc + j];
          if (s >= bar) {
            col.push(c0 + j, s);
            bar = col.threshold();
          }
        }
      }
    }
    for (let b = 0; b < nb; b++) out[q0 + b] = collectors[b].result();
  }
  return out;
}

/** token id → the documents containing it and their weights. */
export interface InvertedIndex {
  docs: number;
  postings: Map<string, { docs: Int32Array; weights: Float32Array | Float64Array }>;
}

export function buildInvertedIndex(vectors: readonly SparseVec[]): InvertedIndex {
  const lists = new Map<string, { docs: number[]; weights: number[] }>();
  vectors.forEach((v, doc) => {
    for (const id in v) {
      let l = lists.get(id);
      if (!l) lists.set(id, (l = { docs: [], weights: [] }));
      l.docs.push(doc);
      l.weights.push(v[id]);
    }
  });
  const postings: InvertedIndex['postings'] = new Map();
  // Float64 keeps the weights bit-exact (they are doubles in the dicts), so scores equal lexicalScore.
  for (const [id, l] of lists) postings.set(id, { docs: Int32Array.from(l.docs), weights: Float64Array.from(l.weights) });
  return { docs: vectors.length, postings };
}

/**
 * Exact lexical top-k through the inverted index. Only documents sharing at least one token with the query
 * are candidates (their score is > 0), so a query may get fewer than k hits.
 */
export function sparseSearch(index: InvertedIndex, queries: readonly SparseVec[], k: number): Hits[] {
  const acc = new Float64Array(index.docs);
  const touched = new Int32Array(index.docs);
  const stamp = new Int32Array(index.docs); // stamp[d] === query number + 1 once d is in `touched`
  return queries.map((q, qi) => {
    let nTouched = 0;
    for (const id in q) {
      const p = index.postings.get(id);
      if (!p) continue;
      const w = q[id];
      for (let i = 0; i < p.docs.length; i++) {
        const d = p.docs[i];
        if (stamp[d] !== qi + 1) {
          stamp[d] = qi + 1;
          touched[nTouched++] = d;
        }
        acc[d] += w * p.weights[i];
      }
    }
    const col = topKCollector(Math.min(k, nTouched));
    for (let i = 0; i < nTouched; i++) {
      const d = touched[i];
      if (acc[d] > 0) col.push(d, acc[d]);
      acc[d] = 0;
    }
    return col.result();
  });
}

/**
 * Mean over query vectors of the best inner product with any document vector (colbertScore, packed).
 * Same register blocking as the dense search (4 query vectors × 2 document vectors per pass), about 4×
 * faster than one dot product at a time; every dot product still sums over the dims in order.
 */
export function colbertScorePacked(q: PackedVectors, p: PackedVectors, dim: number): number {
  if (q.count === 0 || p.count === 0) return 0;
  const best = new Float64Array(q.count).fill(-Infinity);
  const a = q.data;
  const b = p.data;
  const nq4 = q.count - (q.count % 4);
  const np2 = p.count - (p.count % 2);
  for (let i = 0; i < nq4; i += 4) {
    const q0 = i * dim, q1 = q0 + dim, q2 = q1 + dim, q3 = q2 + dim;
    let m0 = -Infinity, m1 = -Infinity, m2 = -Infinity, m3 = -Infinity;
    for (let j = 0; j < np2; j += 2) {
      const p0 = j * dim;
      const p1 = p0 + dim;
      let s00 = 0, s10 = 0, s20 = 0, s30 = 0, s01 = 0, s11 = 0, s21 = 0, s31 = 0;
      for (let d = 0; d < dim; d++) {
        const x = b[p0 + d];
        const y = b[p1 + d];
        const a0 = a[q0 + d], a1 = a[q1 + d], a2 = a[q2 + d], a3 = a[q3 + d];
        s00 += a0 * x; s10 += a1 * x; s20 += a2 * x; s30 += a3 * x;
        s01 += a0 * y; s11 += a1 * y; s21 += a2 * y; s31 += a3 * y;
      }
      m0 = Math.max(m0, s00, s01); m1 = Math.max(m1, s10, s11); m2 = Math.max(m2, s20, s21); m3 = Math.max(m3, s30, s31);
    }
    best[i] = m0; best[i + 1] = m1; best[i + 2] = m2; best[i + 3] = m3;
  }
  // The edges the register block leaves: query vectors beyond the last group of 4, the last odd document vector.
  const dot = (qi: number, pj: number) => {
    let s = 0;
    for (let d = 0, qo = qi * dim, po = pj * dim; d < dim; d++) s += a[qo + d] * b[po + d];
    return s;
  };
  for (let i = nq4; i < q.count; i++) for (let j = 0; j < p.count; j++) best[i] = Math.max(best[i], dot(i, j));
  if (np2 < p.count) for (let i = 0; i < nq4; i++) best[i] = Math.max(best[i], dot(i, p.count - 1));
  let total = 0;
  for (let i = 0; i < q.count; i++) total += best[i];
  return total / q.count;
}

/** Inner product of query row qi and corpus row di, in double precision. */
export function denseRowScore(queries: Matrix, qi: number, corpus: Matrix, di: number): number {
  const dim = corpus.dim;
  let s = 0;
  for (let d = 0, qo = qi * dim, co = di * dim; d < dim; d++) s += queries.data[qo + d] * corpus.data[co + d];
  return s;
}

/** Scores each candidate with `score` and keeps the k best (ties: lower corpus index first). */
export function rerank(candidates: Iterable<number>, score: (doc: number) => number, k: number): Hits {
  const docs = [...new Set(candidates)];
  const col = topKCollector(Math.min(k, docs.length));
  for (const d of docs) col.push(d, score(d));
  return col.result();
}

export interface SearchOptions {
  /** Results per query, and the depth of each first-stage retriever. */
  topK: number;
  /** [dense, sparse, colbert] weights of the hybrid sums. */
  weights: readonly [number, number, number];
  /** Corpus rows per chunk of the dense search. */
  chunkRows?: number;
}

/** Runs every requested mode; the encoded sets must carry the outputs `outputsFor(modes)` names. */
export function searchModes(queries: EncodedSet, corpus: EncodedSet, modes: readonly Mode[], opts: SearchOptions): Partial<Record<Mode, Hits[]>> {
  const need = (what: 'dense' | 'sparse' | 'colbert') => {
    if (!queries[what] || !corpus[what]) throw new Error(`searchModes: '${what}' outputs are missing for modes ${modes.join(',')}`);
  };
  const results: Partial<Record<Mode, Hits[]>> = {};
  const wanted = new Set(modes);
  let dense: Hits[] | null = null;
  let sparse: Hits[] | null = null;
  if ([...wanted].some((m) => m !== 'sparse')) {
    need('dense');
    dense = denseSearch(queries.dense!, corpus.dense!, opts.topK, { chunkRows: opts.chunkRows });
  }
  if (wanted.has('sparse') || wanted.has('dense+sparse') || wanted.has('all')) {
    need('sparse');
    sparse = sparseSearch(buildInvertedIndex(corpus.sparse!), queries.sparse!, opts.topK);
  }
  const [w0, w1, w2] = opts.weights;
  const denseOf = (qi: number, d: number) => denseRowScore(queries.dense!, qi, corpus.dense!, d);
  const sparseOf = (qi: number, d: number) => lexicalScore(queries.sparse![qi], corpus.sparse![d]);
  // `colbert` and `all` score mostly the same (query, document) pairs: compute each once.
  const colbertMemo = new Map<number, number>();
  const colbertOf = (qi: number, d: number) => {
    const key = qi * corpus.count + d;
    let v = colbertMemo.get(key);
    if (v === undefined) colbertMemo.set(key, (v = colbertScorePacked(queries.colbert![qi], corpus.colbert![d], corpus.colbertDim!)));
    return v;
  };
  if (wanted.has('dense')) results.dense = dense!;
  if (wanted.has('sparse')) results.sparse = sparse!;
  if (wanted.has('colbert')) {
    need('colbert');
    results.colbert = dense!.map((h, qi) => rerank(h.indices, (d) => colbertOf(qi, d), opts.topK));
  }
  if (wanted.has('dense+sparse')) {
    results['dense+sparse'] = dense!.map((h, qi) => rerank([...h.indices, ...sparse![qi].indices], (d) => w0 * denseOf(qi, d) + w1 * sparseOf(qi, d), opts.topK));
  }
  if (wanted.has('all')) {
    need('colbert');
    results.all = dense!.map((h, qi) => rerank([...h.indices, ...sparse![qi].indices], (d) => w0 * denseOf(qi, d) + w1 * sparseOf(qi, d) + w2 * colbertOf(qi, d), opts.topK));
  }
  return results;
}
