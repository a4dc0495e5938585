/**
 * The tokenizing step of `m3 data prepare`, shared by the main thread and the worker threads (see
 * tokenize-pool): a chunk of texts, each with its max length (0 = the whole text, no special tokens: pretrain
 * packs them itself), becomes one flat Int32Array of ids plus offsets — one transferable buffer per chunk
 * instead of a JS array per text. Kept apart from prepare.ts so a worker loads only the tokenizer.
 */
import type { Tokenizer } from '../model/tokenizer';

/** A chunk's texts tokenized: text i's ids are ids[offsets[i] .. offsets[i + 1]). */
export interface TokenizedChunk {
  ids: Int32Array;
  offsets: Int32Array;
}

const specialCount = (tok: Tokenizer): number => (tok.clsId >= 0 ? 1 : 0) + (tok.sepId >= 0 ? 1 : 0);

/**
 * The content tokens of a prefix of `text` cut at a space, once such a prefix already has more than `budget`
 * of them; null when none has (then only the whole text tells). Pre-tokenizers split at spaces, so the
 * tokens before the cut are the ones the whole text gives: a long text is not tokenized to its end.
 */
function overBudgetPrefix(tok: Tokenizer, text: string, budget: number): number[] | null {
  let chars = budget * 5 + 32;
  while (text.length > chars) {
    const cut = text.lastIndexOf(' ', chars);
    if (cut <= 0) break;
    const ids = tok.tokenize(text.slice(0, cut));
    if (ids.length > budget) return ids;
    chars *= 2;
  }
  return null;
}

/** encode(text, maxLength) without tokenizing all of a long text (see overBudgetPrefix). */
export function encodeTruncated(tok: Tokenizer, text: string, maxLength: number): number[] {
  const budget = maxLength - specialCount(tok);
  const ids = overBudgetPrefix(tok, text, budget);
  if (!ids) return tok.encode(text, maxLength);
  const out = ids.slice(0, budget);
  if (tok.clsId >= 0) out.unshift(tok.clsId);
  if (tok.sepId >= 0) out.push(tok.sepId);
  return out;
}

/** Whether encode(text, maxLength) cuts the text: its tokens and the special tokens exceed maxLength. */
export function isTruncated(tok: Tokenizer, text: string, maxLength: number): boolean {
  const budget = maxLength - specialCount(tok);
  return overBudgetPrefix(tok, text, budget) !== null || tok.tokenize(text).length > budget;
}

/** About how many characters tokenizing `text` looks at (a truncated text: its prefix): the chunk-size measure. */
export function textCost(text: string, maxLength: number): number {
  return maxLength > 0 ? Math.min(text.length, maxLength * 5 + 32) : text.length;
}

/** Tokenizes a chunk: maxLengths[i] > 0 → [CLS] … [SEP] truncated to it, 0 → the whole text without specials. */
export function tokenizeChunk(tok: Tokenizer, texts: string[], maxLengths: ArrayLike<number>): TokenizedChunk {
  const offsets = new Int32Array(texts.length + 1);
  let ids = new Int32Array(1024);
  let n = 0;
  for (let i = 0; i < texts.length; i++) {
    const t = maxLengths[i] > 0 ? encodeTruncated(tok, texts[i], maxLengths[i]) : tok.tokenize(texts[i]);
    if (n + t.length > ids.length) {
      let cap = ids.length * 2;
      while (cap < n + t.length) cap *= 2;
      const next = new Int32Array(cap);
      next.set(ids.subarray(0, n));
      ids = next;
    }
    ids.set(t, n);
    n += t.length;
    offsets[i + 1] = n;
  }
  return { ids: ids.slice(0, n), offsets };
}
