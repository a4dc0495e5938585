/**
 * RetroMAE's inputs from one token sequence (RetroMAE data.py; HF
 * DataCollatorForWholeWordMask):
 * - whole words: WordPiece words are a piece plus its `##` followers, SentencePiece words start at a
 *   piece beginning with `▁`; special tokens are never candidates (fixes the XLM-R behaviour of #645);
 * - encoder: words picked until round(L·0.3) positions are covered; of those, 80% → [MASK],
 *   10% → a random token, 10% unchanged; labels −100 elsewhere;
 * - decoder: the original ids; labels at every position but the first, the last real token and padding;
 *   a position-specific attention mask: row i sees what one mask drawn from a pool of whole-word masks
 *   (decoder ratio 0.5) leaves visible, never itself.
 */
import { Rng } from '../util/rng';

export interface WordTokenizer {
  idToToken(id: number): string;
  specialIds: number[];
  wordStyle: 'wordpiece' | 'sentencepiece';
  maskId: number;
  vocabSize: number;
}

export const IGNORE = -100;

/** Candidate words as lists of positions; specials excluded. */
export function wholeWords(ids: number[], tok: WordTokenizer): number[][] {
  const special = new Set(tok.specialIds);
  const words: number[][] = [];
  for (let i = 0; i < ids.length; i++) {
    if (special.has(ids[i])) continue;
    const piece = tok.idToToken(ids[i]);
    const continues = tok.wordStyle === 'wordpiece' ? piece.startsWith('##') : !piece.startsWith('▁');
    const prev = words[words.length - 1];
    if (continues && prev && prev[prev.length - 1] === i - 1) prev.push(i);
    else words.push([i]);
  }
  return words;
}

/** HF `_whole_word_mask`: shuffled words until n = min(512, max(1, round(L·p))) positions are covered. */
export function pickWholeWords(words: number[][], length: number, prob: number, rng: Rng, maxPredictions = 512): boolean[] {
  const n = Math.min(maxPredictions, Math.max(1, Math.round(length * prob)));
  const chosen = new Array<boolean>(length).fill(false);
  let covered = 0;
  for (const w of rng.shuffle(words.slice())) {
    if (covered >= n) break;
    if (covered + w.length > n) continue;
    for (const p of w) chosen[p] = true;
    covered += w.length;
  }
  return chosen;
}

export interface EncoderMlm {
  inputIds: number[];
  labels: number[];
}

/** 80/10/10 corruption of the chosen positions. */
export function corruptForMlm(ids: number[], chosen: boolean[], tok: WordTokenizer, rng: Rng): EncoderMlm {
  const special = new Set(tok.specialIds);
  const inputIds = ids.slice();
  const labels = ids.map(() => IGNORE);
  for (let i = 0; i < ids.length; i++) {
    if (!chosen[i] || special.has(ids[i])) continue;
    labels[i] = ids[i];
    const r = rng.next();
    if (r < 0.8) inputIds[i] = tok.maskId;
    else if (r < 0.9) inputIds[i] = randomNonSpecial(tok, special, rng);
  }
  return { inputIds, labels };
}

function randomNonSpecial(tok: WordTokenizer, special: Set<number>, rng: Rng): number {
  for (;;) {
    const id = rng.int(tok.vocabSize);
    if (!special.has(id)) return id;
  }
}

/** Decoder labels: original ids except the first position, the last real token and padding. */
export function decoderLabels(ids: number[]): number[] {
  return ids.map((id, i) => (i === 0 || i === ids.length - 1 ? IGNORE : id));
}

/**
 * Position-specific visibility [L, L] (row-major, 1 = visible) for one sequence of length L: each row
 * takes a random pool mask, hides its own position as well, and sees the rest.
 */
export function decoderVisibility(words: number[][], length: number, prob: number, poolSize: number, rng: Rng): Uint8Array {
  const pool = Array.from({ length: Math.max(1, Math.min(length, poolSize)) }, () => pickWholeWords(words, length, prob, rng));
  const vis = new Uint8Array(length * length);
  for (let i = 0; i < length; i++) {
    const mask = pool[rng.int(pool.length)];
    for (let j = 0; j < length; j++) vis[i * length + j] = mask[j] || j === i ? 0 : 1;
  }
  return vis;
}

export interface RetroMaeExample {
  encoder: EncoderMlm;
  decoderIds: number[];
  decoderLabels: number[];
  decoderVisible: Uint8Array;
}

export interface RetroMaeMasking {
  encoderRatio: number;
  decoderRatio: number;
  poolSize: number;
}

export const RETROMAE_DEFAULTS: RetroMaeMasking = { encoderRatio: 0.3, decoderRatio: 0.5, poolSize: 128 };

export function retroMaeExample(ids: number[], tok: WordTokenizer, rng: Rng, m: RetroMaeMasking = RETROMAE_DEFAULTS): RetroMaeExample {
  const words = wholeWords(ids, tok);
  const encoder = corruptForMlm(ids, pickWholeWords(words, ids.length, m.encoderRatio, rng), tok, rng);
  return {
    encoder,
    decoderIds: ids.slice(),
    decoderLabels: decoderLabels(ids),
    decoderVisible: decoderVisibility(words, ids.length, m.decoderRatio, m.poolSize, rng),
  };
}
