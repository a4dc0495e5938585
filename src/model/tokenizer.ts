/**
 * Tokenizers for training and inference. The sub-word model (WordPiece, Unigram, BPE) runs through
 * @huggingface/tokenizers with tokenizer.json semantics; special tokens, truncation, padding and batching
 * are ours, so every caller sees the same [CLS] … [SEP] layout whatever the file's post-processor says.
 * A folder with only vocab.txt becomes a BERT WordPiece tokenizer built from the same definition a
 * tokenizer.json would hold, so both routes give the same ids and the same fingerprint.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { UserError } from '../util/errors';
import { writeFileAtomic } from '../util/fsx';
import { TokenBatch } from '../util/token-batch';

export interface Tokenizer {
  /** sha256 hex over the canonical definition (vocab, model settings, normalisation, added tokens). */
  readonly fingerprint: string;
  readonly vocabSize: number;
  /** -1 where the tokenizer has no such token (e.g. T5 has no [CLS] and no [MASK]). */
  readonly clsId: number;
  readonly sepId: number;
  readonly padId: number;
  readonly unkId: number;
  readonly maskId: number;
  /** Every special token id (cls, sep, pad, unk, mask and added special tokens), ascending. */
  readonly specialIds: number[];
  /** '##' continuation pieces vs '▁' word starts (whole-word masking needs this). */
  readonly wordStyle: 'wordpiece' | 'sentencepiece';
  /** Ids without special tokens. */
  tokenize(text: string): number[];
  /** [CLS] ids [SEP], content truncated so the total is ≤ maxLength. */
  encode(text: string, maxLength: number): number[];
  /** Right-padded to the longest sequence (rounded up to padToMultipleOf), row-major [batch, length]. */
  encodeBatch(texts: string[], opts: { maxLength: number; padToMultipleOf?: number }): TokenBatch;
  idToToken(id: number): string;
  /** Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json (and vocab.txt for WordPiece). */
  save(dir: string): void;
}


type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface AddedTokenDef {
  id: number;
  content: string;
  special: boolean;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
}

const SPECIAL_NAMES = {
  cls: ['[CLS]', '<s>'],
  sep: ['[SEP]', '</s>'],
  pad: ['[PAD]', '<pad>'],
  unk: ['[UNK]', '<unk>'],
  mask: ['[MASK]', '<mask>'],
} as const;
type SpecialRole = keyof typeof SPECIAL_NAMES;
const ROLES = Object.keys(SPECIAL_NAMES) as SpecialRole[];

/** Config keys the library reads that change tokenization; they are part of the fingerprint. */
const CONFIG_NORMALISATION_KEYS = ['remove_space', 'do_lowercase_and_remove_accent'] as const;

/**
 * Loads the tokenizer of a model dir or tokenizer-only folder: tokenizer.json when present, else
 * vocab.txt as BERT WordPiece (lowercasing from tokenizer_config.json `do_lower_case`, default true).
 */
