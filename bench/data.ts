/**
 * Data pipeline throughput on NFCorpus-derived fine-tuning data (../shared/data/retrieval/nfcorpus):
 * `prepare` tokens/s with the bert-base-uncased tokenizer (tokens written, after truncation), and batch
 * reading rows/s (group sampling + padding). Rows: a train query, its relevant docs as positives, 7 random
 * docs as negatives. Prints one JSON line.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { prepareDataset } from '../src/data/prepare';
import { openDataset } from '../src/data/reader';
import { loadTokenizer } from '../src/model/tokenizer';
import { createRng } from '../src/util/rng';

const SHARED = process.env.M3_SHARED_DIR ?? path.resolve(__dirname, '..', '..', 'shared');

/** Writes the NFCorpus fine-tuning JSONL (up to `maxQueries` rows) and returns its path. */
export function writeNfcorpusJsonl(dir: string, maxQueries = 2000): string {
  const nf = path.join(SHARED, 'data/retrieval/nfcorpus');
  const docs = new Map<string, string>();
  for (const line of zlib.gunzipSync(fs.readFileSync(path.join(nf, 'corpus.jsonl.gz'))).toString('utf8').split('\n')) {
    if (!line.trim()) continue;
    const d = JSON.parse(line);
    docs.set(d._id, d.title ? `${d.title}. ${d.text}` : d.text);
  }
  const queries = new Map<string, string>();
  for (const line of fs.readFileSync(path.join(nf, 'queries.jsonl'), 'utf8').split('\n')) {
    if (line.trim()) {
      const q = JSON.parse(line);
      queries.set(q._id, q.text);
    }
  }
  const rel = new Map<string, string[]>();
  for (const line of fs.readFileSync(path.join(nf, 'qrels/train.tsv'), 'utf8').split('\n').slice(1)) {
    const [qid, did] = line.split('\t');
    if (qid && did && docs.has(did) && queries.has(qid)) (rel.get(qid) ?? rel.set(qid, []).get(qid)!).push(did);
  }
  const ids = [...docs.keys()];
  const rng = createRng(7);
  const out: string[] = [];
  for (const [qid, dids] of rel) {
    if (out.length >= maxQueries) break;
    const neg: string[] = [];
    while (neg.length < 7) {
      const d = ids[rng.int(ids.length)];
      if (!dids.includes(d)) neg.push(docs.get(d)!);
    }
    out.push(JSON.stringify({ query: queries.get(qid), pos: dids.slice(0, 2).map((d) => docs.get(d)), neg }));
  }
  const file = path.join(dir, 'nfcorpus-train.jsonl');
  fs.writeFileSync(file, out.join('\n') + '\n');
  return file;
}

export async function benchData(): Promise<object> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-bench-data-'));
  try {
    const input = writeNfcorpusJsonl(tmp);
    const tok = loadTokenizer(path.join(SHARED, 'data/tokenizers/bert-base-uncased'));
    const out = path.join(tmp, 'prepared');
    const t0 = performance.now();
    const m = await prepareDataset([input], tok, out, { format: 'finetune', queryMaxLen: 64, passageMaxLen: 512, progress: false });
    const prepSecs = (performance.now() - t0) / 1000;
    const reader = await openDataset(out, { seed: 0, batchSize: 32, trainGroupSize: 8, tokenizer: tok });
    let rows = 0;
    const t1 = performance.now();
    for await (const b of reader.epoch()) rows += b.size;
    const readSecs = (performance.now() - t1) / 1000;
    await reader.close();
    return {
      bench: 'data',
      input_mb: +(fs.statSync(input).size / 1e6).toFixed(1),
      prepare_rows: m.rows,
      prepare_tokens: m.tokens,
      prepare_s: +prepSecs.toFixed(2),
      prepare_tokens_per_s: Math.round(m.tokens / prepSecs),
      read_rows: rows,
      read_rows_per_s: Math.round(rows / readSecs),
      read_group_size: 8,
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  process.stdout.write(JSON.stringify(await benchData()) + '\n');
}

if (require.main === module) void run();
