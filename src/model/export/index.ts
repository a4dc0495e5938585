/**
 * `m3 export --format onnx`: a model dir (HF / FlagEmbedding / m3 layout) → a dir transformers.js,
 * onnxruntime and sentence-transformers' ONNX backend load offline:
 *
 *   config.json                       the model's, plus transformers.js_config when a file has external data
 *   tokenizer.json, tokenizer_config.json, special_tokens_map.json (when the model dir has a tokenizer)
 *   modules.json, 1_Pooling/, ...     the sentence-transformers files, when the model dir has them
 *   onnx/model.onnx                   fp32   (+ onnx/model.onnx_data past 2 GiB, or when asked)
 *   onnx/model_fp16.onnx              fp16
 *   onnx/model_quantized.onnx         int8 (transformers.js dtype 'q8')
 *   README.md                         the model card (src/model/card.ts), m3_training.json when the model dir has one
 *
 * Everything is read and checked before anything is written, and the dir is built in a temp sibling and
 * renamed into place, so bad input never leaves a partial output.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../../util/errors';
import { recoverDir, writeDirAtomic } from '../../util/fsx';
import { CARD_FILE, hubIdOf, modelCard, readTrainingRecord, RECORD_FILE } from '../card';
import { EncoderConfig, maxInputLength, readConfig } from '../config';
import { loadTokenizer, Tokenizer } from '../tokenizer';
import { writeAll } from '../weights/fileio';
import { readModelWeights, SENTENCE_TRANSFORMERS_FILES } from '../weights/modeldir';
import { TensorMap } from '../weights/types';
import { buildEncoderGraph, DEFAULT_OPSET, EXPORT_DTYPES, ExportDtype, MAX_OPSET, MIN_OPSET, takesTokenTypes } from './encoder-graph';
import { writeOnnx } from './writer';

export { DEFAULT_OPSET, EXPORT_DTYPES, MAX_OPSET, MIN_OPSET } from './encoder-graph';
export type { ExportDtype } from './encoder-graph';

/** The file each dtype is written to, under the names transformers.js looks for (dtype fp32 / fp16 / q8). */
export const ONNX_FILES: Record<ExportDtype, string> = {
  fp32: 'onnx/model.onnx',
  fp16: 'onnx/model_fp16.onnx',
  int8: 'onnx/model_quantized.onnx',
};

export interface ExportOptions {
  /** Which graphs to write (default ['fp32']). */
  dtypes?: ExportDtype[];
  /** ONNX opset (default 17; MIN_OPSET..MAX_OPSET). */
  opset?: number;
  /** External data: 'auto' (default; only a file past protobuf's 2 GiB limit), true (every file), false. */
  externalData?: boolean | 'auto';
}

export interface ExportedFile {
  dtype: ExportDtype;
  /** Relative to the output dir. */
  file: string;
  bytes: number;
  /** The external data file, relative to the output dir, or null. */
  dataFile: string | null;
  dataBytes: number;
}

export interface ExportResult {
  output: string;
  family: EncoderConfig['family'];
  opset: number;
  inputs: string[];
  outputs: string[];
  files: ExportedFile[];
  /** Every file written, relative to the output dir. */
  written: string[];
}

