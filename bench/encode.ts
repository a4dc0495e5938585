/**
 * Encoding throughput (sentences/s, tokens/s) per available backend, for the tiny BERT of
 * ../shared/data and a 4-layer, hidden-256 XLM-R-shaped model (random weights; speed does not depend on them),
 * and the same models exported by `m3 export` (fp32 and int8) run by onnxruntime-node's CPU execution
 * provider on the same token ids (a devDependency: the rows are skipped when it is not installed).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { availableBackends } from '../src/backend';
import { parseConfig } from '../src/model/config';
import { exportOnnx, ONNX_FILES } from '../src/model/export';
import { encodeIds } from '../src/model/inference';
import { disposeModel, initModel, loadModel, M3Model, saveModel } from '../src/model/m3';
import { padBatch } from '../src/model/tokenizer';

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

const ORT_DTYPES = [['onnxruntime-fp32', 'fp32'], ['onnxruntime-int8', 'int8']] as const;

/** onnxruntime-node rows: each case saved, exported (fp32, int8) and run on the same ids, dense_vecs fetched. */
async function onnxRows(): Promise<Record<string, unknown>[]> {
  let ort: typeof import('onnxruntime-node');
  try {
    ort = require('onnxruntime-node');
  } catch {
    process.stderr.write('bench encode: onnxruntime-node is not installed (a devDependency); skipping its rows\n');
    return [];
  }
  const rows: Record<string, unknown>[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-bench-onnx-'));
  try {
    for (const [name, make, n, len] of CASES) {
      const model = make();
      const seqs = benchSeqs(model, n, len);
      const src = path.join(tmp, `${name}-model`);
      await saveModel(model, src);
      const withTypes = model.config.family === 'bert';
      const padId = model.config.padTokenId;
      disposeModel(model);
      const out = path.join(tmp, `${name}-onnx`);
      await exportOnnx(src, out, { dtypes: ORT_DTYPES.map(([, d]) => d) });
      const batches = [];
      for (let s = 0; s < seqs.length; s += BATCH) {
        const b = padBatch(seqs.slice(s, s + BATCH), padId);
        const t = (a: Int32Array) => new ort.Tensor('int64', BigInt64Array.from(a, (v) => BigInt(v)), [b.batch, b.length]);
        batches.push({ input_ids: t(b.inputIds), attention_mask: t(b.attentionMask), ...(withTypes ? { token_type_ids: t(new Int32Array(b.inputIds.length)) } : {}) });
      }
      for (const [backend, dtype] of ORT_DTYPES) {
        const session = await ort.InferenceSession.create(path.join(out, ONNX_FILES[dtype]), { executionProviders: ['cpu'] });
        await session.run(batches[0], ['dense_vecs']); // warm-up
        const t0 = performance.now();
        for (const feeds of batches) await session.run(feeds, ['dense_vecs']);
        const secs = (performance.now() - t0) / 1000;
        await session.release();
        rows.push({ bench: 'encode', backend, model: name, seq_len: len, sentences_per_s: n / secs, tokens_per_s: (n * len) / secs });
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return rows;
}

export async function run(args: { json?: boolean; backend?: string }): Promise<void> {
  const onnxOnly = args.backend?.startsWith('onnxruntime');
  const backends = onnxOnly ? [] : args.backend ? [args.backend] : await availableBackends();
  const rows: Record<string, unknown>[] = [];
  const emit = (row: Record<string, unknown>) => {
    rows.push(row);
    if (args.json) process.stdout.write(JSON.stringify(row) + '\n');
  };
  for (const backend of backends) {
    await tf.setBackend(backend);
    for (const [name, make, n, len] of CASES) {
      const model = make();
      const seqs = benchSeqs(model, n, len);
      await encodeIds(model, seqs.slice(0, BATCH), { batchSize: BATCH }); // warm-up
      const t0 = performance.now();
      await encodeIds(model, seqs, { batchSize: BATCH, outputs: ['dense'] });
      const secs = (performance.now() - t0) / 1000;
      emit({ bench: 'encode', backend, model: name, seq_len: len, sentences_per_s: n / secs, tokens_per_s: (n * len) / secs });
      disposeModel(model);
    }
  }
  if (!args.backend || onnxOnly) {
    // models are built and saved through TF.js: any backend will do for that
    if (!backends.length) await tf.setBackend('cpu');
    for (const row of await onnxRows()) if (!onnxOnly || row.backend === args.backend || args.backend === 'onnxruntime') emit(row);
  }
  if (!args.json) {
    process.stdout.write('backend           model        seq_len  sentences/s   tokens/s\n');
    for (const r of rows) {
      process.stdout.write(`${String(r.backend).padEnd(17)} ${String(r.model).padEnd(12)} ${String(r.seq_len).padStart(7)} ${(r.sentences_per_s as number).toFixed(1).padStart(12)} ${(r.tokens_per_s as number).toFixed(0).padStart(10)}\n`);
    }
  }
}
