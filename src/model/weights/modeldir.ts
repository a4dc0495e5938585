/**
 * Model dirs as Hugging Face, FlagEmbedding and sentence-transformers lay them out.
 * Read: encoder weights from model.safetensors | model.safetensors.index.json (sharded) | pytorch_model.bin |
 * pytorch_model.bin.index.json, M3 heads from colbert_linear.pt / sparse_linear.pt (torch zip) or their
 * .safetensors twins. Write: the dir FlagEmbedding and sentence-transformers load unchanged (config.json,
 * F32 model.safetensors, torch-format heads, tokenizer, modules.json + 1_Pooling + Normalize), built in a temp
 * dir and renamed into place, so an existing dir stays intact until the new one is complete.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../../util/errors';
import { writeDirAtomic } from '../../util/fsx';
import { writeAll } from './fileio';
import { readSafetensors, writeSafetensorsFd } from './safetensors';
import { readTorchStateDict, torchZipEntries } from './torch';
import { HostTensor, TensorMap } from './types';
import { writeZip } from './zip';

export interface ModelWeights {
  /** float32 `embeddings.*` / `encoder.*` / `pooler.*`, architecture prefix ("bert.", "roberta.", ...) stripped. */
  encoder: TensorMap;
  /** `colbert_linear.weight|bias`, `sparse_linear.weight|bias` (PyTorch Linear layout); empty when absent. */
  heads: TensorMap;
  /** Everything else under its stored name (lm_head.*, cls.predictions.*, int buffers such as position_ids). */
  extra: TensorMap;
  /** The weight files read, relative to the dir. */
  files: string[];
}

export const HEAD_FILES = ['colbert_linear', 'sparse_linear'] as const;
/** The sentence-transformers files at the root of a model dir (module folders such as 1_Pooling/ aside). */
export const SENTENCE_TRANSFORMERS_FILES = ['modules.json', 'sentence_bert_config.json', 'config_sentence_transformers.json'];
const ARCH_PREFIXES = ['bert.', 'roberta.', 'xlm_roberta.', 'model.'];
const ENCODER_ROOTS = ['embeddings.', 'encoder.', 'pooler.'];
/** Weight files in the order they are looked for (the first present is read). */
export const WEIGHT_FILES = ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json'];

const isFile = (p: string) => fs.existsSync(p) && fs.statSync(p).isFile();

