/**
 * `checkTrainingData` on hand-made JSONL whose every count is known: one file where each check finds what
 * was planted (and its examples point at the planted line and field), one clean file where each finds
 * nothing, and the conditions that make training fail (errors) against those that only warn.
 */
import * as path from 'path';
import { checkTrainingData, checkSummary, CHECKS, formatCheck, normalizeText } from '../../src/data/check';
import { isTruncated } from '../../src/data/encode';
import { detectFormat } from '../../src/data/records';
import { bertTokenizer, tmpDir, writeJsonl } from './helpers';

const LONG = Array.from({ length: 40 }, (_, i) => `word${i % 7}`).join(' ');

/** Line by line, what each check must count (group size 4: three negatives needed). */
const PLANTED = [
  // 1: neg[0] is pos[0] exactly (overlap + false negative), neg[1] only after normalising (false negative)
  { query: 'What is X?', pos: ['Alpha beta.'], neg: ['Alpha beta.', 'ALPHA   beta!', 'gamma', 'delta'] },
  // 2: the query of line 1 after normalising (duplicate); two negatives (short group)
  { query: 'what is  x', pos: ['p2'], neg: ['n1', 'n2'] },
  // 3: empty query and an empty negative (not a duplicate: empty queries are not compared)
  { query: '  ', pos: ['p3'], neg: ['n1', 'n2', '', 'n4'] },
  // 4: one positive, two positive scores: refused by the trainer (score-length mismatch, invalid line)
  { query: 'q4', pos: ['p4'], neg: ['a', 'b', 'c'], pos_scores: [1, 2], neg_scores: [1, 2, 3] },
  // 5: not JSON (invalid line)
  'not json',
  // 6: the query (full-width "Ｑ５") and the positive are evaluation queries after normalising (leakage); scored
  { query: 'Ｑ５ Leak', pos: ['Eval query, two'], neg: ['a', 'b', 'c'], pos_scores: [0.5], neg_scores: [0.1, 0.2, 0.3] },
  // 7: a positive over 8 tokens (truncated); its own train_group_size 2 needs one negative
  { query: 'q7', pos: [LONG], neg: ['x'], train_group_size: 2 },
  // 8: only_1neg groups are 2: one negative is enough
  { query: 'q8', pos: ['p8'], neg: ['m'], type: 'only_1neg' },
];

const EVAL = new Map([['e1', 'q5 leak'], ['e2', 'eval query two!'], ['e3', 'nothing like it']]);

function plantedFile(): string {
  return writeJsonl(path.join(tmpDir(), 'planted.jsonl'), PLANTED);
}

const full = { groupSize: 4, tokenizer: bertTokenizer(), maxLength: 8, evalQueries: EVAL, progress: false, examples: 5 };

