/**
 * An M3 model: one encoder plus the optional `colbert_linear` / `sparse_linear` heads, its config and
 * tokenizer. Parameters live in one map under their checkpoint names, so loading, saving, optimizers and
 * freezing rules (fix_encoder, fix_position_embedding) all speak the names users see in their files.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../util/errors';
import { recoverDir } from '../util/fsx';
import { CARD_FILE, hubIdOf, modelCard, readTrainingRecord, RECORD_FILE, TrainingRecord } from './card';
import { EncoderConfig, parseConfig, readConfig } from './config';
import { resolveModelDir } from './hub';
import { CONFIG_OVERRIDES, ConfigOverrides } from './schema';
import { Params } from './encoder';
import { loadTokenizer, Tokenizer } from './tokenizer';
import { readModelWeights, writeModelDir } from './weights/modeldir';
import { TensorMap } from './weights/types';
import { fromHost, ownedVariable, toHost } from './variables';
import { tfSeed } from '../util/rng';

export const HEAD_NAMES = ['colbert_linear.weight', 'colbert_linear.bias', 'sparse_linear.weight', 'sparse_linear.bias'];

export interface M3Model {
  config: EncoderConfig;
  params: Params;
  tokenizer: Tokenizer | null;
  /** Where it was loaded from (for messages). */
  source: string;
}

export const hasHeads = (m: M3Model): boolean => HEAD_NAMES.every((n) => m.params.has(n));
export const colbertDim = (m: M3Model): number | null => m.params.get('colbert_linear.weight')?.shape[0] ?? null;


export interface LoadOptions {
  /** A tokenizer dir overriding the model dir's own tokenizer files. */
  tokenizer?: string;
  /** Fail when no tokenizer is found (text input needs one; `input_ids` input does not). */
  requireTokenizer?: boolean;
  /** Also keep these float tensors outside the encoder, under their stored names, frozen (a reranker's `classifier.*`). */
  keepExtra?: (name: string) => boolean;
}

/** Loads an HF / FlagEmbedding / m3 model dir. Heads are optional; half-present heads are an error. */
export function loadModel(dir: string, opts: LoadOptions = {}): M3Model {
  recoverDir(dir); // a crash while this dir was being replaced left its old version aside
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`${dir}: model dir does not exist`);
  const config = readConfig(dir);
  const w = readModelWeights(dir);
  const params: Params = new Map();
  for (const [name, t] of w.encoder) params.set(name, ownedVariable(() => fromHost(t), !name.startsWith('pooler.')));
  const heads = [...w.heads.keys()];
  if (heads.length > 0 && heads.length < HEAD_NAMES.length) {
    throw new UserError(`${dir}: incomplete M3 heads (found ${heads.join(', ')}; need both colbert_linear and sparse_linear, as .pt or .safetensors)`);
  }
  for (const [name, t] of w.heads) params.set(name, ownedVariable(() => fromHost(t)));
  for (const [name, t] of w.extra) if (t.dtype === 'float32' && opts.keepExtra?.(name)) params.set(name, ownedVariable(() => fromHost(t), false));
  checkShapes(config, params, dir);
  let tokenizer: Tokenizer | null = null;
  const tokDir = opts.tokenizer ?? dir;
  if (opts.tokenizer || hasTokenizerFiles(dir)) tokenizer = loadTokenizer(tokDir);
  else if (opts.requireTokenizer) throw new UserError(`${dir}: no tokenizer files (tokenizer.json or vocab.txt); pass --tokenizer DIR`);
  if (tokenizer && tokenizer.vocabSize > config.vocabSize) {
    throw new UserError(`${tokDir}: tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocabSize}`);
  }
  return { config, params, tokenizer, source: dir };
}

/**
 * loadModel from a model dir or a Hub id (`org/name`, `org/name@revision`: fetched into the Hugging Face cache
 * when needed, see ./hub.ts); `opts.tokenizer` may be either too.
 */
export async function openModel(spec: string, opts: LoadOptions = {}): Promise<M3Model> {
  const dir = await resolveModelDir(spec);
  const tokenizer = opts.tokenizer === undefined ? undefined : await resolveModelDir(opts.tokenizer, { files: 'tokenizer' });
  return loadModel(dir, { ...opts, tokenizer });
}

export function hasTokenizerFiles(dir: string): boolean {
  return ['tokenizer.json', 'vocab.txt'].some((f) => fs.existsSync(path.join(dir, f)));
}

