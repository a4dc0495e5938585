import { loadTokenizer } from '../../src/model/tokenizer';
import { decoderLabels, IGNORE, retroMaeExample, wholeWords } from '../../src/pretrain/masking';
import { createRng } from '../../src/util/rng';
import { sharedDir } from '../helpers/shared';

const bert = loadTokenizer(sharedDir('data/tokenizers/bert-base-uncased'));
const t5 = loadTokenizer(sharedDir('data/tokenizers/t5-small'));

describe('RetroMAE whole-word masking', () => {
  test('WordPiece words are a piece plus its ## followers; specials are never candidates', () => {
    const ids = bert.encode('tokenization is unbelievable', 32);
    const words = wholeWords(ids, bert).map((w) => w.map((i) => bert.idToToken(ids[i])).join(' '));
    expect(words.some((w) => w.includes('##'))).toBe(true);
    for (const w of words) {
      expect(w.startsWith('##')).toBe(false);
      expect(w).not.toMatch(/\[CLS\]|\[SEP\]/);
    }
    expect(words.join(' ').split(' ').length).toBe(ids.length - 2);
  });

  test('SentencePiece words start at a ▁ piece (t5-small)', () => {
    const ids = t5.encode('unbelievable tokenization happens', 32);
    const words = wholeWords(ids, t5);
    for (const w of words) {
      expect(t5.idToToken(ids[w[0]]).startsWith('▁') || w[0] === 0).toBe(true);
      for (const i of w.slice(1)) expect(t5.idToToken(ids[i]).startsWith('▁')).toBe(false);
    }
    expect(words.length).toBe(3);
  });

  test.each([['bert', bert], ['t5', t5]] as const)('%s: encoder masks whole words at ~30%%, labels only there, specials untouched', (_, tok) => {
    const text = 'the quick brown fox jumps over the lazy dog while tokenization of unbelievable words continues happily ever after';
    const ids = tok.encode(text, 64);
    const ex = retroMaeExample(ids, tok, createRng(7));
    const special = new Set(tok.specialIds);
    const labelled = ex.encoder.labels.map((l, i) => (l === IGNORE ? -1 : i)).filter((i) => i >= 0);
    expect(labelled.length).toBeGreaterThan(0);
    expect(labelled.length).toBeLessThanOrEqual(Math.round(ids.length * 0.3));
    for (const i of labelled) {
      expect(special.has(ids[i])).toBe(false);
      expect(ex.encoder.labels[i]).toBe(ids[i]);
    }
    ids.forEach((id, i) => { if (special.has(id)) expect(ex.encoder.inputIds[i]).toBe(id); });
    // a labelled word is labelled whole
    for (const w of wholeWords(ids, tok)) {
      const n = w.filter((i) => ex.encoder.labels[i] !== IGNORE).length;
      expect(n === 0 || n === w.length).toBe(true);
    }
  });

  test('the decoder never sees its own position, always sees CLS (except row 0), and reconstructs every inner token', () => {
    const ids = bert.encode('a sentence long enough to have several whole words in it', 64);
    const L = ids.length;
    const ex = retroMaeExample(ids, bert, createRng(3));
    for (let i = 0; i < L; i++) {
      expect(ex.decoderVisible[i * L + i]).toBe(0);
      if (i > 0) expect(ex.decoderVisible[i * L]).toBe(1);
    }
    const hidden = Array.from({ length: L }, (_, i) => L - ex.decoderVisible.slice(i * L, (i + 1) * L).reduce((a, b) => a + b, 0));
    expect(Math.max(...hidden)).toBeGreaterThan(1); // pool masks hide more than the diagonal
    expect(decoderLabels(ids)).toEqual(ids.map((id, i) => (i === 0 || i === L - 1 ? IGNORE : id)));
  });

  test('masking is a pure function of the seed', () => {
    const ids = bert.encode('same seed same masks every time for resumable training', 64);
    expect(retroMaeExample(ids, bert, createRng(11))).toEqual(retroMaeExample(ids, bert, createRng(11)));
    expect(retroMaeExample(ids, bert, createRng(11)).encoder).not.toEqual(retroMaeExample(ids, bert, createRng(12)).encoder);
  });
});
