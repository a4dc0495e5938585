/**
 * The BERT / XLM-RoBERTa encoder and the M3 heads as an ONNX graph, op for op what src/model/encoder.ts and
 * src/model/heads.ts compute:
 *   - embeddings: word + position + token type, LayerNorm (eps from config.json). Positions count 0..L−1
 *     (BERT) or, for XLM-R, cumsum(ids ≠ pad)·(ids ≠ pad) + pad_token_id, as HF and positionIds() do;
 *   - attention: q·(1/√d_head) before q·kᵀ, additive mask 0 / float32 min (−65504 in half) where padded;
 *   - FFN with exact-erf GELU (or tanh GELU / ReLU, per hidden_act), post-LayerNorm residuals;
 *   - outputs last_hidden_state, dense_vecs (CLS, L2-normalised), and with heads sparse_weights
 *     (relu(sparse_linear(h)) · mask) and colbert_vecs (colbert_linear(h[:, 1:]) normalised, · mask[:, 1:]).
 * dtype: fp32; fp16 (weights and activations half, normalisation and outputs float32); int8 (every Linear
 * as DynamicQuantizeLinear + MatMulInteger with per-output-channel uint8 weights; the rest float32).
 */
import { EncoderConfig } from '../config';
import { TensorMap, HostTensor } from '../weights/types';
import { DataType, DT, Graph } from './graph';
import { float16Bytes, float32Bytes, quantizePerOutputChannel, transpose } from './quantize';

export type ExportDtype = 'fp32' | 'fp16' | 'int8';
export const EXPORT_DTYPES: ExportDtype[] = ['fp32', 'fp16', 'int8'];

/** Opsets the graph is written for: 13 (axes as inputs) up to what onnxruntime-node runs. */
export const MIN_OPSET = 13;
export const MAX_OPSET = 22;
export const DEFAULT_OPSET = 17;

export interface EncoderGraphOptions {
  dtype: ExportDtype;
  opset: number;
}

const FLOAT32_MIN = -3.4028234663852886e38;
const FLOAT16_MIN = -65504;
const INT64_MAX = Number.MAX_SAFE_INTEGER; // any end past the axis length slices to its end

export const BATCH = 'batch_size';
export const SEQUENCE = 'sequence_length';

/** Whether the graph takes token_type_ids (BERT does, as transformers.js feeds it; XLM-R has one type). */
export function takesTokenTypes(cfg: EncoderConfig): boolean {
  return cfg.family === 'bert';
}