function checkShapes(cfg: EncoderConfig, params: Params, dir: string): void {
  const want: Record<string, number[]> = {
    'embeddings.word_embeddings.weight': [cfg.vocabSize, cfg.hidden],
    'embeddings.position_embeddings.weight': [cfg.maxPositions, cfg.hidden],
  };
  for (let i = 0; i < cfg.layers; i++) {
    const p = `encoder.layer.${i}.`;
    want[p + 'attention.self.query.weight'] = [cfg.hidden, cfg.hidden];
    want[p + 'intermediate.dense.weight'] = [cfg.intermediate, cfg.hidden];
    want[p + 'output.dense.weight'] = [cfg.hidden, cfg.intermediate];
  }
  for (const [name, shape] of Object.entries(want)) {
    const t = params.get(name);
    if (!t) throw new UserError(`${dir}: weights lack '${name}'`);
    if (t.shape.join() !== shape.join()) throw new UserError(`${dir}: '${name}' has shape [${t.shape}] but config.json implies [${shape}]`);
  }
  const cw = params.get('colbert_linear.weight');
  if (cw && cw.shape[1] !== cfg.hidden) throw new UserError(`${dir}: colbert_linear.weight has shape [${cw.shape}], its input must be hidden_size ${cfg.hidden}`);
  const sw = params.get('sparse_linear.weight');
  if (sw && (sw.shape[0] !== 1 || sw.shape[1] !== cfg.hidden)) throw new UserError(`${dir}: sparse_linear.weight has shape [${sw.shape}], want [1, ${cfg.hidden}]`);
}

/** Host copies of the parameters, split as the model dir stores them. */
export function exportWeights(m: M3Model): { encoder: TensorMap; heads: TensorMap } {
  const encoder: TensorMap = new Map();
  const heads: TensorMap = new Map();
  for (const [name, t] of m.params) {
    (HEAD_NAMES.includes(name) ? heads : encoder).set(name, toHost(t));
  }
  return { encoder, heads };
}

/**
 * Writes the model dir (HF + FlagEmbedding + sentence-transformers layout), atomically, with its model card
 * (README.md, from m3_training.json, both written beside the weights): `record` says
 * how it was trained (a stage passes it); without one, the record of the dir it was loaded from carries over.
 */
export async function saveModel(m: M3Model, dir: string, extraFiles?: Record<string, Uint8Array | string>, record?: TrainingRecord): Promise<void> {
  const { encoder, heads } = exportWeights(m);
  const rec = record ?? readTrainingRecord(m.source) ?? { base_model: hubIdOf(m.source), license: null, datasets: [], stages: [] };
  const card = { [CARD_FILE]: modelCard(rec, { config: m.config.raw, colbertDim: colbertDim(m) }), [RECORD_FILE]: JSON.stringify(rec, null, 2) + '\n' };
  await writeModelDir(dir, {
    config: m.config.raw,
    encoder,
    heads: heads.size ? heads : undefined,
    tokenizer: m.tokenizer ?? undefined,
    normalize: true,
    extraFiles: { ...card, ...extraFiles },
  });
}

export function disposeModel(m: M3Model): void {
  for (const t of m.params.values()) t.dispose();
  m.params.clear();
}

/** Draws a weight tensor ~ N(0, std²) of `shape` (initModel's default: TF.js's seeded randomNormal). */
export type NormalSampler = (shape: number[], std: number) => tf.Tensor;

/**
 * A freshly initialised model (training from scratch): weights ~ N(0, initializer_range), biases 0,
 * LayerNorm 1/0, as HF's `_init_weights`; heads sized hidden → colbertDim and hidden → 1. `sample` replaces
 * the weights' sampler (benchmarks draw faster, from a table).
 */
export function initModel(config: EncoderConfig, opts: { seed: number; heads?: boolean; colbertDim?: number; tokenizer?: Tokenizer | null; sample?: NormalSampler }): M3Model {
  const std = Number(config.raw.initializer_range ?? 0.02);
  const d = config.hidden;
  let seed = opts.seed;
  const sample = opts.sample ?? ((shape: number[], s: number) => tf.randomNormal(shape, 0, s, 'float32', tfSeed(seed++)));
  const normal = (shape: number[]) => ownedVariable(() => sample(shape, std));
  const zeros = (n: number) => ownedVariable(() => tf.zeros([n]));
  const ones = (n: number) => ownedVariable(() => tf.ones([n]));
  const params: Params = new Map();
  const dense = (p: string, out: number, inp: number) => {
    params.set(p + '.weight', normal([out, inp]));
    params.set(p + '.bias', zeros(out));
  };
  const ln = (p: string) => {
    params.set(p + '.weight', ones(d));
    params.set(p + '.bias', zeros(d));
  };
  params.set('embeddings.word_embeddings.weight', normal([config.vocabSize, d]));
  params.set('embeddings.position_embeddings.weight', normal([config.maxPositions, d]));
  params.set('embeddings.token_type_embeddings.weight', normal([config.typeVocabSize, d]));
  ln('embeddings.LayerNorm');
  for (let i = 0; i < config.layers; i++) {
    const p = `encoder.layer.${i}.`;
    for (const m of ['query', 'key', 'value']) dense(p + 'attention.self.' + m, d, d);
    dense(p + 'attention.output.dense', d, d);
    ln(p + 'attention.output.LayerNorm');
    dense(p + 'intermediate.dense', config.intermediate, d);
    dense(p + 'output.dense', d, config.intermediate);
    ln(p + 'output.LayerNorm');
  }
  if (opts.heads) {
    dense('colbert_linear', opts.colbertDim && opts.colbertDim > 0 ? opts.colbertDim : d, d);
    dense('sparse_linear', 1, d);
  }
  return { config, params, tokenizer: opts.tokenizer ?? null, source: '(initialised)' };
}

