/**
 * Encoding throughput (sentences/s; tokens/s counting real, non-pad tokens) per available backend, for the tiny
 * BERT of ../shared/data and a 4-layer, hidden-256 XLM-R-shaped model (random weights; speed does not depend on
 * them), each saved once and read back by every row: fixed token ids encoded as `m3 encode`, `m3 eval` and
 * `m3 mine` do (encodeIds: sorted by length, longest first, batches of 32; the bench's sequences are all full
 * length, so nothing is padded), one warm-up batch, then the median of 3 timed passes.
 *
 * In the same run, PyTorch inference on the same saved weights and ids (bench/encode_torch.py:
 * ../shared/reference/m3ref.py's encoder and dense_vecs under torch.inference_mode(), Debian's python3-torch,
 * the better of 1 and 2 intra-op threads), first; each m3 row then gets `ratio_to_pytorch` (its tokens/s ÷
 * PyTorch's; the target for xlmr-4x256 is ≥ 2) and `same_output` (see sameOutput). `--no-baseline` skips
 * PyTorch, `--backend pytorch` runs only it; without python3 + torch its rows say why.
 *
 * Last, the same models exported by `m3 export` (fp32 and int8) run by onnxruntime-node's CPU execution
 * provider on the same token ids (a devDependency: the rows are skipped when it is not installed).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { availableBackends, useBackend } from '../src/backend';
import { parseConfig } from '../src/model/config';
import { exportOnnx, ONNX_FILES } from '../src/model/export';
import { Embedding, encodeIds } from '../src/model/inference';
import { disposeModel, initModel, loadModel, M3Model, saveModel } from '../src/model/m3';
import { padBatch } from '../src/model/tokenizer';
import { runPythonJson } from './python';

const SHARED = process.env.M3_SHARED_DIR ?? path.resolve(__dirname, '..', '..', 'shared');

function xlmrSmall(): M3Model {
  const config = parseConfig({
    model_type: 'xlm-roberta', vocab_size: 8000, hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4,
    intermediate_size: 1024, max_position_embeddings: 514, type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1,
  });
  return initModel(config, { seed: 0, heads: true });
}

function randomSeqs(n: number, len: number, vocab: number): number[][] {
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  return Array.from({ length: n }, () => [0, ...Array.from({ length: len - 2 }, () => 5 + Math.floor(rnd() * (vocab - 5))), 2]);
}

const CASES: [string, () => M3Model, number, number][] = [
  ['tiny-bert', () => loadModel(path.join(SHARED, 'data/models/lightning-ir-tiny-bert')), 512, 32],
  ['xlmr-4x256', xlmrSmall, 128, 128],
];
const BATCH = 32;

/** The bench's token ids for a model: CLS … SEP framed with the ids its family uses. */
function benchSeqs(model: M3Model, n: number, len: number): number[][] {
  return randomSeqs(n, len, Math.min(model.config.vocabSize, 8000)).map((q) => (model.config.family === 'bert' ? q.map((t, i) => (i === 0 ? 2 : i === q.length - 1 ? 3 : t % model.config.vocabSize)) : q));
}

/** Real (non-pad) tokens: what every row's tokens/s counts. */
const tokensOf = (seqs: number[][]) => seqs.reduce((sum, q) => sum + q.length, 0);

type Row = Record<string, unknown>;
interface Case { name: string; len: number; dir: string; ids: string; seqs: number[][]; withTypes: boolean; padId: number }
interface Baseline { row: Row; firstDense?: number[] }

/**
 * Each case's model saved once, with its token ids, under `tmp`: every row (m3 backends, PyTorch, onnxruntime)
 * reads those files, so the weights are the same by construction. (Building the model again per row would not
 * do: TF.js takes seed 0 for no seed, so initModel's first tensor differs from call to call.)
 */