export function buildEncoderGraph(cfg: EncoderConfig, encoder: TensorMap, heads: TensorMap, o: EncoderGraphOptions): Graph {
  const g = new Graph();
  const half = o.dtype === 'fp16';
  const ct: DataType = half ? DT.FLOAT16 : DT.FLOAT; // compute type
  const d = cfg.hidden;
  const get = (name: string, map: TensorMap = encoder): HostTensor => {
    const t = map.get(name);
    if (!t) throw new Error(`missing parameter '${name}'`);
    return t;
  };
  const weight = (hint: string, t: HostTensor, dims = t.shape): string =>
    g.initializer(hint, ct, dims, half ? float16Bytes(t.data as Float32Array) : float32Bytes(t.data as Float32Array));
  const c = (v: number): string => g.constant(ct, [], [v]);
  const c32 = (v: number): string => g.constant(DT.FLOAT, [], [v]);
  const i64 = (values: number[], dims = [values.length]): string => g.constant(DT.INT64, dims, values);

  /** y = x·Wᵀ + b for a PyTorch Linear weight [out, in]. */
  const linear = (x: string, prefix: string, map: TensorMap = encoder): string => {
    const w = get(prefix + '.weight', map);
    const b = get(prefix + '.bias', map);
    const [out, inDim] = w.shape;
    const bias = weight(prefix + '.bias', b);
    if (o.dtype === 'int8') {
      const qm = quantizePerOutputChannel(w.data as Float32Array, out, inDim);
      const wq = g.initializer(prefix + '.weight_quantized', DT.UINT8, [inDim, out], qm.q);
      const wzp = g.initializer(prefix + '.weight_zero_point', DT.UINT8, [out], qm.zeroPoint);
      const ws = g.initializer(prefix + '.weight_scale', DT.FLOAT, [out], float32Bytes(qm.scale));
      const [xq, xs, xzp] = g.opN('DynamicQuantizeLinear', [x], 3, {}, prefix + '.input_quantized');
      const acc = g.op('MatMulInteger', [xq, wq, xzp, wzp], {}, prefix + '.matmul_int');
      const accF = g.op('Cast', [acc], { to: { i: DT.FLOAT } });
      const scale = g.op('Mul', [xs, ws], {}, prefix + '.scale');
      return g.op('Add', [g.op('Mul', [accF, scale]), bias], {}, prefix);
    }
    const wT = g.initializer(prefix + '.weight_t', ct, [inDim, out], half ? float16Bytes(transpose(w.data as Float32Array, out, inDim)) : float32Bytes(transpose(w.data as Float32Array, out, inDim)));
    return g.op('Add', [g.op('MatMul', [x, wT]), bias], {}, prefix);
  };

  /** LayerNorm over the last axis with biased variance (LayerNormalization from opset 17, else spelled out). */
  const layerNorm = (x: string, prefix: string): string => {
    const gamma = weight(prefix + '.weight', get(prefix + '.weight'));
    const beta = weight(prefix + '.bias', get(prefix + '.bias'));
    if (o.opset >= 17) return g.op('LayerNormalization', [x, gamma, beta], { axis: { i: -1 }, epsilon: { f: cfg.layerNormEps } }, prefix);
    // decomposed: computed in float32 even for fp16 graphs (squares of activations overflow half)
    const xf = half ? g.op('Cast', [x], { to: { i: DT.FLOAT } }) : x;
    const mean = g.op('ReduceMean', [xf], { axes: { ints: [-1] }, keepdims: { i: 1 } });
    const centred = g.op('Sub', [xf, mean]);
    const variance = g.op('ReduceMean', [g.op('Mul', [centred, centred])], { axes: { ints: [-1] }, keepdims: { i: 1 } });
    const normed = g.op('Div', [centred, g.op('Sqrt', [g.op('Add', [variance, c32(cfg.layerNormEps)])])]);
    const back = half ? g.op('Cast', [normed], { to: { i: DT.FLOAT16 } }) : normed;
    return g.op('Add', [g.op('Mul', [back, gamma]), beta], {}, prefix);
  };

  const activation = (x: string): string => {
    if (cfg.activation === 'relu') return g.op('Relu', [x]);
    if (cfg.activation === 'gelu') {
      // x · ½ · (1 + erf(x / √2))
      const erf = g.op('Erf', [g.op('Div', [x, c(Math.SQRT2)])]);
      return g.op('Mul', [g.op('Mul', [x, c(0.5)]), g.op('Add', [erf, c(1)])]);
    }
    // tanh form: ½x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
    const cube = g.op('Mul', [g.op('Mul', [x, x]), x]);
    const inner = g.op('Mul', [g.op('Add', [x, g.op('Mul', [cube, c(0.044715)])]), c(Math.sqrt(2 / Math.PI))]);
    return g.op('Mul', [g.op('Mul', [x, c(0.5)]), g.op('Add', [g.op('Tanh', [inner]), c(1)])]);
  };

  /** x / sqrt(max(Σx², eps²)) over the last axis (float32), as l2Normalize: zero rows stay zero. */
  const l2Normalize = (x: string): string => {
    const ss = g.op('ReduceSum', [g.op('Mul', [x, x]), i64([-1])], { keepdims: { i: 1 } });
    return g.op('Div', [x, g.op('Sqrt', [g.op('Max', [ss, c32(1e-24)])])]);
  };
  const toFloat = (x: string): string => (half ? g.op('Cast', [x], { to: { i: DT.FLOAT } }) : x);

  // ---- inputs
  const ids = g.input({ name: 'input_ids', dataType: DT.INT64, dims: [BATCH, SEQUENCE] });
  const mask = g.input({ name: 'attention_mask', dataType: DT.INT64, dims: [BATCH, SEQUENCE] });
  const types = takesTokenTypes(cfg) ? g.input({ name: 'token_type_ids', dataType: DT.INT64, dims: [BATCH, SEQUENCE] }) : null;

  // ---- embeddings
  const word = weight('embeddings.word_embeddings.weight', get('embeddings.word_embeddings.weight'));
  const posTable = weight('embeddings.position_embeddings.weight', get('embeddings.position_embeddings.weight'));
  let x = g.op('Gather', [word, ids], { axis: { i: 0 } }, 'embeddings.word');
  let positions: string;
  if (cfg.family === 'bert') {
    const len = g.op('Gather', [g.op('Shape', [ids]), g.constant(DT.INT64, [], [1])], { axis: { i: 0 } }, 'sequence_length');
    positions = g.op('Range', [g.constant(DT.INT64, [], [0]), len, g.constant(DT.INT64, [], [1])], {}, 'position_ids');
  } else {
    const notPad = g.op('Cast', [g.op('Not', [g.op('Equal', [ids, g.constant(DT.INT64, [], [cfg.padTokenId])])])], { to: { i: DT.INT64 } });
    const counts = g.op('CumSum', [notPad, g.constant(DT.INT64, [], [1])]);
    positions = g.op('Add', [g.op('Mul', [counts, notPad]), g.constant(DT.INT64, [], [cfg.padTokenId])], {}, 'position_ids');
  }
  x = g.op('Add', [x, g.op('Gather', [posTable, positions], { axis: { i: 0 } }, 'embeddings.position')]);
  const typeTable = get('embeddings.token_type_embeddings.weight');
  if (types) {
    x = g.op('Add', [x, g.op('Gather', [weight('embeddings.token_type_embeddings.weight', typeTable), types], { axis: { i: 0 } }, 'embeddings.token_type')]);
  } else {
    // one token type: add row 0, as the encoder does
    const row0: HostTensor = { dtype: 'float32', shape: [d], data: (typeTable.data as Float32Array).subarray(0, d) };
    x = g.op('Add', [x, weight('embeddings.token_type_embeddings.row0', row0)]);
  }
  x = layerNorm(x, 'embeddings.LayerNorm');

  // ---- additive attention mask [B, 1, 1, L]
  const visible = g.op('Cast', [mask], { to: { i: DT.BOOL } });
  const additive = g.op('Where', [visible, c(0), c(half ? FLOAT16_MIN : FLOAT32_MIN)], {}, 'additive_mask');
  const mask4 = g.op('Unsqueeze', [additive, i64([1, 2])], {}, 'additive_mask_4d');

  // ---- layers
  const h = cfg.heads;
  const hd = d / h;
  const headShape = i64([0, 0, h, hd]);
  const modelShape = i64([0, 0, d]);
  for (let i = 0; i < cfg.layers; i++) {
    const p = `encoder.layer.${i}.`;
    const split = (t: string, perm: number[]) => g.op('Transpose', [g.op('Reshape', [t, headShape])], { perm: { ints: perm } });
    const q = split(g.op('Mul', [linear(x, p + 'attention.self.query'), c(1 / Math.sqrt(hd))]), [0, 2, 1, 3]);
    const kT = split(linear(x, p + 'attention.self.key'), [0, 2, 3, 1]);
    const v = split(linear(x, p + 'attention.self.value'), [0, 2, 1, 3]);
    const scores = g.op('Add', [g.op('MatMul', [q, kT]), mask4]);
    const probs = g.op('Softmax', [scores], { axis: { i: -1 } });
    const ctx = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [probs, v])], { perm: { ints: [0, 2, 1, 3] } }), modelShape]);
    const attnOut = linear(ctx, p + 'attention.output.dense');
    x = layerNorm(g.op('Add', [attnOut, x]), p + 'attention.output.LayerNorm');
    const inter = activation(linear(x, p + 'intermediate.dense'));
    x = layerNorm(g.op('Add', [linear(inter, p + 'output.dense'), x]), p + 'output.LayerNorm');
  }

  // ---- outputs
  const hidden = toFloat(x);
  g.output(hidden, { name: 'last_hidden_state', dataType: DT.FLOAT, dims: [BATCH, SEQUENCE, d] });
  const cls = g.op('Gather', [hidden, g.constant(DT.INT64, [], [0])], { axis: { i: 1 } }, 'cls');
  g.output(l2Normalize(cls), { name: 'dense_vecs', dataType: DT.FLOAT, dims: [BATCH, d] });
  if (heads.size > 0) {
    const maskF = g.op('Cast', [mask], { to: { i: DT.FLOAT } }, 'mask_float');
    const sparse = toFloat(g.op('Relu', [linear(x, 'sparse_linear', heads)]));
    const sparse2 = g.op('Squeeze', [sparse, i64([2])]);
    g.output(g.op('Mul', [sparse2, maskF]), { name: 'sparse_weights', dataType: DT.FLOAT, dims: [BATCH, SEQUENCE] });
    const body = g.op('Slice', [x, i64([1]), i64([INT64_MAX]), i64([1])], {}, 'tokens_after_cls');
    const colbert = l2Normalize(toFloat(linear(body, 'colbert_linear', heads)));
    const bodyMask = g.op('Unsqueeze', [g.op('Slice', [maskF, i64([1]), i64([INT64_MAX]), i64([1])]), i64([2])]);
    const colbertDim = get('colbert_linear.weight', heads).shape[0];
    g.output(g.op('Mul', [colbert, bodyMask]), { name: 'colbert_vecs', dataType: DT.FLOAT, dims: [BATCH, null, colbertDim] });
  }
  return g;
}
