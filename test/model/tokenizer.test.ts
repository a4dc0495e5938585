import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTokenizer, Tokenizer } from '../../src/model/tokenizer';
import { UserError } from '../../src/util/errors';
import { sharedDir } from '../helpers/shared';

const BERT = sharedDir('data/tokenizers/bert-base-uncased');
const TINY = sharedDir('data/models/lightning-ir-tiny-bert');

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'm3-tok-'));
}

/** A folder holding only some files of `src` (to force the vocab.txt route). */
function onlyFiles(src: string, files: string[]): string {
  const dir = tmpDir();
  for (const f of files) fs.copyFileSync(path.join(src, f), path.join(dir, f));
  return dir;
}

function golden(): { text: string; ids: number[] }[] {
  const inp = fs.readFileSync(path.join(BERT, 'golden/ggml-vocab-bert-bge.gguf.inp'), 'utf8').split('\n__ggml_vocab_test__\n');
  const out = fs.readFileSync(path.join(BERT, 'golden/ggml-vocab-bert-bge.gguf.out'), 'utf8').split('\n');
  const cases = [];
  for (let i = 0; i < 46; i++) cases.push({ text: inp[i], ids: out[i].trim() ? out[i].trim().split(/\s+/).map(Number) : [] });
  return cases;
}

describe('bert-base-uncased', () => {
  const fromJson = loadTokenizer(BERT);
  const fromVocab = loadTokenizer(onlyFiles(BERT, ['vocab.txt']));
  const cases = golden();

  test('46 golden cases from tokenizer.json', () => {
    expect(cases).toHaveLength(46);
    for (const c of cases) expect([c.text, fromJson.tokenize(c.text)]).toEqual([c.text, c.ids]);
  });

  test('46 golden cases from vocab.txt (BERT normalisation, lowercase by default)', () => {
    for (const c of cases) expect([c.text, fromVocab.tokenize(c.text)]).toEqual([c.text, c.ids]);
  });

  test('both routes are the same tokenizer', () => {
    expect(fromVocab.fingerprint).toBe(fromJson.fingerprint);
    expect(fromJson.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    for (const t of [fromJson, fromVocab]) {
      expect([t.clsId, t.sepId, t.padId, t.unkId, t.maskId]).toEqual([101, 102, 0, 100, 103]);
      expect(t.specialIds).toEqual([0, 100, 101, 102, 103]);
      expect(t.vocabSize).toBe(30522);
      expect(t.wordStyle).toBe('wordpiece');
    }
  });

  test('daulet example with and without special tokens', () => {
    const text = 'brown fox jumps over the lazy dog';
    expect(fromJson.tokenize(text)).toEqual([2829, 4419, 14523, 2058, 1996, 13971, 3899]);
    expect(fromJson.encode(text, 512)).toEqual([101, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 102]);
    expect(fromJson.idToToken(101)).toBe('[CLS]');
    expect(fromJson.idToToken(14523)).toBe('jumps');
    expect(() => fromJson.idToToken(30522)).toThrow(RangeError);
  });

  test('do_lower_case: false in tokenizer_config.json keeps case on the vocab.txt route', () => {
    const dir = onlyFiles(BERT, ['vocab.txt']);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ do_lower_case: false }));
    const cased = loadTokenizer(dir);
    expect(cased.fingerprint).not.toBe(fromJson.fingerprint);
    expect(cased.tokenize('Hello')).not.toEqual(fromJson.tokenize('Hello'));
    expect(cased.tokenize('hello')).toEqual(fromJson.tokenize('hello'));
  });

  test('truncation keeps [CLS] and [SEP] within maxLength', () => {
    const text = 'brown fox jumps over the lazy dog';
    expect(fromJson.encode(text, 5)).toEqual([101, 2829, 4419, 14523, 102]);
    expect(fromJson.encode(text, 9)).toHaveLength(9);
    expect(fromJson.encode('', 4)).toEqual([101, 102]);
    expect(() => fromJson.encode(text, 2)).toThrow(RangeError);
  });

  test('encodeBatch pads right to the longest, or to a multiple', () => {
    const b = fromJson.encodeBatch(['brown fox', 'brown fox jumps over the lazy dog', ''], { maxLength: 6 });
    expect([b.batch, b.length]).toEqual([3, 6]);
    expect(Array.from(b.inputIds)).toEqual([101, 2829, 4419, 102, 0, 0, 101, 2829, 4419, 14523, 2058, 102, 101, 102, 0, 0, 0, 0]);
    expect(Array.from(b.attentionMask)).toEqual([1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
    const m = fromJson.encodeBatch(['brown fox', 'brown'], { maxLength: 32, padToMultipleOf: 8 });
    expect([m.batch, m.length]).toEqual([2, 8]);
    expect(Array.from(m.attentionMask.subarray(8))).toEqual([1, 1, 1, 0, 0, 0, 0, 0]);
  });

  test('save → load gives the same fingerprint and ids', () => {
    for (const t of [fromJson, fromVocab]) {
      const dir = tmpDir();
      t.save(dir);
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt']) expect(fs.existsSync(path.join(dir, f))).toBe(true);
      const back = loadTokenizer(dir);
      expect(back.fingerprint).toBe(t.fingerprint);
      for (const c of cases.slice(0, 20)) expect(back.tokenize(c.text)).toEqual(c.ids);
      // the written vocab.txt alone is the same tokenizer too
      expect(loadTokenizer(onlyFiles(dir, ['vocab.txt'])).fingerprint).toBe(t.fingerprint);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'special_tokens_map.json'), 'utf8'))).toEqual({
        cls_token: '[CLS]', sep_token: '[SEP]', pad_token: '[PAD]', unk_token: '[UNK]', mask_token: '[MASK]',
      });
    }
  });
});

