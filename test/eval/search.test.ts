/**
 * Exact search on small synthetic embeddings: every fast path (blocked dense product over chunks, inverted
 * index, packed ColBERT, hybrid union + rerank) against brute force over scores.ts, ties included.
 */
import { colbertScore, denseScore, lexicalScore, SparseVec } from '../../src/model/scores';
import {
  buildInvertedIndex, colbertScorePacked, denseSearch, EncodedSet, Hits, Matrix, outputsFor, PackedVectors, searchModes,
  sparseSearch, topKCollector,
} from '../../src/eval/search';
import { createRng } from '../../src/util/rng';

const rng = createRng(7);
const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());

function randomMatrix(rows: number, dim: number): Matrix {
  return { data: Float32Array.from({ length: rows * dim }, gauss), rows, dim };
}
const row = (m: Matrix, i: number) => m.data.subarray(i * m.dim, (i + 1) * m.dim);

function randomSparse(n: number, vocab: number, maxTokens: number): SparseVec[] {
  return Array.from({ length: n }, () => {
    const v: SparseVec = {};
    const t = 1 + rng.int(maxTokens);
    for (let i = 0; i < t; i++) v[String(rng.int(vocab))] = Math.fround(rng.next() * 0.5 + 0.01);
    return v;
  });
}

function randomColbert(n: number, dim: number): PackedVectors[] {
  return Array.from({ length: n }, () => {
    const count = 1 + rng.int(9); // 1..9 vectors: full register blocks and every edge
    return { data: Float32Array.from({ length: count * dim }, gauss), count };
  });
}
const unpack = (p: PackedVectors, dim: number) => Array.from({ length: p.count }, (_, i) => p.data.subarray(i * dim, (i + 1) * dim));

/** Scores every candidate, sorts by score desc then index asc, keeps k. */
function bruteForce(candidates: number[], score: (d: number) => number, k: number): { indices: number[]; scores: number[] } {
  const scored = candidates.map((d) => ({ d, s: score(d) })).sort((a, b) => b.s - a.s || a.d - b.d).slice(0, k);
  return { indices: scored.map((x) => x.d), scores: scored.map((x) => x.s) };
}
const plain = (h: Hits) => ({ indices: Array.from(h.indices), scores: Array.from(h.scores) });
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

test('top-k collector keeps the k best, ties to the lower index, best first', () => {
  const scores = Array.from({ length: 500 }, () => Math.round(rng.next() * 20) / 4); // many ties
  for (const k of [0, 1, 7, 64, 500, 600]) {
    const col = topKCollector(Math.min(k, 500));
    const order = rng.shuffle(range(500));
    for (const i of order) col.push(i, scores[i]);
    expect(plain(col.result())).toEqual(bruteForce(range(500), (d) => scores[d], k));
  }
});

test('dense search over chunks equals brute force for every chunk size and block edge', () => {
  for (const [nq, nd, dim] of [[1, 1, 3], [5, 37, 16], [13, 200, 33], [8, 64, 64]]) {
    const q = randomMatrix(nq, dim);
    const c = randomMatrix(nd, dim);
    // duplicated corpus rows tie exactly: the lower index must win
    if (nd > 10) c.data.copyWithin(9 * dim, 3 * dim, 4 * dim);
    for (const chunkRows of [1, 2, 7, 64, 10000]) {
      for (const k of [1, 10, nd + 5]) {
        const hits = denseSearch(q, c, k, { chunkRows });
        expect(hits).toHaveLength(nq);
        hits.forEach((h, qi) => expect(plain(h)).toEqual(bruteForce(range(nd), (d) => denseScore(row(q, qi), row(c, d)), k)));
      }
    }
  }
});

test('sparse search through the inverted index equals brute-force lexical scores (matching docs only)', () => {
  const docs = randomSparse(300, 50, 12);
  docs[17] = { ...docs[4] }; // an exact tie
  docs[30] = {}; // an empty document never matches
  const queries = randomSparse(20, 60, 6); // ids ≥ 50 appear in no document
  queries.push({ '59': 0.3 }); // no match at all → no hits
  const index = buildInvertedIndex(docs);
  for (const k of [1, 10, 1000]) {
    sparseSearch(index, queries, k).forEach((h, qi) => {
      const matching = range(docs.length).filter((d) => lexicalScore(queries[qi], docs[d]) > 0);
      expect(plain(h)).toEqual(bruteForce(matching, (d) => lexicalScore(queries[qi], docs[d]), k));
    });
  }
  expect(sparseSearch(index, [{ '59': 0.3 }], 5)[0].indices).toHaveLength(0);
});