describe('checkTrainingData', () => {
  test('every planted problem is counted once, with its line and field as the example', async () => {
    const file = plantedFile();
    const c = await checkTrainingData([file], full);
    expect(c.format).toBe('finetune');
    expect(c.rows).toBe(6);
    expect(c.scoredRows).toBe(1);
    expect(c.counts).toEqual({
      duplicate_queries: 1, pos_neg_overlap: 1, false_negatives: 2, empty_texts: 2, truncated: 1, short_groups: 1, score_length_mismatch: 1, leakage: 2,
    });
    expect(c.invalidLines).toBe(2);
    const at = (k: keyof typeof c.examples) => c.examples[k].map((e) => `${e.line} ${e.field} ${e.note ?? ''}`.trim());
    expect(at('duplicate_queries')).toEqual(['2 query first on line 1']);
    expect(at('pos_neg_overlap')).toEqual(['1 neg[0] = pos[0]']);
    expect(at('false_negatives')).toEqual(['1 neg[0] = pos[0]', '1 neg[1] ≈ pos[0]']);
    expect(at('empty_texts')).toEqual(['3 query', '3 neg[2]']);
    expect(at('truncated')).toEqual(['7 pos[0] > 8 tokens']);
    expect(at('short_groups')).toEqual(['2 neg a group of 4 needs 3']);
    expect(at('score_length_mismatch')).toEqual(['4 pos_scores']);
    expect(at('leakage')).toEqual(["6 query eval query 'e1'", "6 pos[0] eval query 'e2'"]);
    expect(at('invalid_lines').map((s) => s.split(' ')[0])).toEqual(['4', '5']);
    expect(c.examples.invalid_lines.every((e) => e.file === file)).toBe(true);
    // the two refused lines would stop training, unless training skips them
    expect(c.errors).toEqual([`2 lines the trainer refuses (first: ${file}:4: pos_scores: has 2 scores but pos has 1 texts); fix them, or skip them with data.skip_invalid / --skip-invalid`]);
    expect((await checkTrainingData([file], { ...full, skipInvalid: true })).errors).toEqual([]);
  });

  test('a clean file: every check finds nothing, training can start', async () => {
    const rows = [
      { query: 'first question', pos: ['a passage'], neg: ['another one', 'a third', 'a fourth'], pos_scores: [1], neg_scores: [0, 0, 0] },
      { query: 'second question', pos: ['more text'], neg: ['x', 'y', 'z'], pos_scores: [1], neg_scores: [0, 0, 0] },
    ];
    const c = await checkTrainingData([writeJsonl(path.join(tmpDir(), 'clean.jsonl'), rows)], full);
    expect(c.counts).toEqual(Object.fromEntries(CHECKS.map((k) => [k, 0])));
    expect(c).toMatchObject({ rows: 2, texts: 10, scoredRows: 2, invalidLines: 0, errors: [] });
    expect(Object.values(c.examples).every((e) => e.length === 0)).toBe(true);
    expect(checkSummary(c)).toMatch(/^data: checked 2 rows in 1 file: no problems found$/);
  });

  test('checks that need a tokenizer or evaluation queries are null without them; pretrain data has only empty texts', async () => {
    const c = await checkTrainingData([plantedFile()], { groupSize: 4, progress: false });
    expect(c.counts.truncated).toBeNull();
    expect(c.counts.leakage).toBeNull();
    expect(c.counts.duplicate_queries).toBe(1);
    const text = writeJsonl(path.join(tmpDir(), 'text.jsonl'), [{ text: 'one' }, { text: ' ' }, { content: 'three' }, { text: 'one' }]);
    const p = await checkTrainingData([text], { progress: false, tokenizer: bertTokenizer(), maxLength: 8 });
    expect(p.format).toBe('pretrain');
    expect(p.counts).toEqual({ ...Object.fromEntries(CHECKS.map((k) => [k, null])), empty_texts: 1 });
    expect(formatCheck(p)).toContain('duplicate_queries      -  (not for pretrain data)');
  });

  test('rows without negatives stop training where a group needs negatives, not in groups of 1', async () => {
    const file = writeJsonl(path.join(tmpDir(), 'noneg.jsonl'), [{ query: 'a', pos: ['b'] }, { query: 'c', pos: ['d'], neg: ['e'] }]);
    const pairs = await checkTrainingData([file], { progress: false });
    expect(pairs.format).toBe('pairs');
    expect(pairs.counts.short_groups).toBe(0);
    expect(pairs.errors).toEqual([]);
    const grouped = await checkTrainingData([file], { progress: false, format: 'pairs', groupSize: 3 });
    expect(grouped.counts.short_groups).toBe(2);
    expect(grouped.errors).toEqual(['1 row has no negatives, which cannot fill their groups; use train_group_size 1 or add negatives']);
  });

  test('empty files and files without rows are errors; an undetectable format names file:line', async () => {
    const dir = tmpDir();
    const empty = writeJsonl(path.join(dir, 'a-empty.jsonl'), ['']);
    const good = writeJsonl(path.join(dir, 'b.jsonl'), [{ query: 'q', pos: ['p'], neg: ['n'] }]);
    const c = await checkTrainingData([empty, good], { progress: false, groupSize: 2 });
    expect(c.format).toBe('finetune'); // from the first file that has a line
    expect(c.errors).toEqual([`${empty}:1: empty file (no JSON lines)`]);
    expect(c.invalidLines).toBe(1);
    const bad = writeJsonl(path.join(dir, 'bad.jsonl'), [{ id: 1 }]);
    await expect(checkTrainingData([bad], { progress: false })).rejects.toThrow(`${bad}:1: cannot tell the format (expected a JSON object with "query" or "text"); give --format`);
    const none = await checkTrainingData([bad], { progress: false, format: 'finetune' });
    expect(none.errors).toEqual([expect.stringContaining('1 line the trainer refuses'), `${bad}: no rows to train on`]);
  });

  test('bad options are one-line errors', async () => {
    const file = plantedFile();
    await expect(checkTrainingData([file], { tokenizer: bertTokenizer() })).rejects.toThrow('a tokenizer and a max length go together');
    await expect(checkTrainingData([file], { tokenizer: bertTokenizer(), maxLength: 2 })).rejects.toThrow('--max-length must be an integer ≥ 3, got 2');
    await expect(checkTrainingData([file], { groupSize: 0 })).rejects.toThrow('--group-size must be an integer ≥ 1, got 0');
  });
});

test('normalizeText: NFKC, lower case, runs of non-letters/digits as one space', () => {
  expect(normalizeText('  Ｈｅｌｌｏ,   WORLD!! ')).toBe('hello world');
  expect(normalizeText('ﬁve—Café')).toBe('five café');
  expect(normalizeText('e-mail')).not.toBe(normalizeText('email'));
  expect(normalizeText('...')).toBe('');
});

test('detectFormat: query + neg, query, text / content', () => {
  expect(detectFormat('{"query": "q", "pos": ["p"], "neg": []}')).toBe('finetune');
  expect(detectFormat('{"query": "q", "pos": "p"}')).toBe('pairs');
  expect(detectFormat('{"content": "c"}')).toBe('pretrain');
  expect(detectFormat('[1]')).toBeNull();
  expect(detectFormat('{"id": 1}')).toBeNull();
});

test('isTruncated agrees with the whole text tokenized, long texts included', () => {
  const tok = bertTokenizer();
  for (const text of ['', 'short text', LONG, `${LONG} ${LONG} ${LONG}`, 'x'.repeat(400)]) {
    for (const max of [3, 8, 40, 42, 200]) expect([text.length, max, isTruncated(tok, text, max)]).toEqual([text.length, max, tok.tokenize(text).length + 2 > max]);
  }
});
