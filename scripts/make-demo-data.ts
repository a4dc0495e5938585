/**
 * Builds configs/demo/data from BEIR NFCorpus (../shared/data/retrieval/nfcorpus, CC BY-SA 4.0):
 *
 *   retromae.jsonl.gz      {"text"}: every corpus document, "title. abstract" (stage 1, RetroMAE)
 *   pairs.jsonl.gz         {"query": title, "pos": [abstract]}: every corpus document (stage 2)
 *   unified.jsonl.gz       {"query", "pos", "neg"}: every usable train-qrels query (1,769), relevant documents as positives,
 *                          BM25-mined hard negatives (stage 3, FlagEmbedding format)
 *   nfcorpus-dev/          BEIR folder for evaluation: the whole corpus (texts shortened), the dev queries
 *                          and qrels/dev.tsv
 *
 * No dev or test query enters a training file: stage 3 uses train-qrels queries only, minus any whose text
 * equals a dev or test query's text (NFCorpus repeats some texts under different ids); stage 2 drops a
 * document whose title equals a dev or test query. (Test queries are those in queries.jsonl that are in
 * neither the train nor the dev qrels.) test/eval/demo-data.test.ts checks this on the shipped files.
 *
 * Hard negatives: BM25 (k1 0.9, b 0.4, Anserini's defaults) over the full title + abstract of every
 * document; for each query, NEGATIVES documents drawn (seeded) from BM25 ranks NEG_RANGE that are not
 * judged relevant to it in the train qrels.
 *
 * Texts are cut at a word boundary to what the demo's token lengths can use, and files are gzip-compressed
 * deterministically, to keep the repository small. Everything is seeded: rerunning gives the same bytes.
 *
 *   node -r ./bin/register.js scripts/make-demo-data.ts [NFCORPUS_DIR] [OUT_DIR]
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { createRng } from '../src/util/rng';

const ROOT = path.resolve(__dirname, '..');
const SRC = process.argv[2] ?? path.join(process.env.M3_SHARED_DIR ?? path.resolve(ROOT, '../shared'), 'data/retrieval/nfcorpus');
const OUT = process.argv[3] ?? path.join(ROOT, 'configs/demo/data');

const SEED = 20240;
const RETROMAE_CHARS = 700; // ≈ 128 WordPiece tokens of this medical English, a little more
const PAIR_CHARS = 500; // stage 2 passages (passage_max_len 96)
const UNIFIED_CHARS = 500; // stage 3 passages
const EVAL_CHARS = 700; // evaluation reads 128 tokens of "title text"
const POSITIVES = 2; // positives kept per stage-3 query (drawn from its relevant documents)
const NEGATIVES = 3;
// BM25 ranks (1-based, inclusive) negatives come from: NFCorpus judges many documents per query (median 18
// in train), so the top ranks hold unjudged relevant ones; below rank 30 false negatives are rarer.
const NEG_RANGE: [number, number] = [30, 200];
const UNIFIED_QUERIES = 3000; // stage-3 queries shipped: every usable train query (1,769)

interface Doc { _id: string; title: string; text: string }

const norm = (s: string) => s.toLowerCase().replace(/\s+/g, ' ').trim();

/** The longest prefix of at most n characters that ends at a word boundary. */
function cut(s: string, n: number): string {
  const t = s.replace(/\s+/g, ' ').trim();
  if (t.length <= n) return t;
  const i = t.lastIndexOf(' ', n);
  return t.slice(0, i > n / 2 ? i : n);
}

function readJsonl<T>(file: string): T[] {
  const raw = fs.readFileSync(file);
  const text = (file.endsWith('.gz') ? zlib.gunzipSync(raw) : raw).toString('utf8');
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);
}

function readQrels(file: string): [string, string, number][] {
  return fs.readFileSync(file, 'utf8').split('\n').slice(1).map((l) => l.trim()).filter(Boolean).map((l) => {
    const [q, d, s] = l.split('\t');
    return [q, d, Number(s)];
  });
}

const tokenize = (s: string) => s.toLowerCase().match(/[a-z0-9]+/g) ?? [];

/** Okapi BM25 over the documents; `search` returns document indices, best first (ties by index). */
function bm25(docs: string[][], k1 = 0.9, b = 0.4) {
  const df = new Map<string, number>();
  const tfs = docs.map((d) => {
    const m = new Map<string, number>();
    for (const t of d) m.set(t, (m.get(t) ?? 0) + 1);
    for (const t of m.keys()) df.set(t, (df.get(t) ?? 0) + 1);
    return m;
  });
  const avg = docs.reduce((a, d) => a + d.length, 0) / docs.length;
  const N = docs.length;
  const postings = new Map<string, [number, number][]>();
  tfs.forEach((m, i) => {
    for (const [t, f] of m) {
      let p = postings.get(t);
      if (!p) postings.set(t, (p = []));
      p.push([i, f]);
    }
  });
  return (query: string[]): number[] => {
    const score = new Float64Array(N);
    for (const t of new Set(query)) {
      const p = postings.get(t);
      if (!p) continue;
      const idf = Math.log(1 + (N - p.length + 0.5) / (p.length + 0.5));
      for (const [i, f] of p) score[i] += idf * (f * (k1 + 1)) / (f + k1 * (1 - b + (b * docs[i].length) / avg));
    }
    return Array.from(score.keys()).filter((i) => score[i] > 0).sort((x, y) => score[y] - score[x] || x - y);
  };
}