async function prepareCases(tmp: string): Promise<Case[]> {
  const cases: Case[] = [];
  for (const [name, make, n, len] of CASES) {
    const model = make();
    const c = { name, len, dir: path.join(tmp, name), ids: path.join(tmp, `${name}-ids.json`), seqs: benchSeqs(model, n, len), withTypes: model.config.family === 'bert', padId: model.config.padTokenId };
    await saveModel(model, c.dir);
    disposeModel(model);
    fs.writeFileSync(c.ids, JSON.stringify(c.seqs));
    cases.push(c);
  }
  return cases;
}

/** One PyTorch row per case (bench/encode_torch.py), and its dense vector of the first sequence. */
function pytorchRows(cases: Case[]): Map<string, Baseline> {
  const out = new Map<string, Baseline>();
  for (const c of cases) {
    const r = runPythonJson(path.join(__dirname, 'encode_torch.py'), [c.dir, c.ids, String(BATCH)], { env: { M3_SHARED_DIR: SHARED }, timeoutMs: 600_000 });
    const { first_dense: firstDense, ...rest } = r as Row & { first_dense?: number[] };
    out.set(c.name, { row: { bench: 'encode', model: c.name, seq_len: c.len, ...rest, backend: 'pytorch' }, firstDense });
  }
  return out;
}

/**
 * Whether PyTorch's dense vector of the first sequence is m3's: nearer to it than a hundredth of the distance
 * from m3's vector of the second sequence. A bare cosine would not tell texts apart: with these weights every
 * text's vector is within cosine 0.9999 or so of the others'.
 */
function sameOutput(mine: Embedding[], theirs: number[]): boolean {
  const dist = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.sqrt(Array.from(a, (v, i) => (v - b[i]) ** 2).reduce((x, y) => x + y, 0));
  const [a, b] = [mine[0].dense!, mine[1].dense!];
  return a.length === theirs.length && dist(a, theirs) < dist(a, b) / 100;
}

const ORT_DTYPES = [['onnxruntime-fp32', 'fp32'], ['onnxruntime-int8', 'int8']] as const;

/** onnxruntime-node rows: each case's saved model exported (fp32, int8) and run on the same ids, dense_vecs fetched. */
async function onnxRows(cases: Case[], tmp: string): Promise<Row[]> {
  let ort: typeof import('onnxruntime-node');
  try {
    ort = require('onnxruntime-node');
  } catch {
    process.stderr.write('bench encode: onnxruntime-node is not installed (a devDependency); skipping its rows\n');
    return [];
  }
  const rows: Row[] = [];
  for (const { name, len, dir, seqs, withTypes, padId } of cases) {
    const out = path.join(tmp, `${name}-onnx`);
    await exportOnnx(dir, out, { dtypes: ORT_DTYPES.map(([, d]) => d) });
    const batches: Record<string, import('onnxruntime-node').Tensor>[] = [];
    for (let s = 0; s < seqs.length; s += BATCH) {
      const b = padBatch(seqs.slice(s, s + BATCH), padId);
      const t = (a: Int32Array) => new ort.Tensor('int64', BigInt64Array.from(a, (v) => BigInt(v)), [b.batch, b.length]);
      batches.push({ input_ids: t(b.inputIds), attention_mask: t(b.attentionMask), ...(withTypes ? { token_type_ids: t(new Int32Array(b.inputIds.length)) } : {}) });
    }
    for (const [backend, dtype] of ORT_DTYPES) {
      const session = await ort.InferenceSession.create(path.join(out, ONNX_FILES[dtype]), { executionProviders: ['cpu'] });
      await session.run(batches[0], ['dense_vecs']); // warm-up
      const secs = await medianSecs(async () => {
        for (const feeds of batches) await session.run(feeds, ['dense_vecs']);
      });
      await session.release();
      rows.push({ bench: 'encode', backend, model: name, seq_len: len, sentences_per_s: seqs.length / secs, tokens_per_s: tokensOf(seqs) / secs });
    }
  }
  return rows;
}

