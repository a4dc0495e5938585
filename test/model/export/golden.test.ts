/**
 * `exportOnnx` against the golden encoder cases (every case of kind `encoder` under M3_GOLDEN_DIR), run by
 * onnxruntime-node's CPU execution provider, not by a reader of ours: last_hidden_state, dense_vecs,
 * sparse_weights (= the golden sparse_token_weights) and colbert_vecs within the case tolerance — with the
 * default opset (LayerNormalization), opset 14 (LayerNorm spelled out) and forced external data; fp16 and
 * int8 graphs run and stay close. The protobuf decodes back through onnx-proto with dynamic axes.
 *
 * @jest-environment ./test/helpers/onnx-environment.js
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { expectClose, GoldenCase, listCases } from '../../golden/common';
import { exportOnnx, ExportOptions } from '../../../src/model/export';
import { quantizePerOutputChannel, transpose } from '../../../src/model/export/quantize';

const cases = listCases().filter((c) => c.spec.kind === 'encoder');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-export-golden-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const int64 = (data: ArrayLike<number>, dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(Array.from(data), (v) => BigInt(v)), dims);

async function run(c: GoldenCase, file: string): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(file, { executionProviders: ['cpu'] });
  try {
    const ids = c.tensors.get('input_ids')!;
    const mask = c.tensors.get('attention_mask')!;
    const feeds: Record<string, ort.Tensor> = { input_ids: int64(ids.data, ids.shape), attention_mask: int64(mask.data, mask.shape) };
    if (session.inputNames.includes('token_type_ids')) feeds.token_type_ids = int64(new Array(ids.data.length).fill(0), ids.shape);
    const out = await session.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await session.release();
  }
}

async function exportCase(c: GoldenCase, name: string, o: ExportOptions) {
  const out = path.join(tmp, `${c.name}-${name}`);
  const r = await exportOnnx(path.join(c.dir, c.spec.model_dir ?? 'model'), out, o);
  return { out, r };
}

/** A graph file decoded by onnx-proto (repeated fields of decoded messages are arrays, never null). */
const decode = (file: string) => onnx.ModelProto.decode(fs.readFileSync(file)).graph as onnx.GraphProto;

const PAIRS: [string, string][] = [['last_hidden_state', 'last_hidden_state'], ['dense_vecs', 'dense_vecs'], ['sparse_weights', 'sparse_token_weights'], ['colbert_vecs', 'colbert_vecs']];

function expectGolden(c: GoldenCase, got: Record<string, Float32Array>): void {
  for (const [output, golden] of PAIRS) {
    if (!c.tensors.has(golden)) continue;
    expect(got[output]).toBeDefined();
    expectClose(`${c.name}: ${output}`, got[output], c.tensors.get(golden)!, c.spec.tolerance);
  }
}

function minRowCosine(a: Float32Array, b: ArrayLike<number>, dim: number): number {
  let min = 1;
  for (let r = 0; r < a.length / dim; r++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let k = r * dim; k < (r + 1) * dim; k++) {
      dot += a[k] * b[k];
      na += a[k] * a[k];
      nb += b[k] * b[k];
    }
    min = Math.min(min, dot / Math.sqrt(na * nb));
  }
  return min;
}

test('there are encoder golden cases', () => {
  expect(cases.length).toBeGreaterThan(0);
});

