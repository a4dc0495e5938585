/**
 * Cross-encoder rerankers (bge-reranker-base / large / v2-m3): the encoder of src/model/encoder.ts plus the
 * classification head of transformers' sequence classifiers with one label, which score a (query, passage)
 * pair read as one sequence.
 *  - BertForSequenceClassification: `pooler.dense` + tanh over the CLS hidden state, then `classifier`.
 *  - XLMRobertaForSequenceClassification (RobertaClassificationHead): `classifier.dense` + tanh over the CLS
 *    hidden state, then `classifier.out_proj`.
 * Dropout sits between those layers in training only. Pairs are framed as the HF tokenizers frame them and
 * truncated as FlagReranker.compute_score truncates them (`framePair`).
 */
import * as tf from '@tensorflow/tfjs';
import { linear } from '../backend/ops';
import { UserError } from '../util/errors';
import { TokenBatch } from '../util/token-batch';
import { encoderForward } from './encoder';
import { loadModel, LoadOptions, M3Model } from './m3';
import { resolveModelDir } from './hub';

/** A loaded reranker: the encoder and its head's weights (`classifier.*`, BERT's `pooler.dense.*`) in `params`. */
export type Reranker = M3Model;

const HEAD_SHAPES = {
  bert: (d: number): Record<string, number[]> => ({
    'pooler.dense.weight': [d, d], 'pooler.dense.bias': [d], 'classifier.weight': [1, d], 'classifier.bias': [1],
  }),
  'xlm-roberta': (d: number): Record<string, number[]> => ({
    'classifier.dense.weight': [d, d], 'classifier.dense.bias': [d], 'classifier.out_proj.weight': [1, d], 'classifier.out_proj.bias': [1],
  }),
};
const CLASS_NAMES = { bert: 'BertForSequenceClassification', 'xlm-roberta': 'XLMRobertaForSequenceClassification' };

/** transformers' num_labels: the config's own key, else the size of id2label, else 2. */
function numLabels(raw: Record<string, unknown>): number {
  if (Number.isInteger(raw.num_labels)) return raw.num_labels as number;
  if (raw.id2label && typeof raw.id2label === 'object') return Object.keys(raw.id2label).length;
  return 2;
}

/** `loadReranker` for a dir or a Hub id (`org/name[@revision]`, fetched into the Hugging Face cache). */
export async function openReranker(spec: string, opts: Pick<LoadOptions, 'tokenizer'> = {}): Promise<Reranker> {
  const tokenizer = opts.tokenizer === undefined ? undefined : await resolveModelDir(opts.tokenizer, { files: 'tokenizer' });
  return loadReranker(await resolveModelDir(spec), { tokenizer });
}

/**
 * Loads a sequence-classification dir with the encoder's loaders (config, safetensors / the allow-list
 * pickle reader, tokenizer), keeping the classifier weights; refuses anything but a one-logit head.
 */
export function loadReranker(dir: string, opts: Pick<LoadOptions, 'tokenizer'> = {}): Reranker {
  const m = loadModel(dir, { tokenizer: opts.tokenizer, requireTokenizer: true, keepExtra: (n) => n.startsWith('classifier.') });
  const family = m.config.family;
  const labels = numLabels(m.config.raw);
  if (labels !== 1) throw new UserError(`${dir}: num_labels is ${labels}; a reranker has one logit per pair (num_labels 1, as bge-reranker)`);
  const tok = m.tokenizer!;
  if (tok.clsId < 0 || tok.sepId < 0) throw new UserError(`${opts.tokenizer ?? dir}: the tokenizer has no ${tok.clsId < 0 ? 'CLS / <s>' : 'SEP / </s>'} token to frame a pair with`);
  if (family === 'bert' && m.config.typeVocabSize < 2) throw new UserError(`${dir}: type_vocab_size is ${m.config.typeVocabSize}; a BERT pair needs token types 0 and 1`);
  for (const [name, shape] of Object.entries(HEAD_SHAPES[family](m.config.hidden))) {
    const t = m.params.get(name);
    if (!t) throw new UserError(`${dir}: weights lack '${name}' (not a ${CLASS_NAMES[family]} checkpoint)`);
    if (t.shape.join() !== shape.join()) throw new UserError(`${dir}: '${name}' has shape [${t.shape}], want [${shape}]`);
  }
  return m;
}

/** Special tokens a pair adds: [CLS] q [SEP] p [SEP] (BERT) or <s> q </s></s> p </s> (XLM-R). */
export const pairSpecials = (r: Reranker): number => (r.config.family === 'bert' ? 3 : 4);

/** The query's share of max_length, as FlagReranker's default query_max_length. */
export const queryMaxLength = (maxLength: number): number => Math.floor((maxLength * 3) / 4);

/** The smallest max_length that leaves a ¾-length query at least one passage token. */
export const minPairLength = (r: Reranker): number => {
  let n = 2;
  while (n - queryMaxLength(n) - pairSpecials(r) < 1) n++;
  return n;
};

export interface FramedPair {
  ids: number[];
  types: number[];
}

/**
 * One pair as FlagReranker.compute_score builds it from token ids without specials: the query cut to
 * max_length·3/4 tokens, the passage to max_length, then the HF tokenizer's pair framing and
 * `truncation='only_second'` (the passage loses its tail until the whole fits max_length). BERT's second
 * segment gets token type 1; XLM-R has a single token type.
 */
export function framePair(r: Reranker, query: readonly number[], passage: readonly number[], maxLength: number): FramedPair {
  const tok = r.tokenizer!;
  const q = query.slice(0, queryMaxLength(maxLength));
  const room = maxLength - pairSpecials(r) - q.length;
  if (room < 1) throw new RangeError(`max length ${maxLength} leaves no room for the passage (at least ${minPairLength(r)})`);
  const p = passage.slice(0, room); // room < max_length: the passage's own cut to max_length is inside it
  if (r.config.family === 'bert') {
    return { ids: [tok.clsId, ...q, tok.sepId, ...p, tok.sepId], types: [...q.map(() => 0), 0, 0, ...p.map(() => 1), 1] };
  }
  const ids = [tok.clsId, ...q, tok.sepId, tok.sepId, ...p, tok.sepId];
  return { ids, types: ids.map(() => 0) };
}

/** Raw logits [B] of a padded batch of framed pairs; `tokenTypeIds` [B·L] padded alike (BERT). */
export function rerankerLogits(r: Reranker, b: TokenBatch, tokenTypeIds?: Int32Array): tf.Tensor1D {
  return tf.tidy(() => {
    const h = encoderForward(r.config, r.params, b, { tokenTypeIds });
    const cls = tf.reshape(tf.slice(h, [0, 0, 0], [b.batch, 1, r.config.hidden]), [b.batch, r.config.hidden]);
    const p = (n: string) => r.params.get(n)!;
    const [dense, out] = r.config.family === 'bert' ? ['pooler.dense', 'classifier'] : ['classifier.dense', 'classifier.out_proj'];
    const x = tf.tanh(linear(cls, p(`${dense}.weight`), p(`${dense}.bias`)));
    return tf.reshape(linear(x, p(`${out}.weight`), p(`${out}.bias`)), [b.batch]) as tf.Tensor1D;
  });
}