/** Seconds of the median of PASSES timed passes (one pass encodes every sequence), as encode_torch.py times. */
const PASSES = 3;
async function medianSecs(pass: () => Promise<unknown>): Promise<number> {
  const secs: number[] = [];
  for (let i = 0; i < PASSES; i++) {
    const t0 = performance.now();
    await pass();
    secs.push((performance.now() - t0) / 1000);
  }
  return secs.sort((a, b) => a - b)[PASSES >> 1];
}

export async function run(args: { json?: boolean; backend?: string; baseline?: boolean }): Promise<void> {
  const onnxOnly = args.backend?.startsWith('onnxruntime');
  const pytorchOnly = args.backend === 'pytorch';
  const backends = onnxOnly || pytorchOnly ? [] : args.backend ? [args.backend] : await availableBackends();
  const rows: Row[] = [];
  const emit = (row: Row) => {
    rows.push(row);
    if (args.json) process.stdout.write(JSON.stringify(row) + '\n');
  };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-bench-encode-'));
  try {
    await useBackend(backends[0] ?? 'cpu'); // to build and save the models: any backend will do
    const cases = await prepareCases(tmp);
    const baselines = !onnxOnly && args.baseline !== false ? pytorchRows(cases) : new Map<string, Baseline>();
    for (const { row } of baselines.values()) emit(row);
    for (const backend of backends) {
      await useBackend(backend); // registers it too (--backend names one availableBackends has not probed)
      for (const { name, len, dir, seqs } of cases) {
        const model = loadModel(dir);
        await encodeIds(model, seqs.slice(0, BATCH), { batchSize: BATCH }); // warm-up
        let out: Awaited<ReturnType<typeof encodeIds>> = [];
        const secs = await medianSecs(async () => (out = await encodeIds(model, seqs, { batchSize: BATCH, outputs: ['dense'] })));
        const row: Row = { bench: 'encode', backend, model: name, seq_len: len, sentences_per_s: seqs.length / secs, tokens_per_s: tokensOf(seqs) / secs };
        const base = baselines.get(name);
        if (typeof base?.row.tokens_per_s === 'number' && base.firstDense) {
          row.ratio_to_pytorch = (row.tokens_per_s as number) / base.row.tokens_per_s;
          row.same_output = sameOutput(out, base.firstDense);
        }
        emit(row);
        disposeModel(model);
      }
    }
    if (!args.backend || onnxOnly) {
      for (const row of await onnxRows(cases, tmp)) if (!onnxOnly || row.backend === args.backend || args.backend === 'onnxruntime') emit(row);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (!args.json) printTable(rows);
}

function printTable(rows: Row[]): void {
  process.stdout.write('backend           model        seq_len  sentences/s   tokens/s  ×PyTorch  note\n');
  const f = (v: unknown, d: number, w: number) => (typeof v === 'number' ? v.toFixed(d) : '-').padStart(w);
  for (const r of rows) {
    const head = `${String(r.backend).padEnd(17)} ${String(r.model).padEnd(12)} ${String(r.seq_len).padStart(7)}`;
    if (r.error) {
      process.stdout.write(`${head}  ${r.error}\n`);
      continue;
    }
    const per = r.per_threads as Record<string, { tokens_per_s: number }> | undefined;
    const note = per ? `best of 1/2 threads: ${r.threads_best} (${Object.entries(per).map(([t, p]) => `${t}: ${p.tokens_per_s.toFixed(0)} tokens/s`).join(', ')})`
      : r.same_output === false ? 'dense vectors differ from PyTorch\'s' : '';
    process.stdout.write(`${head} ${f(r.sentences_per_s, 1, 12)} ${f(r.tokens_per_s, 0, 10)} ${f(r.ratio_to_pytorch, 2, 9)}  ${note}\n`.trimEnd() + '\n');
  }
}