export function loadTokenizer(dir: string): Tokenizer {
  const tjPath = path.join(dir, 'tokenizer.json');
  const vocabPath = path.join(dir, 'vocab.txt');
  if (!isDir(dir)) throw new UserError(`${dir}: tokenizer dir not found`);
  const config = readJsonIfExists(path.join(dir, 'tokenizer_config.json')) ?? {};
  let def: Json;
  if (fs.existsSync(tjPath)) {
    def = readJson(tjPath);
    if (!def || typeof def !== 'object' || !def.model || typeof def.model !== 'object') {
      throw new UserError(`${tjPath}: not a tokenizer definition (no "model" object)`);
    }
    def.model.type = inferModelType(def.model, tjPath);
  } else if (fs.existsSync(vocabPath)) {
    let text: string;
    try {
      text = fs.readFileSync(vocabPath, 'utf8');
    } catch (e) {
      throw new UserError(`${vocabPath}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    def = wordPieceDefinition(text, config.do_lower_case !== false, vocabPath);
  } else {
    throw new UserError(`${dir}: no tokenizer files (tokenizer.json or vocab.txt)`);
  }
  return buildTokenizer(def, config, dir);
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function readJson(file: string): Json {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

function readJsonIfExists(file: string): Json | null {
  return fs.existsSync(file) ? readJson(file) : null;
}

/** Old-style tokenizer.json files have no model.type: infer it the way the tokenizers library does. */
function inferModelType(model: Json, file: string): string {
  if (typeof model.type === 'string') return model.type;
  if (Array.isArray(model.vocab)) return 'Unigram';
  if (model.vocab && typeof model.vocab === 'object') {
    if ('merges' in model) return 'BPE';
    if ('continuing_subword_prefix' in model) return 'WordPiece';
  }
  throw new UserError(`${file}: cannot tell the tokenizer model type (no "type", and the vocab is neither a list nor WordPiece/BPE)`);
}

/** The tokenizer.json a BERT WordPiece vocab.txt stands for (what transformers' converter writes). */
function wordPieceDefinition(text: string, lowercase: boolean, file: string): Json {
  const lines = text.split(/\r?\n/);
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  if (lines.length === 0) throw new UserError(`${file}: empty vocabulary`);
  const vocab: Record<string, number> = {};
  lines.forEach((tok, i) => {
    if (!(tok in vocab)) vocab[tok] = i;
  });
  const unk = '[UNK]' in vocab ? '[UNK]' : null;
  if (!unk) throw new UserError(`${file}: no [UNK] token in the vocabulary`);
  const added: AddedTokenDef[] = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    .filter((t) => t in vocab)
    .map((t) => ({ id: vocab[t], content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }))
    .sort((a, b) => a.id - b.id);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: unk, continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}

function normAddedToken(t: Json): AddedTokenDef {
  return {
    id: t.id,
    content: t.content,
    special: !!t.special,
    single_word: !!t.single_word,
    lstrip: !!t.lstrip,
    rstrip: !!t.rstrip,
    normalized: t.normalized ?? !t.special,
  };
}

/** Vocabulary as an id-indexed token list (holes stay undefined), added tokens included. */
function tokenList(def: Json): string[] {
  const list: string[] = [];
  const vocab = def.model.vocab;
  if (Array.isArray(vocab)) vocab.forEach((entry: [string, number], i: number) => (list[i] = entry[0]));
  else for (const [tok, id] of Object.entries(vocab as Record<string, number>)) list[id] = tok;
  for (const t of def.added_tokens ?? []) list[t.id] = t.content;
  return list;
}

/** JSON with object keys sorted, so equal definitions hash equally whatever their key order. */
function canonicalJson(v: unknown): string {
  if (v === undefined) return 'null';
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(v as Json).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Json)[k])}`).join(',')}}`;
}

function fingerprintOf(def: Json, config: Json): string {
  const { vocab, ...modelRest } = def.model;
  // The vocab goes in id order as a list (Unigram keeps its scores): dict key order must not matter.
  const vocabCanon = Array.isArray(vocab) ? vocab : tokenList({ model: { vocab }, added_tokens: [] });
  const canon = {
    model: { ...modelRest, vocab: vocabCanon },
    normalizer: def.normalizer ?? null,
    pre_tokenizer: def.pre_tokenizer ?? null,
    added_tokens: (def.added_tokens ?? []).map(normAddedToken).sort((a: AddedTokenDef, b: AddedTokenDef) => a.id - b.id),
    config: Object.fromEntries(CONFIG_NORMALISATION_KEYS.map((k) => [k, config[k] ?? null])),
  };
  const h = createHash('sha256');
  h.update(canonicalJson(canon.model.vocab));
  h.update('\0');
  h.update(canonicalJson({ ...canon, model: { ...canon.model, vocab: null } }));
  return h.digest('hex');
}

/** A config token entry is either a string or an AddedToken-like {content}. */
function configTokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content;
  return null;
}

function buildTokenizer(def: Json, config: Json, source: string): Tokenizer {
  const added = normaliseDefinition(def);
  const hf = libraryTokenizer(def, config, source);
  const tokens = tokenList(def);
  const { ids, names } = findSpecialTokens(def, config, tokens, added);
  const specialSet = new Set<number>(added.filter((t) => t.special).map((t) => t.id));
  for (const role of ROLES) if (ids[role] >= 0) specialSet.add(ids[role]);
  const specialIds = [...specialSet].sort((a, b) => a - b);
  const vocabSize = tokens.length;
  const wordStyle: Tokenizer['wordStyle'] = def.model.type === 'WordPiece' ? 'wordpiece' : 'sentencepiece';
  const fingerprint = fingerprintOf(def, config);
  const padId = ids.pad >= 0 ? ids.pad : 0;
  const nSpecial = (ids.cls >= 0 ? 1 : 0) + (ids.sep >= 0 ? 1 : 0);

  const tokenize = (text: string): number[] => hf.encode(text, { add_special_tokens: false }).ids;

  const encode = (text: string, maxLength: number): number[] => {
    if (!(maxLength > nSpecial)) throw new RangeError(`maxLength ${maxLength} leaves no room for content (${nSpecial} special tokens)`);
    const body = tokenize(text);
    const keep = Math.min(body.length, maxLength - nSpecial);
    const out: number[] = [];
    if (ids.cls >= 0) out.push(ids.cls);
    for (let i = 0; i < keep; i++) out.push(body[i]);
    if (ids.sep >= 0) out.push(ids.sep);
    return out;
  };

  const encodeBatch = (texts: string[], opts: { maxLength: number; padToMultipleOf?: number }): TokenBatch => {
    const seqs = texts.map((t) => encode(t, opts.maxLength));
    return padBatch(seqs, padId, opts.padToMultipleOf);
  };

  const idToToken = (id: number): string => {
    const t = Number.isInteger(id) ? tokens[id] : undefined;
    if (t === undefined) throw new RangeError(`token id ${id} is not in the vocabulary (size ${vocabSize})`);
    return t;
  };

  return {
    fingerprint,
    vocabSize,
    clsId: ids.cls,
    sepId: ids.sep,
    padId,
    unkId: ids.unk,
    maskId: ids.mask,
    specialIds,
    wordStyle,
    tokenize,
    encode,
    encodeBatch,
    idToToken,
    save: (dir: string) => saveTokenizer(dir, def, config, names, tokens),
  };
}

/**
 * Puts `def` in the one shape the library, the fingerprint and save() all see: added tokens with every
 * flag explicit, and the optional pipeline stages present (null when absent). Returns the added tokens.
 */
function normaliseDefinition(def: Json): AddedTokenDef[] {
  const added: AddedTokenDef[] = (def.added_tokens ?? []).map(normAddedToken);
  def.added_tokens = added;
  for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) if (!(key in def)) def[key] = null;
  return added;
}

/**
 * The @huggingface/tokenizers instance that runs the sub-word model. Only the settings that change
 * tokenization go to the library: token ids in tokenizer_config.json (added_tokens_decoder) are
 * sometimes wrong, and tokenizer.json is the authority.
 */
function libraryTokenizer(def: Json, config: Json, source: string): HfTokenizer {
  const libConfig: Json = {};
  for (const k of CONFIG_NORMALISATION_KEYS) if (config[k] !== undefined) libConfig[k] = config[k];
  try {
    return new HfTokenizer(def, libConfig);
  } catch (e) {
    throw new UserError(`${source}: cannot build the tokenizer (${(e as Error).message})`);
  }
}

interface SpecialTokens {
  ids: Record<SpecialRole, number>;
  names: Record<SpecialRole, string | null>;
}

/**
 * Each special role's token and id (-1 when the vocabulary has none): the name tokenizer_config.json
 * gives first, then the BERT and sentencepiece spellings, and for unk the model's own unk_token/unk_id.
 */
function findSpecialTokens(def: Json, config: Json, tokens: string[], added: AddedTokenDef[]): SpecialTokens {
  const idOf = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (t !== undefined && !idOf.has(t)) idOf.set(t, i);
  });
  for (const t of added) idOf.set(t.content, t.id);
  const ids = {} as Record<SpecialRole, number>;
  const names = {} as Record<SpecialRole, string | null>;
  for (const role of ROLES) {
    const fromConfig = configTokenString(config[`${role}_token`]);
    const candidates = [...(fromConfig ? [fromConfig] : []), ...SPECIAL_NAMES[role]];
    let found: string | null = null;
    for (const c of candidates) {
      if (idOf.has(c)) {
        found = c;
        break;
      }
    }
    if (!found && role === 'unk') {
      const u = def.model.unk_token ?? (typeof def.model.unk_id === 'number' ? tokens[def.model.unk_id] : undefined);
      if (typeof u === 'string' && idOf.has(u)) found = u;
    }
    names[role] = found;
    ids[role] = found === null ? -1 : idOf.get(found)!;
  }
  return { ids, names };
}

/**
 * Writes the HF files transformers and FlagEmbedding load: tokenizer.json as normalised, the config
 * without added_tokens_decoder (its ids can be wrong) plus the special tokens we resolved, and vocab.txt
 * for WordPiece (holes become [unused_i] so line numbers stay ids).
 */
function saveTokenizer(dir: string, def: Json, config: Json, names: Record<SpecialRole, string | null>, tokens: string[]): void {
  fs.mkdirSync(dir, { recursive: true });
  writeFileAtomic(path.join(dir, 'tokenizer.json'), JSON.stringify(def, null, 2) + '\n');
  const specialMap: Json = {};
  for (const role of ROLES) if (names[role] !== null) specialMap[`${role}_token`] = names[role];
  const { added_tokens_decoder: _dropped, ...restConfig } = config;
  void _dropped;
  const outConfig: Json = { ...restConfig, ...specialMap };
  if (def.model.type === 'WordPiece' && def.normalizer?.type === 'BertNormalizer') outConfig.do_lower_case = !!def.normalizer.lowercase;
  writeFileAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify(outConfig, null, 2) + '\n');
  writeFileAtomic(path.join(dir, 'special_tokens_map.json'), JSON.stringify(specialMap, null, 2) + '\n');
  if (def.model.type === 'WordPiece') {
    const lines: string[] = [];
    for (let i = 0; i < tokens.length; i++) lines.push(tokens[i] ?? `[unused_${i}]`);
    writeFileAtomic(path.join(dir, 'vocab.txt'), lines.join('\n') + '\n');
  }
}

/** Right-pads id sequences to the longest (rounded up to a multiple), with a 0/1 attention mask. */
export function padBatch(seqs: ArrayLike<number>[], padId: number, padToMultipleOf?: number): TokenBatch {
  let length = 0;
  for (const s of seqs) length = Math.max(length, s.length);
  if (padToMultipleOf && padToMultipleOf > 1) length = Math.ceil(length / padToMultipleOf) * padToMultipleOf;
  const batch = seqs.length;
  const inputIds = new Int32Array(batch * length).fill(padId);
  const attentionMask = new Int32Array(batch * length);
  seqs.forEach((s, b) => {
    const off = b * length;
    for (let i = 0; i < s.length; i++) {
      inputIds[off + i] = s[i];
      attentionMask[off + i] = 1;
    }
  });
  return { inputIds, attentionMask, batch, length };
}