test('packed ColBERT score equals colbertScore bit for bit', () => {
  const dim = 12;
  const q = randomColbert(12, dim);
  const p = randomColbert(12, dim);
  for (let i = 0; i < 12; i++) {
    for (let j = 0; j < 12; j++) expect(colbertScorePacked(q[i], p[j], dim)).toBe(colbertScore(unpack(q[i], dim), unpack(p[j], dim)));
  }
  expect(colbertScorePacked({ data: new Float32Array(0), count: 0 }, p[0], dim)).toBe(0);
});

describe('hybrid protocol', () => {
  const dim = 8;
  const nd = 120;
  const nq = 9;
  const corpus: EncodedSet = { count: nd, dense: randomMatrix(nd, dim), sparse: randomSparse(nd, 40, 8), colbert: randomColbert(nd, dim), colbertDim: dim };
  const queries: EncodedSet = { count: nq, dense: randomMatrix(nq, dim), sparse: randomSparse(nq, 40, 4), colbert: randomColbert(nq, dim), colbertDim: dim };
  const weights: [number, number, number] = [1, 0.3, 1];
  const k = 10;
  const d = (qi: number, di: number) => denseScore(row(queries.dense!, qi), row(corpus.dense!, di));
  const s = (qi: number, di: number) => lexicalScore(queries.sparse![qi], corpus.sparse![di]);
  const c = (qi: number, di: number) => colbertScore(unpack(queries.colbert![qi], dim), unpack(corpus.colbert![di], dim));
  const results = searchModes(queries, corpus, ['dense', 'sparse', 'colbert', 'dense+sparse', 'all'], { topK: k, weights, chunkRows: 16 });
  const denseTop = (qi: number) => bruteForce(range(nd), (di) => d(qi, di), k).indices;
  const sparseTop = (qi: number) => bruteForce(range(nd).filter((di) => s(qi, di) > 0), (di) => s(qi, di), k).indices;

  const close = (h: Hits, want: { indices: number[]; scores: number[] }) => {
    expect(Array.from(h.indices)).toEqual(want.indices);
    Array.from(h.scores).forEach((x, i) => expect(x).toBeCloseTo(want.scores[i], 10));
  };

  test('colbert reranks exactly the dense top-k', () => {
    for (let qi = 0; qi < nq; qi++) close(results.colbert![qi], bruteForce(denseTop(qi), (di) => c(qi, di), k));
  });

  test('dense+sparse reranks the union of both top-k lists by w0·dense + w1·sparse', () => {
    let grew = 0;
    for (let qi = 0; qi < nq; qi++) {
      const union = [...new Set([...denseTop(qi), ...sparseTop(qi)])];
      if (union.length > k) grew++;
      close(results['dense+sparse']![qi], bruteForce(union, (di) => weights[0] * d(qi, di) + weights[1] * s(qi, di), k));
    }
    expect(grew).toBeGreaterThan(0); // the union really is larger than either list
  });

  test('all reranks the union by the weighted sum of the three scores', () => {
    for (let qi = 0; qi < nq; qi++) {
      const union = [...new Set([...denseTop(qi), ...sparseTop(qi)])];
      close(results.all![qi], bruteForce(union, (di) => weights[0] * d(qi, di) + weights[1] * s(qi, di) + weights[2] * c(qi, di), k));
    }
  });

  test('only the requested modes are computed, and missing outputs are reported', () => {
    expect(Object.keys(searchModes(queries, corpus, ['sparse'], { topK: k, weights }))).toEqual(['sparse']);
    expect(() => searchModes({ ...queries, colbert: undefined }, corpus, ['all'], { topK: k, weights })).toThrow(/colbert/);
  });
});

test('outputsFor names the encoder outputs each mode needs', () => {
  expect(outputsFor(['dense'])).toEqual(['dense']);
  expect(outputsFor(['sparse'])).toEqual(['sparse']);
  expect(outputsFor(['colbert'])).toEqual(['dense', 'colbert']);
  expect(outputsFor(['dense+sparse'])).toEqual(['dense', 'sparse']);
  expect(outputsFor(['all'])).toEqual(['dense', 'sparse', 'colbert']);
});