/**
 * Adds fresh M3 heads to a model without them (a stage-2 model entering unified fine-tuning), initialised
 * as torch.nn.Linear does: U(−1/√in, 1/√in) for weight and bias, which is what FlagEmbedding gets when a
 * dir has no colbert_linear.pt / sparse_linear.pt.
 */
export function addHeads(m: M3Model, colbertDimension: number, seed: number): void {
  if (hasHeads(m)) return;
  const d = m.config.hidden;
  const out = colbertDimension > 0 ? colbertDimension : d;
  const bound = 1 / Math.sqrt(d);
  const u = (shape: number[], s: number) => ownedVariable(() => tf.randomUniform(shape, -bound, bound, 'float32', tfSeed(s)));
  m.params.set('colbert_linear.weight', u([out, d], seed));
  m.params.set('colbert_linear.bias', u([out], seed + 1));
  m.params.set('sparse_linear.weight', u([1, d], seed + 2));
  m.params.set('sparse_linear.bias', u([1], seed + 3));
}

/** Freezing rules of FlagEmbedding: fix_encoder trains only the heads; fix_position_embedding freezes positions. */
export function applyFreezing(m: M3Model, o: { fixEncoder?: boolean; fixPositionEmbedding?: boolean }): void {
  for (const [name, v] of m.params as Map<string, tf.Variable>) {
    const head = name.includes('colbert_linear') || name.includes('sparse_linear');
    const frozen = name.startsWith('pooler.') || (o.fixEncoder && !head) || (o.fixPositionEmbedding && name.includes('position_embeddings'));
    v.trainable = !frozen;
  }
}

/** The config with a stage's config.json overrides applied (`raw` records them, so the saved model does). */
export function withOverrides(cfg: EncoderConfig, o: ConfigOverrides, where: string): EncoderConfig {
  const raw = { ...cfg.raw };
  for (const k of CONFIG_OVERRIDES) if (o[k] !== undefined) raw[k] = o[k];
  return parseConfig(raw, where);
}

/**
 * A stage's starting model: a model dir (`init`), or a fresh one from an HF config.json plus a tokenizer;
 * either way with the stage's config.json overrides. Dirs are local (Hub ids: resolveModelSources first).
 */
export function loadOrInitModel(o: { init?: string; config?: string; tokenizer?: string } & ConfigOverrides, seed: number, where: string): M3Model {
  if (o.init) {
    const m = loadModel(o.init, { tokenizer: o.tokenizer, requireTokenizer: true });
    m.config = withOverrides(m.config, o, `${where}: model`);
    return m;
  }
  if (!o.config) throw new UserError(`${where}: key 'model.init' or 'model.config' is required (a model dir to start from, or an HF config.json to start from scratch)`);
  if (!o.tokenizer) throw new UserError(`${where}: key 'model.tokenizer' is required with 'model.config' (a fresh model needs a tokenizer)`);
  const config = withOverrides(readConfig(path.dirname(o.config), path.basename(o.config)), o, `${where}: model`);
  const tokenizer = loadTokenizer(o.tokenizer);
  if (tokenizer.vocabSize > config.vocabSize) throw new UserError(`${o.tokenizer}: tokenizer has ${tokenizer.vocabSize} tokens but ${o.config} says vocab_size ${config.vocabSize}`);
  const m = initModel(config, { seed, tokenizer });
  m.source = `${o.config} (fresh)`;
  return m;
}

/**
 * Grows an absolute position table (stage 1 of the paper: XLM-R 514 → 8194 rows) by repeating the trained
 * rows after the reserved ones (XLM-R reserves pad_id + 1 rows), and updates the config.
 */
export function extendPositions(cfg: EncoderConfig, params: Params, newMax: number): void {
  const name = 'embeddings.position_embeddings.weight';
  const old = params.get(name) as tf.Variable;
  const [rows, d] = old.shape;
  if (newMax <= rows) return;
  const reserved = cfg.family === 'xlm-roberta' ? cfg.padTokenId + 1 : 0;
  const src = old.dataSync();
  const out = new Float32Array(newMax * d);
  out.set(src);
  for (let r = rows; r < newMax; r++) {
    const from = reserved + ((r - reserved) % (rows - reserved));
    out.set(src.subarray(from * d, (from + 1) * d), r * d);
  }
  const grown = ownedVariable(() => tf.tensor2d(out, [newMax, d]), old.trainable);
  old.dispose();
  params.set(name, grown);
  cfg.maxPositions = newMax;
  cfg.raw.max_position_embeddings = newMax;
}