describe('tiny lightning-ir model tokenizer', () => {
  let tok: Tokenizer;
  beforeAll(() => (tok = loadTokenizer(TINY)));

  test('ids come from tokenizer.json, not the wrong ids in tokenizer_config.json', () => {
    expect([tok.padId, tok.unkId, tok.clsId, tok.sepId, tok.maskId]).toEqual([0, 1, 2, 3, 4]);
    expect(tok.vocabSize).toBe(30);
    expect(tok.specialIds).toEqual([0, 1, 2, 3, 4]);
  });

  test('encodes toy words, unknown words map to [UNK], and vocab.txt agrees', () => {
    const vocab = fs.readFileSync(path.join(TINY, 'vocab.txt'), 'utf8').split('\n');
    const words = vocab.slice(7, 12);
    const ids = tok.tokenize(words.join(' ').toUpperCase() + ' zyzzyva');
    expect(ids).toEqual([7, 8, 9, 10, 11, 1]);
    const viaVocab = loadTokenizer(onlyFiles(TINY, ['vocab.txt']));
    expect(viaVocab.tokenize(words.join(' ') + ' zyzzyva')).toEqual(ids);
    expect(viaVocab.fingerprint).toBe(tok.fingerprint);
    expect(tok.encode(words.join(' '), 4)).toEqual([2, 7, 8, 3]);
  });

  test('save writes corrected ids, and a round trip keeps the fingerprint', () => {
    const dir = tmpDir();
    tok.save(dir);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    expect(cfg.added_tokens_decoder).toBeUndefined();
    expect(loadTokenizer(dir).fingerprint).toBe(tok.fingerprint);
  });
});

describe('t5-small (old-style Unigram tokenizer.json)', () => {
  const t5 = loadTokenizer(sharedDir('data/tokenizers/t5-small'));

  test('special tokens: </s> ends sequences, no [CLS] or [MASK]', () => {
    expect([t5.clsId, t5.sepId, t5.padId, t5.unkId, t5.maskId]).toEqual([-1, 1, 0, 2, -1]);
    expect(t5.vocabSize).toBe(32100);
    expect(t5.wordStyle).toBe('sentencepiece');
    expect(t5.specialIds).toContain(32099);
  });

  test('README §5.3 expectation (tokenizer.json semantics)', () => {
    const text = 'I <extra_id_0> like walking my cute dog\n and\x17 then, 生活的真谛是  \t\t\t\t \n\n61';
    const expected = [27, 3, 32099, 114, 3214, 82, 5295, 1782, 11, 258, 6, 3, 2, 3, 4241, 1];
    // The published list comes from the sentencepiece ("slow") tokenizer, which emits a bare "▁" (id 3) for
    // the space before an added token; tokenizer.json (the Rust "fast" tokenizer) does not: "I <extra_id_0>
    // you." gives [27, 32099, 25, 5, 1] fast vs [27, 3, 32099, 25, 5, 1] slow (VL-T5 issue 21). We follow
    // tokenizer.json, so the expectation is the published one without that "▁".
    const fast = [...expected.slice(0, 1), ...expected.slice(2)];
    expect(t5.encode(text, 512)).toEqual(fast);
    expect(t5.encode(text, 4)).toEqual([27, 32099, 114, 1]);
  });

  test('save → load round trip', () => {
    const dir = tmpDir();
    t5.save(dir);
    expect(fs.existsSync(path.join(dir, 'vocab.txt'))).toBe(false);
    const back = loadTokenizer(dir);
    expect(back.fingerprint).toBe(t5.fingerprint);
    expect(back.tokenize('walking my cute dog')).toEqual(t5.tokenize('walking my cute dog'));
  });

  test('different tokenizers have different fingerprints', () => {
    expect(t5.fingerprint).not.toBe(loadTokenizer(BERT).fingerprint);
  });
});

describe('errors', () => {
  test('a missing dir or a dir without tokenizer files is a UserError naming the dir', () => {
    expect(() => loadTokenizer('/nonexistent/tok')).toThrow(new UserError('/nonexistent/tok: tokenizer dir not found'));
    const empty = tmpDir();
    expect(() => loadTokenizer(empty)).toThrow(UserError);
    expect(() => loadTokenizer(empty)).toThrow(empty);
  });

  test('an unreadable tokenizer.json is a UserError naming the file', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    expect(() => loadTokenizer(dir)).toThrow(UserError);
    expect(() => loadTokenizer(dir)).toThrow(path.join(dir, 'tokenizer.json'));
  });
});