/** Reads a sharded checkpoint through its index ({"weight_map": {tensor: shard file}}). */
function readSharded(dir: string, indexName: string, read: (file: string, want: (n: string) => boolean) => TensorMap, files: string[]): TensorMap {
  const index = path.join(dir, indexName);
  let map: unknown;
  try {
    map = JSON.parse(fs.readFileSync(index, 'utf8'))?.weight_map;
  } catch (e) {
    throw new UserError(`${index}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (!map || typeof map !== 'object' || Array.isArray(map)) throw new UserError(`${index}: no "weight_map" object`);
  const byShard = new Map<string, Set<string>>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard !== path.basename(shard) || shard === '.' || shard === '..' || shard === '') {
      throw new UserError(`${index}: shard ${JSON.stringify(shard)} for '${name}' must be a file name in the same dir`);
    }
    if (!byShard.has(shard)) byShard.set(shard, new Set());
    (byShard.get(shard) as Set<string>).add(name);
  }
  const found = new Map<string, HostTensor>();
  for (const [shard, names] of byShard) {
    const file = path.join(dir, shard);
    if (!isFile(file)) throw new UserError(`${index}: shard ${shard} is missing`);
    files.push(shard);
    for (const [n, t] of read(file, (x) => names.has(x))) if (names.has(n)) found.set(n, t);
    for (const n of names) if (!found.has(n)) throw new UserError(`${index}: '${n}' is not in ${shard}`);
  }
  const out: TensorMap = new Map();
  for (const name of Object.keys(map as object)) out.set(name, found.get(name) as HostTensor);
  return out;
}

const readTorchFiltered = (file: string, want: (n: string) => boolean): TensorMap => {
  const all = readTorchStateDict(file);
  for (const n of [...all.keys()]) if (!want(n)) all.delete(n);
  return all;
};

/** Reads a model dir's weights, split into encoder / heads / extra. */
export function readModelWeights(dir: string): ModelWeights {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`${dir}: model dir does not exist`);
  const files: string[] = [];
  const which = WEIGHT_FILES.find((f) => isFile(path.join(dir, f)));
  if (!which) throw new UserError(`${dir}: no model weights (expected ${WEIGHT_FILES.join(', ')})`);
  let all: TensorMap;
  if (which === 'model.safetensors') all = readSafetensors(path.join(dir, which));
  else if (which === 'pytorch_model.bin') all = readTorchStateDict(path.join(dir, which));
  else all = readSharded(dir, which, which.startsWith('model.') ? readSafetensors : readTorchFiltered, files);
  files.unshift(which);

  const encoder: TensorMap = new Map();
  const heads: TensorMap = new Map();
  const extra: TensorMap = new Map();
  const headSource = new Map<string, string>();
  for (const [name, t] of all) {
    if (HEAD_FILES.some((h) => name === `${h}.weight` || name === `${h}.bias`)) {
      heads.set(name, t);
      headSource.set(name, which);
      continue;
    }
    const prefix = ARCH_PREFIXES.find((p) => name.startsWith(p) && ENCODER_ROOTS.some((r) => name.startsWith(r, p.length)));
    const local = prefix ? name.slice(prefix.length) : name;
    if (t.dtype === 'float32' && ENCODER_ROOTS.some((r) => local.startsWith(r))) {
      if (encoder.has(local)) throw new UserError(`${dir}: '${local}' appears twice in ${which} (with and without an architecture prefix)`);
      encoder.set(local, t);
    } else {
      extra.set(name, t);
    }
  }

  for (const h of HEAD_FILES) {
    const pt = path.join(dir, `${h}.pt`);
    const st = path.join(dir, `${h}.safetensors`);
    const file = isFile(pt) ? pt : isFile(st) ? st : null;
    if (!file) continue;
    files.push(path.basename(file));
    const m = file === pt ? readTorchStateDict(file) : readSafetensors(file);
    for (const [k, t] of m) {
      const local = k.startsWith(`${h}.`) ? k.slice(h.length + 1) : k;
      if (local !== 'weight' && local !== 'bias') throw new UserError(`${file}: unexpected tensor '${k}' (a Linear head holds weight and bias)`);
      const name = `${h}.${local}`;
      if (heads.has(name)) throw new UserError(`${dir}: '${name}' is in both ${headSource.get(name)} and ${path.basename(file)}`);
      if (t.dtype !== 'float32') throw new UserError(`${file}: '${k}' is not a float tensor`);
      heads.set(name, t);
      headSource.set(name, path.basename(file));
    }
  }
  return { encoder, heads, extra, files };
}

export interface WriteModelOptions {
  /** config.json, written as given. */
  config: Record<string, unknown>;
  /** Encoder weights under HF names (embeddings.*, encoder.*, pooler.*), written to model.safetensors as F32. */
  encoder: TensorMap;
  /** M3 heads (colbert_linear.weight|bias, sparse_linear.weight|bias), written as torch-format .pt files. */
  heads?: TensorMap;
  tokenizer?: { save(dir: string): void };
  /** Adds the sentence-transformers Normalize module (default true: M3 dense vectors are L2-normalised). */
  normalize?: boolean;
  /** More files, by path relative to the dir. */
  extraFiles?: Record<string, string | Uint8Array>;
}

function writeFileSynced(file: string, data: string | Uint8Array | ((fd: number) => void)): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'w');
  try {
    if (typeof data === 'function') data(fd);
    else writeAll(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';

/** The sentence-transformers files: Transformer → CLS Pooling (→ Normalize). */
function sentenceTransformersFiles(config: Record<string, unknown>, hidden: number, normalize: boolean): Record<string, string> {
  const modules = [
    { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
    { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
    ...(normalize ? [{ idx: 2, name: '2', path: '2_Normalize', type: 'sentence_transformers.models.Normalize' }] : []),
  ];
  const maxPos = Number(config.max_position_embeddings ?? 512);
  const roberta = /roberta|camembert/.test(String(config.model_type ?? ''));
  const maxSeq = roberta ? maxPos - Number(config.pad_token_id ?? 1) - 1 : maxPos;
  return {
    'modules.json': json(modules),
    '1_Pooling/config.json': json({
      word_embedding_dimension: hidden,
      pooling_mode_cls_token: true,
      pooling_mode_mean_tokens: false,
      pooling_mode_max_tokens: false,
      pooling_mode_mean_sqrt_len_tokens: false,
      pooling_mode_weightedmean_tokens: false,
      pooling_mode_lasttoken: false,
      include_prompt: true,
    }),
    'sentence_bert_config.json': json({ max_seq_length: maxSeq, do_lower_case: false }),
    'config_sentence_transformers.json': json({ prompts: {}, default_prompt_name: null, similarity_fn_name: 'cosine' }),
  };
}

/** Groups head tensors per head file; each head needs both weight and bias. */
function headFiles(heads: TensorMap): Map<string, TensorMap> {
  const out = new Map<string, TensorMap>();
  for (const name of heads.keys()) {
    if (!HEAD_FILES.some((h) => name === `${h}.weight` || name === `${h}.bias`)) {
      throw new UserError(`unknown head tensor '${name}' (expected colbert_linear.weight|bias, sparse_linear.weight|bias)`);
    }
  }
  for (const h of HEAD_FILES) {
    const w = heads.get(`${h}.weight`);
    const b = heads.get(`${h}.bias`);
    if (!w && !b) continue;
    if (!w || !b) throw new UserError(`head ${h} needs both ${h}.weight and ${h}.bias`);
    out.set(h, new Map([['weight', w], ['bias', b]]));
  }
  return out;
}

function checkRelative(rel: string): string {
  const norm = path.posix.normalize(rel.replace(/\\/g, '/'));
  if (!rel || path.isAbsolute(rel) || norm.startsWith('../') || norm === '..' || norm === '.') {
    throw new UserError(`extra file path ${JSON.stringify(rel)} must be relative and inside the model dir`);
  }
  return norm;
}

/** Writes a complete model dir atomically (temp dir + rename). */
export async function writeModelDir(dir: string, o: WriteModelOptions): Promise<void> {
  if (o.encoder.size === 0) throw new UserError(`${dir}: no encoder weights to write`);
  const heads = headFiles(o.heads ?? new Map());
  const word = o.encoder.get('embeddings.word_embeddings.weight');
  const hidden = Number(o.config.hidden_size ?? word?.shape[1]);
  if (!Number.isSafeInteger(hidden) || hidden <= 0) throw new UserError(`${dir}: config.json has no hidden_size`);
  const extras = Object.entries(o.extraFiles ?? {}).map(([rel, data]) => [checkRelative(rel), data] as const);
  await writeDirAtomic(dir, (tmp) => {
    writeFileSynced(path.join(tmp, 'config.json'), json(o.config));
    writeFileSynced(path.join(tmp, 'model.safetensors'), (fd) => writeSafetensorsFd(fd, o.encoder, { metadata: { format: 'pt' } }));
    for (const [h, m] of heads) writeFileSynced(path.join(tmp, `${h}.pt`), (fd) => writeZip(fd, torchZipEntries(m, h)));
    o.tokenizer?.save(tmp);
    for (const [rel, data] of Object.entries(sentenceTransformersFiles(o.config, hidden, o.normalize ?? true))) writeFileSynced(path.join(tmp, rel), data);
    for (const [rel, data] of extras) writeFileSynced(path.join(tmp, rel), data);
  });
}
