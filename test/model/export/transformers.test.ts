/**
 * The real clients on a model trained here: configs/tiny (unified stage, a few steps on wasm) → `m3 export
 * --dtype fp32,fp16,int8` → @huggingface/transformers' feature-extraction pipeline (CLS pooling,
 * normalisation) gives the dense vectors `m3 encode` gives (≤ 1e-4) with the same token ids; fp16 and int8
 * (dtype 'fp16' / 'q8', CPU execution provider) keep the dense cosine to fp32 ≥ 0.99 on NFCorpus documents;
 * and the README's "Export and serving" examples run as written against the export.
 *
 * @jest-environment ./test/helpers/onnx-environment.js
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { AutoTokenizer, pipeline } from '@huggingface/transformers';
import * as ort from 'onnxruntime-node';
import { corpusFile, readBeirCorpus, readBeirQueries } from '../../../src/eval/data';
import { loadTokenizer, padBatch } from '../../../src/model/tokenizer';
import { runCli } from '../../helpers/cli';
import { sharedDir } from '../../helpers/shared';

const ROOT = path.resolve(__dirname, '../../..');
const NFCORPUS = sharedDir('data/retrieval/nfcorpus');
const README_TEXTS = ['what is BGE M3?', 'BGE M3 is an embedding model'];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-export-tjs-'));
const model = path.join(tmp, 'run', 'final');
const onnxDir = path.join(tmp, 'onnx');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Encoded { dense: number[]; sparse: Record<string, number>; colbert: number[][] }
let texts: string[] = [];
let m3: Encoded[] = [];
let docs: string[] = [];

function ok(args: string[]): string {
  const r = runCli(args);
  if (r.code !== 0) throw new Error(`m3 ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

beforeAll(() => {
  ok(['train', 'configs/tiny/unified.yaml', '--set', `output_dir=${path.join(tmp, 'run')}`, '--set', `data.cache_dir=${path.join(tmp, 'cache')}`,
    '--set', 'train.max_steps=4', '--set', 'train.save_steps=4']);
  ok(['export', '--model', model, '--format', 'onnx', '--output', onnxDir, '--dtype', 'fp32,fp16,int8']);
  // texts the tiny model's 128 positions hold whole (transformers.js would cut the final [SEP] of longer
  // ones; README): NFCorpus dev queries and short documents, and the README example's two texts
  const tok = loadTokenizer(model);
  const fits = (t: string) => tok.tokenize(t).length + 2 <= 128;
  const corpus = readBeirCorpus(corpusFile(NFCORPUS)).texts;
  docs = corpus.slice(0, 48);
  texts = [...README_TEXTS, ...[...readBeirQueries(path.join(NFCORPUS, 'queries.jsonl')).values()].slice(0, 16), ...corpus.filter(fits).slice(0, 16), 'x', ''];
  fs.writeFileSync(path.join(tmp, 'texts.jsonl'), texts.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  ok(['encode', '--model', model, '--input', path.join(tmp, 'texts.jsonl'), '--output', path.join(tmp, 'm3.jsonl'), '--return', 'dense,sparse,colbert']);
  m3 = fs.readFileSync(path.join(tmp, 'm3.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}, 180_000);

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);

test('the export holds the layout transformers.js loads offline', () => {
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'modules.json', '1_Pooling/config.json',
    'onnx/model.onnx', 'onnx/model_fp16.onnx', 'onnx/model_quantized.onnx']) {
    expect(fs.existsSync(path.join(onnxDir, f))).toBe(true);
  }
  expect(JSON.parse(fs.readFileSync(path.join(onnxDir, 'tokenizer_config.json'), 'utf8')).model_max_length).toBe(128);
});

test('transformers.js: same token ids, and CLS pooling + normalize gives m3 encode\'s dense vectors (≤ 1e-4)', async () => {
  const ours = loadTokenizer(model);
  const theirs = await AutoTokenizer.from_pretrained(onnxDir, { local_files_only: true });
  for (const t of texts) expect(theirs.encode(t)).toEqual(ours.encode(t, 128));

  const extractor = await pipeline('feature-extraction', onnxDir, { local_files_only: true });
  try {
    const got = (await extractor(texts, { pooling: 'cls', normalize: true })).tolist() as number[][];
    expect(got.length).toBe(texts.length);
    let worst = 0;
    got.forEach((v, i) => (worst = Math.max(worst, maxAbsDiff(v, m3[i].dense))));
    expect(worst).toBeLessThanOrEqual(1e-4);
  } finally {
    await extractor.dispose();
  }
});

test('fp16 and int8 (q8) keep the dense cosine to fp32 ≥ 0.99 on NFCorpus documents', async () => {
  const dense: Record<string, number[][]> = {};
  for (const dtype of ['fp32', 'fp16', 'q8'] as const) {
    const extractor = await pipeline('feature-extraction', onnxDir, { local_files_only: true, dtype, device: 'cpu' });
    try {
      dense[dtype] = (await extractor(docs, { pooling: 'cls', normalize: true })).tolist() as number[][];
    } finally {
      await extractor.dispose();
    }
  }
  for (const dtype of ['fp16', 'q8']) {
    const cos = dense[dtype].map((v, i) => dot(v, dense.fp32[i]));
    expect(Math.min(...cos)).toBeGreaterThanOrEqual(0.99);
  }
});

test('fp16 and int8 keep every ColBERT token vector (cosine ≥ 0.99) and the sparse weights close, in onnxruntime-node', async () => {
  // a few training steps leave the CLS vectors of different texts nearly parallel, so the dense check above
  // is easy; the ColBERT vectors of different tokens are not (cosine ≈ 0.4), which makes this one strict
  const tok = loadTokenizer(onnxDir);
  const b = padBatch(docs.map((t) => tok.encode(t, 128)), tok.padId);
  const int64 = (a: Int32Array) => new ort.Tensor('int64', BigInt64Array.from(a, (v) => BigInt(v)), [b.batch, b.length]);
  const outs: Record<string, ort.InferenceSession.OnnxValueMapType> = {};
  for (const f of ['model', 'model_fp16', 'model_quantized']) {
    const s = await ort.InferenceSession.create(path.join(onnxDir, 'onnx', `${f}.onnx`), { executionProviders: ['cpu'] });
    outs[f] = await s.run({ input_ids: int64(b.inputIds), attention_mask: int64(b.attentionMask), token_type_ids: int64(new Int32Array(b.inputIds.length)) });
    await s.release();
  }
  const ref = outs.model;
  const [, l1, dim] = ref.colbert_vecs.dims;
  for (const f of ['model_fp16', 'model_quantized']) {
    const got = outs[f];
    let worst = 1;
    for (let i = 0; i < b.batch; i++) {
      for (let j = 0; j < l1; j++) {
        if (!b.attentionMask[i * b.length + j + 1]) continue;
        const off = (i * l1 + j) * dim;
        let c = 0;
        for (let k = 0; k < dim; k++) c += (got.colbert_vecs.data as Float32Array)[off + k] * (ref.colbert_vecs.data as Float32Array)[off + k];
        worst = Math.min(worst, c);
      }
    }
    expect(worst).toBeGreaterThanOrEqual(0.99);
    const sw = ref.sparse_weights.data as Float32Array;
    expect(maxAbsDiff(got.sparse_weights.data as Float32Array, sw)).toBeLessThanOrEqual(0.05 * Math.max(...sw));
  }
});

/** The js blocks of the README section "Export and serving", run as written (ES modules) against the export. */
function runReadmeExample(index: number): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Export and serving');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const blocks = [...section.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
  expect(blocks.length).toBe(2);
  const app = path.join(tmp, `app${index}`);
  fs.mkdirSync(app, { recursive: true });
  if (!fs.existsSync(path.join(app, 'node_modules'))) fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(app, 'node_modules'));
  fs.writeFileSync(path.join(app, 'example.mjs'), blocks[index]);
  return execFileSync(process.execPath, ['example.mjs'], { cwd: app, encoding: 'utf8', env: { ...process.env, M3_ONNX: onnxDir }, stdio: ['ignore', 'pipe', 'pipe'] });
}

test('README: the transformers.js example prints the cosine m3 encode\'s dense vectors give', () => {
  const printed = Number(runReadmeExample(0).trim());
  expect(Math.abs(printed - dot(m3[0].dense, m3[1].dense))).toBeLessThanOrEqual(2e-6);
});

test('README: the onnxruntime-node example gives m3 encode\'s dense, lexical weights and ColBERT count', () => {
  const got = JSON.parse(runReadmeExample(1));
  expect(maxAbsDiff(got.dense, m3[0].dense)).toBeLessThanOrEqual(1e-4);
  expect(Object.keys(got.lexical).sort()).toEqual(Object.keys(m3[0].sparse).sort());
  for (const [id, w] of Object.entries(m3[0].sparse)) expect(Math.abs(got.lexical[id] - w)).toBeLessThanOrEqual(1e-4);
  expect(got.colbert_vectors).toBe(m3[0].colbert.length);
});