/** Writes a file and fsyncs it (the dir is renamed into place only after every file is on disk). */
function writeSynced(file: string, data: Uint8Array): void {
  const fd = fs.openSync(file, 'w');
  try {
    writeAll(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

const writeJson = (file: string, value: unknown): void => writeSynced(file, Buffer.from(JSON.stringify(value, null, 2) + '\n', 'utf8'));

export function checkExportOptions(o: ExportOptions): { dtypes: ExportDtype[]; opset: number; externalData: boolean | 'auto' } {
  const dtypes = o.dtypes ?? ['fp32'];
  if (dtypes.length === 0) throw new UserError('--dtype: name at least one of fp32, fp16, int8');
  for (const d of dtypes) if (!EXPORT_DTYPES.includes(d)) throw new UserError(`--dtype: unknown dtype '${d}' (choose from ${EXPORT_DTYPES.join(', ')})`);
  const opset = o.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > MAX_OPSET) {
    throw new UserError(`--opset: ${opset} is not supported (an integer from ${MIN_OPSET} to ${MAX_OPSET}; LayerNormalization needs 17, below it the graph spells it out)`);
  }
  return { dtypes: [...new Set(dtypes)], opset, externalData: o.externalData ?? 'auto' };
}

/** Every parameter the graph reads, with its shape, checked against config.json; heads complete or absent. */
function checkWeights(cfg: EncoderConfig, encoder: TensorMap, heads: TensorMap, dir: string): void {
  const d = cfg.hidden;
  const want: Record<string, (number | null)[]> = {
    'embeddings.word_embeddings.weight': [cfg.vocabSize, d],
    'embeddings.position_embeddings.weight': [cfg.maxPositions, d],
    'embeddings.token_type_embeddings.weight': [null, d],
    'embeddings.LayerNorm.weight': [d],
    'embeddings.LayerNorm.bias': [d],
  };
  for (let i = 0; i < cfg.layers; i++) {
    const p = `encoder.layer.${i}.`;
    for (const m of ['attention.self.query', 'attention.self.key', 'attention.self.value', 'attention.output.dense']) {
      want[`${p}${m}.weight`] = [d, d];
      want[`${p}${m}.bias`] = [d];
    }
    want[p + 'intermediate.dense.weight'] = [cfg.intermediate, d];
    want[p + 'intermediate.dense.bias'] = [cfg.intermediate];
    want[p + 'output.dense.weight'] = [d, cfg.intermediate];
    want[p + 'output.dense.bias'] = [d];
    for (const ln of ['attention.output.LayerNorm', 'output.LayerNorm']) {
      want[`${p}${ln}.weight`] = [d];
      want[`${p}${ln}.bias`] = [d];
    }
  }
  const check = (map: TensorMap, name: string, shape: (number | null)[]) => {
    const t = map.get(name);
    if (!t) throw new UserError(`${dir}: weights lack '${name}'`);
    if (t.dtype !== 'float32') throw new UserError(`${dir}: '${name}' is not a float tensor`);
    if (t.shape.length !== shape.length || shape.some((s, k) => s !== null && s !== t.shape[k]) || t.shape.some((s) => s < 1)) {
      throw new UserError(`${dir}: '${name}' has shape [${t.shape}] but config.json implies [${shape.map((s) => s ?? 'n')}]`);
    }
  };
  for (const [name, shape] of Object.entries(want)) check(encoder, name, shape);
  if (heads.size === 0) return;
  const names = ['colbert_linear.weight', 'colbert_linear.bias', 'sparse_linear.weight', 'sparse_linear.bias'];
  if (!names.every((n) => heads.has(n))) {
    throw new UserError(`${dir}: incomplete M3 heads (found ${[...heads.keys()].join(', ')}; need both colbert_linear and sparse_linear, as .pt or .safetensors)`);
  }
  const cd = heads.get('colbert_linear.weight')!.shape[0];
  check(heads, 'colbert_linear.weight', [null, d]);
  check(heads, 'colbert_linear.bias', [cd]);
  check(heads, 'sparse_linear.weight', [1, d]);
  check(heads, 'sparse_linear.bias', [1]);
}

/** The output must not be (or contain) the model dir, and must not replace something that is not an export. */
function checkOutput(modelDir: string, out: string): void {
  const model = path.resolve(modelDir);
  const rel = path.relative(out, model);
  if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))) {
    throw new UserError(`${out}: the output would replace the model dir ${modelDir}; choose another --output`);
  }
  if (!fs.existsSync(out)) return;
  if (!fs.statSync(out).isDirectory()) throw new UserError(`${out}: exists and is not a directory`);
  const entries = fs.readdirSync(out);
  if (entries.length > 0 && !entries.includes('onnx')) {
    throw new UserError(`${out}: exists and is not an ONNX export (no onnx/ inside); remove it or choose another --output`);
  }
}

/**
 * tokenizer.json with a post-processor that frames a text exactly as this library does ([CLS] … [SEP],
 * or <s> … </s>), so transformers.js gives the ids `m3 encode` gives; tokenizer_config.json with
 * model_max_length (the longest input the position table allows) and a tokenizer_class.
 */
function writeTokenizer(tok: Tokenizer, cfg: EncoderConfig, dir: string): void {
  tok.save(dir);
  const tjFile = path.join(dir, 'tokenizer.json');
  const tj = JSON.parse(fs.readFileSync(tjFile, 'utf8'));
  const cls = tok.clsId >= 0 ? tok.idToToken(tok.clsId) : null;
  const sep = tok.sepId >= 0 ? tok.idToToken(tok.sepId) : null;
  if (cls || sep) {
    const special = (t: string | null, typeId: number) => (t ? [{ SpecialToken: { id: t, type_id: typeId } }] : []);
    const seq = (id: 'A' | 'B', typeId: number) => ({ Sequence: { id, type_id: typeId } });
    const bertStyle = tok.wordStyle === 'wordpiece';
    const b = bertStyle ? 1 : 0;
    tj.post_processor = {
      type: 'TemplateProcessing',
      single: [...special(cls, 0), seq('A', 0), ...special(sep, 0)],
      pair: [...special(cls, 0), seq('A', 0), ...special(sep, 0), ...(bertStyle ? [] : special(sep, 0)), seq('B', b), ...special(sep, b)],
      special_tokens: Object.fromEntries([[cls, tok.clsId], [sep, tok.sepId]]
        .filter((e): e is [string, number] => e[0] !== null)
        .map(([t, id]) => [t, { id: t, ids: [id], tokens: [t] }])),
    };
    writeJson(tjFile, tj);
  }
  const tcFile = path.join(dir, 'tokenizer_config.json');
  const tc = JSON.parse(fs.readFileSync(tcFile, 'utf8'));
  const limit = maxInputLength(cfg);
  if (!(Number(tc.model_max_length) <= limit)) tc.model_max_length = limit;
  tc.tokenizer_class ??= cfg.family === 'bert' ? 'BertTokenizer' : 'XLMRobertaTokenizer';
  writeJson(tcFile, tc);
}

