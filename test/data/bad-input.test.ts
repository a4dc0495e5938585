import * as fs from 'fs';
import * as path from 'path';
import { prepareDataset } from '../../src/data/prepare';
import { DataFormat } from '../../src/data/records';
import { UserError } from '../../src/util/errors';
import { bertTokenizer, leftovers, tmpDir } from './helpers';

const good = JSON.stringify({ query: 'what is up', pos: ['the sky'], neg: ['the ground', 'a cat'] });
const goodScored = JSON.stringify({ query: 'q', pos: ['p'], neg: ['n'], pos_scores: [1], neg_scores: [0.5] });

/** [name, line 3 of the file (raw text), expected message after "file:3: ", reason counted by --skip-invalid] */
const CASES: [string, string | Buffer, RegExp, string][] = [
  ['malformed JSON', '{"query": "a", "pos": ["b"], ', /^invalid JSON/, 'malformed_json'],
  ['a JSON array line', '["a", "b"]', /^expected a JSON object, got a list/, 'not_object'],
  ['missing query', '{"pos": ["b"], "neg": []}', /^query: missing/, 'missing_field'],
  ['mistyped query', '{"query": 5, "pos": ["b"], "neg": []}', /^query: expected a string, got a number/, 'wrong_type'],
  ['pos not a list', '{"query": "a", "pos": "b", "neg": []}', /^pos: expected a list of strings, got a string/, 'wrong_type'],
  ['pos item not a string', '{"query": "a", "pos": ["b", 7], "neg": []}', /^pos\[1\]: expected a string, got a number/, 'wrong_type'],
  ['missing neg (finetune)', '{"query": "a", "pos": ["b"]}', /^neg: missing/, 'missing_field'],
  ['empty pos', '{"query": "a", "pos": [], "neg": ["c"]}', /^pos: is empty/, 'empty_pos'],
  ['NaN score (Python json.dumps)', '{"query": "a", "pos": ["b"], "neg": ["c"], "pos_scores": [NaN], "neg_scores": [0.1]}', /^pos_scores\[0\]: score is NaN/, 'non_finite_score'],
  ['Infinity score', '{"query": "a", "pos": ["b"], "neg": ["c", "d"], "pos_scores": [1], "neg_scores": [0.1, -Infinity]}', /^neg_scores\[1\]: score is -Infinity/, 'non_finite_score'],
  ['overflowing score', '{"query": "a", "pos": ["b"], "neg": ["c"], "pos_scores": [1e999], "neg_scores": [0.1]}', /^pos_scores\[0\]: score is Infinity/, 'non_finite_score'],
  ['score list length mismatch', '{"query": "a", "pos": ["b"], "neg": ["c", "d"], "pos_scores": [1], "neg_scores": [0.1]}', /^neg_scores: has 1 scores but neg has 2 texts/, 'score_length'],
  ['score not a number', '{"query": "a", "pos": ["b"], "neg": ["c"], "pos_scores": ["1"], "neg_scores": [0.1]}', /^pos_scores\[0\]: expected a number, got a string/, 'wrong_type'],
  ['only one score list', '{"query": "a", "pos": ["b"], "neg": ["c"], "pos_scores": [1]}', /^neg_scores: missing while pos_scores is given/, 'missing_field'],
  ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x71, 0x75, 0x65, 0x72, 0x79, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]), /^line is not valid UTF-8/, 'invalid_utf8'],
  ['bad batch_size', '{"query": "a", "pos": ["b"], "neg": ["c"], "batch_size": 0}', /^batch_size: must be ≥ 1/, 'bad_value'],
];

function writeWithBadLine(file: string, bad: string | Buffer): void {
  const lines = [Buffer.from(good + '\n' + goodScored + '\n'), Buffer.isBuffer(bad) ? bad : Buffer.from(bad), Buffer.from('\n' + good + '\n')];
  fs.writeFileSync(file, Buffer.concat(lines));
}