describe.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
  test('fp32 (opset 17) reproduces the golden outputs in onnxruntime-node', async () => {
    const { out, r } = await exportCase(c, 'fp32', {});
    expect(r.outputs).toEqual(['last_hidden_state', 'dense_vecs', 'sparse_weights', 'colbert_vecs']);
    expect(r.inputs).toEqual(['input_ids', 'attention_mask', ...(r.family === 'bert' ? ['token_type_ids'] : [])]);
    expect(fs.readdirSync(path.join(out, 'onnx'))).toEqual(['model.onnx']);
    expectGolden(c, await run(c, path.join(out, 'onnx/model.onnx')));

    // what the file holds, decoded by onnx-proto: int64 inputs and float outputs with dynamic batch / sequence axes
    const model = onnx.ModelProto.decode(fs.readFileSync(path.join(out, 'onnx/model.onnx')));
    expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', 17]]);
    const graph = model.graph as onnx.GraphProto;
    for (const i of graph.input) {
      expect(i.type!.tensorType!.elemType).toBe(onnx.TensorProto.DataType.INT64);
      expect(i.type!.tensorType!.shape!.dim!.map((d) => d.dimParam)).toEqual(['batch_size', 'sequence_length']);
    }
    for (const o of graph.output) {
      expect(o.type!.tensorType!.elemType).toBe(onnx.TensorProto.DataType.FLOAT);
      expect(o.type!.tensorType!.shape!.dim![0].dimParam).toBe('batch_size');
    }
    expect(graph.node.some((n) => n.opType === 'LayerNormalization')).toBe(true);
  });

  test('opset 14 (LayerNorm spelled out) and forced external data reproduce them too', async () => {
    const a = await exportCase(c, 'opset14', { opset: 14 });
    const m14 = decode(path.join(a.out, 'onnx/model.onnx'));
    expect(m14.node.some((n) => n.opType === 'LayerNormalization')).toBe(false);
    expectGolden(c, await run(c, path.join(a.out, 'onnx/model.onnx')));

    const b = await exportCase(c, 'external', { externalData: true });
    expect(b.r.files[0].dataFile).toBe('onnx/model.onnx_data');
    expect(fs.readdirSync(path.join(b.out, 'onnx')).sort()).toEqual(['model.onnx', 'model.onnx_data']);
    const mx = decode(path.join(b.out, 'onnx/model.onnx'));
    const ext = mx.initializer.filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL);
    expect(ext.length).toBeGreaterThan(0);
    expect(ext.find((t) => t.name === 'embeddings.word_embeddings.weight')!.externalData!.map((e) => e.key)).toEqual(['location', 'offset', 'length']);
    expect(fs.statSync(path.join(b.out, 'onnx/model.onnx')).size).toBeLessThan(fs.statSync(path.join(b.out, 'onnx/model.onnx_data')).size / 4);
    // transformers.js learns from config.json which file has external data
    expect(JSON.parse(fs.readFileSync(path.join(b.out, 'config.json'), 'utf8'))['transformers.js_config']).toEqual({ use_external_data_format: { 'model.onnx': 1 } });
    expectGolden(c, await run(c, path.join(b.out, 'onnx/model.onnx')));
  });

  test('fp16 and int8 graphs run with float32 outputs close to the golden ones', async () => {
    const { out, r } = await exportCase(c, 'lowp', { dtypes: ['fp16', 'int8'] });
    expect(r.files.map((f) => f.file)).toEqual(['onnx/model_fp16.onnx', 'onnx/model_quantized.onnx']);
    const dense = c.tensors.get('dense_vecs')!;
    const dim = dense.shape[1];
    for (const f of r.files) {
      const got = await run(c, path.join(out, f.file));
      for (const v of Object.values(got)) expect(v).toBeInstanceOf(Float32Array);
      expect(minRowCosine(got.dense_vecs, dense.data, dim)).toBeGreaterThanOrEqual(0.99);
      // padding stays exactly zero in every dtype
      const mask = c.tensors.get('attention_mask')!.data;
      mask.forEach((m, k) => {
        if (!m) expect(got.sparse_weights[k]).toBe(0);
      });
    }
    const fp16 = decode(path.join(out, 'onnx/model_fp16.onnx'));
    expect(fp16.initializer.find((t) => t.name === 'embeddings.word_embeddings.weight')!.dataType).toBe(onnx.TensorProto.DataType.FLOAT16);
    const q = decode(path.join(out, 'onnx/model_quantized.onnx'));
    const ops = new Set(q.node.map((n) => n.opType));
    expect(ops.has('DynamicQuantizeLinear') && ops.has('MatMulInteger')).toBe(true);
    // every weight MatMul is quantised; the float MatMuls left are the attention products
    const layers = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).num_hidden_layers;
    expect(q.node.filter((n) => n.opType === 'MatMul').length).toBe(2 * layers);
  });
});

test('per-output-channel quantisation: each column dequantises within half a step, zero stays exact', () => {
  const out = 3;
  const inDim = 5;
  const w = Float32Array.from({ length: out * inDim }, (_, k) => Math.sin(k * 1.7) * (1 + Math.floor(k / inDim)));
  w[2] = 0;
  const { q, scale, zeroPoint } = quantizePerOutputChannel(w, out, inDim);
  const wT = transpose(w, out, inDim);
  for (let i = 0; i < inDim; i++) {
    for (let o = 0; o < out; o++) {
      const back = (q[i * out + o] - zeroPoint[o]) * scale[o];
      expect(Math.abs(back - wT[i * out + o])).toBeLessThanOrEqual(scale[o] / 2 + 1e-7);
    }
  }
  expect((q[2 * out + 0] - zeroPoint[0]) * scale[0]).toBe(0);
  expect(new Set(scale).size).toBe(out);
});