/** Copies the sentence-transformers module files (CLS pooling, Normalize) that the model dir has. */
function copySentenceTransformers(modelDir: string, dir: string): string[] {
  const copied: string[] = [];
  const copy = (rel: string) => {
    const src = path.join(modelDir, rel);
    if (!fs.existsSync(src) || !fs.statSync(src).isFile()) return;
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeSynced(path.join(dir, rel), fs.readFileSync(src));
    copied.push(rel);
  };
  for (const f of SENTENCE_TRANSFORMERS_FILES) copy(f);
  let modules: unknown = null;
  try {
    modules = JSON.parse(fs.readFileSync(path.join(modelDir, 'modules.json'), 'utf8'));
  } catch {
    return copied;
  }
  if (!Array.isArray(modules)) return copied;
  for (const m of modules) {
    const sub = (m as { path?: unknown })?.path;
    if (typeof sub !== 'string' || !/^[\w.-]+$/.test(sub) || sub === '.' || sub === '..') continue;
    const src = path.join(modelDir, sub);
    if (!fs.existsSync(src) || !fs.statSync(src).isDirectory()) continue;
    for (const f of fs.readdirSync(src)) if (f.endsWith('.json')) copy(path.posix.join(sub, f));
  }
  return copied;
}

/** Exports the model dir `modelDir` to `outputDir` (see the header). */
export async function exportOnnx(modelDir: string, outputDir: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const o = checkExportOptions(opts);
  recoverDir(modelDir);
  if (!fs.existsSync(modelDir) || !fs.statSync(modelDir).isDirectory()) throw new UserError(`${modelDir}: model dir does not exist`);
  const cfg = readConfig(modelDir);
  const w = readModelWeights(modelDir);
  checkWeights(cfg, w.encoder, w.heads, modelDir);
  const hasTokenizer = ['tokenizer.json', 'vocab.txt'].some((f) => fs.existsSync(path.join(modelDir, f)));
  const tok = hasTokenizer ? loadTokenizer(modelDir) : null;
  if (tok && tok.vocabSize > cfg.vocabSize) throw new UserError(`${modelDir}: tokenizer has ${tok.vocabSize} tokens but the model's vocab_size is ${cfg.vocabSize}`);
  const out = path.resolve(outputDir);
  checkOutput(modelDir, out);

  const inputs = ['input_ids', 'attention_mask', ...(takesTokenTypes(cfg) ? ['token_type_ids'] : [])];
  const outputs = ['last_hidden_state', 'dense_vecs', ...(w.heads.size ? ['sparse_weights', 'colbert_vecs'] : [])];
  const files: ExportedFile[] = [];
  const written: string[] = [];
  await writeDirAtomic(out, (tmp) => {
    fs.mkdirSync(path.join(tmp, 'onnx'));
    const external: Record<string, number> = {};
    for (const dtype of o.dtypes) {
      const rel = ONNX_FILES[dtype];
      const graph = buildEncoderGraph(cfg, w.encoder, w.heads, { dtype, opset: o.opset });
      const r = writeOnnx(path.join(tmp, rel), graph, {
        opset: o.opset,
        externalData: o.externalData,
        docString: `M3 encoder (${cfg.family}, ${dtype}) exported by m3-train from ${path.basename(path.resolve(modelDir))}: outputs ${outputs.join(', ')}`,
        metadata: { 'm3.family': cfg.family, 'm3.dtype': dtype, 'm3.outputs': outputs.join(','), 'm3.pad_token_id': String(cfg.padTokenId) },
      });
      const dataRel = r.dataFile ? path.posix.join('onnx', r.dataFile) : null;
      if (r.dataFile) external[path.basename(rel)] = 1;
      files.push({ dtype, file: rel, bytes: r.bytes, dataFile: dataRel, dataBytes: r.dataBytes });
      written.push(rel, ...(dataRel ? [dataRel] : []));
    }
    const config: Record<string, unknown> = { ...cfg.raw };
    if (Object.keys(external).length) {
      const tjs = (config['transformers.js_config'] ?? {}) as Record<string, unknown>;
      config['transformers.js_config'] = { ...tjs, use_external_data_format: external };
    }
    writeJson(path.join(tmp, 'config.json'), config);
    written.push('config.json');
    if (tok) {
      writeTokenizer(tok, cfg, tmp);
      written.push(...['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'].filter((f) => fs.existsSync(path.join(tmp, f))));
    }
    written.push(...copySentenceTransformers(modelDir, tmp));
    const record = readTrainingRecord(modelDir);
    if (record) writeJson(path.join(tmp, RECORD_FILE), record);
    const card = modelCard(record ?? { base_model: hubIdOf(modelDir), license: null, datasets: [], stages: [] },
      { config: cfg.raw, colbertDim: w.heads.get('colbert_linear.weight')?.shape[0] ?? null }, { files: files.map((f) => f.file) });
    writeSynced(path.join(tmp, CARD_FILE), Buffer.from(card, 'utf8'));
    written.push(...(record ? [RECORD_FILE] : []), CARD_FILE);
  });
  return { output: out, family: cfg.family, opset: o.opset, inputs, outputs, files, written };
}