function writeGz(file: string, rows: unknown[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // zlib writes mtime 0 and no file name: the same rows always give the same bytes
  fs.writeFileSync(file, zlib.gzipSync(rows.map((r) => JSON.stringify(r)).join('\n') + '\n', { level: 9 }));
}

function main(): void {
  if (!fs.existsSync(path.join(SRC, 'queries.jsonl'))) throw new Error(`${SRC}: not the NFCorpus folder (no queries.jsonl); pass its path`);
  const corpus = readJsonl<Doc>(path.join(SRC, 'corpus.jsonl.gz')).filter((d) => d.text.trim());
  const queries = readJsonl<{ _id: string; text: string }>(path.join(SRC, 'queries.jsonl'));
  const train = readQrels(path.join(SRC, 'qrels/train.tsv'));
  const dev = readQrels(path.join(SRC, 'qrels/dev.tsv'));
  const trainIds = new Set(train.map((r) => r[0]));
  const devIds = new Set(dev.map((r) => r[0]));
  const qtext = new Map(queries.map((q) => [q._id, q.text]));
  // dev and test queries: every query that is not a train query
  const heldOut = new Set(queries.filter((q) => !trainIds.has(q._id)).map((q) => norm(q.text)));
  const docIndex = new Map(corpus.map((d, i) => [d._id, i]));
  const rng = createRng(SEED);

  // stage 1: RetroMAE text
  const retromae = corpus.map((d) => ({ text: cut(`${d.title.trim()}. ${d.text}`, RETROMAE_CHARS) }));

  // stage 2: title → abstract
  const pairs = corpus.filter((d) => d.title.trim() && !heldOut.has(norm(d.title))).map((d) => ({ query: d.title.trim(), pos: [cut(d.text, PAIR_CHARS)] }));

  // stage 3: train queries, positives from the qrels, BM25 hard negatives
  const search = bm25(corpus.map((d) => tokenize(`${d.title} ${d.text}`)));
  const relevant = new Map<string, Set<string>>();
  for (const [q, d, s] of train) if (s > 0) (relevant.get(q) ?? relevant.set(q, new Set()).get(q)!).add(d);
  const unified: { query: string; pos: string[]; neg: string[] }[] = [];
  let droppedLeak = 0;
  for (const [qid, rel] of relevant) {
    const text = qtext.get(qid)!;
    if (heldOut.has(norm(text))) {
      droppedLeak++;
      continue;
    }
    const pos = rng.shuffle([...rel].filter((d) => docIndex.has(d))).slice(0, POSITIVES);
    const ranked = search(tokenize(text)).slice(NEG_RANGE[0] - 1, NEG_RANGE[1]).filter((i) => !rel.has(corpus[i]._id));
    const neg = rng.shuffle(ranked).slice(0, NEGATIVES);
    if (!pos.length || neg.length < NEGATIVES) continue;
    const passage = (i: number) => cut(`${corpus[i].title.trim()} ${corpus[i].text}`, UNIFIED_CHARS);
    unified.push({ query: text, pos: pos.map((d) => passage(docIndex.get(d)!)), neg: neg.map(passage) });
  }
  rng.shuffle(unified);
  unified.length = Math.min(unified.length, UNIFIED_QUERIES);

  // evaluation: BEIR folder with the dev split
  const evalDir = path.join(OUT, 'nfcorpus-dev');
  writeGz(path.join(evalDir, 'corpus.jsonl.gz'), corpus.map((d) => ({ _id: d._id, title: d.title.trim(), text: cut(d.text, EVAL_CHARS) })));
  const devQueries = queries.filter((q) => devIds.has(q._id)).map((q) => ({ _id: q._id, text: q.text }));
  fs.writeFileSync(path.join(evalDir, 'queries.jsonl'), devQueries.map((q) => JSON.stringify(q)).join('\n') + '\n');
  fs.mkdirSync(path.join(evalDir, 'qrels'), { recursive: true });
  fs.writeFileSync(path.join(evalDir, 'qrels/dev.tsv'), ['query-id\tcorpus-id\tscore', ...dev.filter((r) => docIndex.has(r[1])).map((r) => r.join('\t'))].join('\n') + '\n');

  writeGz(path.join(OUT, 'retromae.jsonl.gz'), retromae);
  writeGz(path.join(OUT, 'pairs.jsonl.gz'), pairs);
  writeGz(path.join(OUT, 'unified.jsonl.gz'), unified);
  process.stderr.write(`make-demo-data: ${corpus.length} documents; retromae ${retromae.length}, pairs ${pairs.length}, unified ${unified.length} ` +
    `(${droppedLeak} train queries dropped: text equals a dev/test query); eval ${devQueries.length} dev queries → ${path.relative(ROOT, OUT)}\n`);
}

main();
