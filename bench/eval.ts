/**
 * Evaluation speed: (1) exact search alone on NFCorpus-sized synthetic embeddings (3,633 documents,
 * 324 queries) — dense at several dims, the sparse inverted index, ColBERT reranking of the dense top-100 —
 * and TF.js matMul as the alternative dense kernel; (2) `evaluateBeir` on NFCorpus dev with a tiny random
 * model with M3 heads (the tiny BERT's shape and tokenizer), every mode.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../src/backend';
import { retrieveBeir, scoreRuns } from '../src/eval/beir';
import { loadBeir } from '../src/eval/data';
import { MODES } from '../src/model/scores';
import { buildInvertedIndex, denseSearch, EncodedSet, Matrix, PackedVectors, searchModes, sparseSearch, topKCollector } from '../src/eval/search';
import { parseConfig } from '../src/model/config';
import { initModel } from '../src/model/m3';
import { SparseVec } from '../src/model/scores';
import { loadTokenizer } from '../src/model/tokenizer';
import { createRng } from '../src/util/rng';

const SHARED = process.env.M3_SHARED_DIR ?? path.resolve(__dirname, '..', '..', 'shared');
const NQ = 324;
const ND = 3633;

const rng = createRng(11);
const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
const matrix = (rows: number, dim: number): Matrix => ({ data: Float32Array.from({ length: rows * dim }, gauss), rows, dim });
function sparse(n: number, tokens: number): SparseVec[] {
  return Array.from({ length: n }, () => {
    const v: SparseVec = {};
    for (let i = 0; i < tokens; i++) v[String(Math.floor(30000 * rng.next() ** 3))] = rng.next(); // Zipf-like ids
    return v;
  });
}
const packed = (n: number, count: number, dim: number): PackedVectors[] => Array.from({ length: n }, () => ({ data: Float32Array.from({ length: count * dim }, gauss), count }));

function time<T>(fn: () => T): [T, number] {
  const t = performance.now();
  const r = fn();
  return [r, (performance.now() - t) / 1000];
}

async function tfDense(q: Matrix, c: Matrix, k: number): Promise<number> {
  const t = performance.now();
  const ct = tf.tensor2d(c.data, [c.rows, c.dim]);
  for (let q0 = 0; q0 < q.rows; q0 += 64) {
    const nb = Math.min(64, q.rows - q0);
    const s = tf.tidy(() => tf.matMul(tf.tensor2d(q.data.subarray(q0 * q.dim, (q0 + nb) * q.dim), [nb, q.dim]), ct, false, true));
    const v = await s.data();
    s.dispose();
    for (let b = 0; b < nb; b++) {
      const col = topKCollector(k);
      for (let j = 0; j < c.rows; j++) col.push(j, v[b * c.rows + j]);
      col.result();
    }
  }
  ct.dispose();
  return (performance.now() - t) / 1000;
}

export async function run(args: { json?: boolean; backend?: string }): Promise<void> {
  const backend = await useBackend(args.backend ?? 'auto');
  const rows: Record<string, unknown>[] = [];
  const emit = (row: Record<string, unknown>) => {
    rows.push(row);
    if (args.json) process.stdout.write(JSON.stringify(row) + '\n');
  };
  for (const dim of [64, 256, 1024]) {
    const q = matrix(NQ, dim);
    const c = matrix(ND, dim);
    const [, secs] = time(() => denseSearch(q, c, 100));
    emit({ bench: 'search', what: `dense dim ${dim} (blocked JS)`, seconds: secs, queries_per_s: NQ / secs });
    const tfSecs = await tfDense(q, c, 100);
    emit({ bench: 'search', what: `dense dim ${dim} (TF.js matMul, ${backend})`, seconds: tfSecs, queries_per_s: NQ / tfSecs });
  }
  const docsSparse = sparse(ND, 150);
  const [index, buildSecs] = time(() => buildInvertedIndex(docsSparse));
  const [, sparseSecs] = time(() => sparseSearch(index, sparse(NQ, 10), 100));
  emit({ bench: 'search', what: `sparse (150 tokens/doc, index built in ${buildSecs.toFixed(2)} s)`, seconds: sparseSecs, queries_per_s: NQ / sparseSecs });
  const cq: EncodedSet = { count: NQ, dense: matrix(NQ, 128), colbert: packed(NQ, 12, 128), colbertDim: 128 };
  const cc: EncodedSet = { count: ND, dense: matrix(ND, 128), colbert: packed(ND, 128, 128), colbertDim: 128 };
  const [, colSecs] = time(() => searchModes(cq, cc, ['colbert'], { topK: 100, weights: [1, 0.3, 1] }));
  emit({ bench: 'search', what: 'colbert rerank of dense top-100 (12 × 128 tokens, dim 128)', seconds: colSecs, queries_per_s: NQ / colSecs });

  const nf = path.join(SHARED, 'data', 'retrieval', 'nfcorpus');
  const tinyDir = path.join(SHARED, 'data', 'models', 'lightning-ir-tiny-bert');
  if (fs.existsSync(nf)) {
    const [ds, loadSecs] = time(() => loadBeir(nf, 'dev'));
    emit({ bench: 'nfcorpus', what: 'load BEIR folder (gzip corpus)', seconds: loadSecs });
    const config = parseConfig(JSON.parse(fs.readFileSync(path.join(tinyDir, 'config.json'), 'utf8')));
    const model = initModel(config, { seed: 1, heads: true, tokenizer: loadTokenizer(tinyDir) });
    const modes = [...MODES];
    const t = performance.now();
    const r = await retrieveBeir(model, ds, { modes, maxLength: 32, progress: false });
    const results = scoreRuns(r.dataset, r.runs);
    emit({
      bench: 'nfcorpus', what: `evaluateBeir tiny model with heads, all modes, ${backend}`, seconds: (performance.now() - t) / 1000,
      encode_corpus_s: r.seconds.encodeCorpus, encode_queries_s: r.seconds.encodeQueries, search_s: r.seconds.search,
      ndcg10_all: results.all!['ndcg@10'],
    });
  }
  if (!args.json) {
    process.stdout.write(`backend ${backend}\nbench     seconds  queries/s  what\n`);
    for (const r of rows) {
      const extra = r.encode_corpus_s !== undefined ? ` (encode corpus ${(r.encode_corpus_s as number).toFixed(2)} s, queries ${(r.encode_queries_s as number).toFixed(2)} s, search ${(r.search_s as number).toFixed(2)} s)` : '';
      process.stdout.write(`${String(r.bench).padEnd(9)} ${(r.seconds as number).toFixed(3).padStart(7)} ${r.queries_per_s ? (r.queries_per_s as number).toFixed(0).padStart(10) : ''.padStart(10)}  ${r.what}${extra}\n`);
    }
  }
}