describe('bad input stops prepare with file:line and the field, leaving nothing behind', () => {
  const tok = bertTokenizer();
  test.each(CASES)('%s', async (_name, bad, message) => {
    const dir = tmpDir();
    const file = path.join(dir, 'train.jsonl');
    writeWithBadLine(file, bad);
    const out = path.join(dir, 'out', 'ds');
    const err = await prepareDataset([file], tok, out, { format: 'finetune', progress: false }).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message.startsWith(`${file}:3: `)).toBe(true);
    expect(err.message.slice(`${file}:3: `.length)).toMatch(message);
    expect(err.message).not.toContain('\n');
    expect(fs.existsSync(out)).toBe(false);
    expect(leftovers(out)).toEqual([]);
  });

  test('pretrain: missing or mistyped text', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'c.jsonl');
    fs.writeFileSync(file, '{"text": "fine"}\n{"txt": "typo"}\n');
    await expect(prepareDataset([file], tok, path.join(dir, 'o'), { format: 'pretrain', progress: false })).rejects.toThrow(`${file}:2: text: missing`);
    fs.writeFileSync(file, '{"text": ["a"]}\n');
    await expect(prepareDataset([file], tok, path.join(dir, 'o'), { format: 'pretrain', progress: false })).rejects.toThrow(`${file}:1: text: expected a string, got a list`);
  });

  test('an empty file (or only blank lines) is an error naming it', async () => {
    const dir = tmpDir();
    const empty = path.join(dir, 'empty.jsonl');
    fs.writeFileSync(empty, '\n  \n');
    const ok = path.join(dir, 'ok.jsonl');
    fs.writeFileSync(ok, good + '\n');
    const out = path.join(dir, 'out');
    await expect(prepareDataset([ok, empty], tok, out, { format: 'finetune', progress: false })).rejects.toThrow(new UserError(`${empty}:1: empty file (no JSON lines)`));
    expect(fs.existsSync(out)).toBe(false);
  });

  test('a failed prepare leaves an existing output untouched', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'a.jsonl');
    fs.writeFileSync(file, good + '\n');
    const out = path.join(dir, 'out');
    const before = await prepareDataset([file], tok, out, { format: 'finetune', progress: false });
    fs.writeFileSync(file, good + '\n{"query": 1}\n');
    await expect(prepareDataset([file], tok, out, { format: 'finetune', progress: false })).rejects.toThrow(`${file}:2: query`);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')).createdAt).toBe(before.createdAt);
    expect(leftovers(out)).toEqual([]);
  });

  test('missing inputs and bad options are one-line UserErrors', async () => {
    const dir = tmpDir();
    await expect(prepareDataset([path.join(dir, 'nope.jsonl')], tok, path.join(dir, 'o'), { format: 'finetune' })).rejects.toThrow(/nope.jsonl: input not found/);
    fs.writeFileSync(path.join(dir, 'a.txt'), 'x');
    await expect(prepareDataset([path.join(dir, 'a.txt')], tok, path.join(dir, 'o'), { format: 'finetune' })).rejects.toThrow(/not a .jsonl/);
    fs.writeFileSync(path.join(dir, 'a.jsonl'), good);
    await expect(prepareDataset([path.join(dir, 'a.jsonl')], tok, path.join(dir, 'o'), { format: 'finetune', queryMaxLen: 1 })).rejects.toThrow(/--query-max-len must be an integer ≥ 3/);
    await expect(prepareDataset([path.join(dir, 'a.jsonl')], tok, path.join(dir, 'o'), { format: 'bogus' as DataFormat })).rejects.toThrow(/--format must be one of/);
  });
});

describe('--skip-invalid', () => {
  const tok = bertTokenizer();
  test('skips every bad row, counts them by reason, and writes the good ones', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'mixed.jsonl');
    const parts: Buffer[] = [];
    for (const [, bad] of CASES) parts.push(Buffer.from(good + '\n'), Buffer.isBuffer(bad) ? bad : Buffer.from(bad), Buffer.from('\n'));
    fs.writeFileSync(file, Buffer.concat(parts));
    const empty = path.join(dir, 'empty.jsonl');
    fs.writeFileSync(empty, '');
    const m = await prepareDataset([file, empty], tok, path.join(dir, 'out'), { format: 'finetune', skipInvalid: true, progress: false });
    expect(m.rows).toBe(CASES.length);
    const expected: Record<string, number> = { empty_file: 1 };
    for (const [, , , reason] of CASES) expected[reason] = (expected[reason] ?? 0) + 1;
    expect(m.skipped).toEqual(expected);
    expect(m.sources[0].skipped).toEqual(Object.fromEntries(Object.entries(expected).filter(([k]) => k !== 'empty_file')));
    expect(m.sources[1]).toMatchObject({ rows: 0, skipped: { empty_file: 1 } });
  });

  test('when every row is invalid there is nothing to write: an error, no output', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(file, '{"query": 1}\nnot json\n');
    const out = path.join(dir, 'out');
    await expect(prepareDataset([file], tok, out, { format: 'finetune', skipInvalid: true, progress: false })).rejects.toThrow(/no rows to write \(all skipped: wrong_type 1, malformed_json 1\)/);
    expect(fs.existsSync(out)).toBe(false);
  });
});
