import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { readSafetensors } from '../../src/model/weights/safetensors';
import { runCli } from '../helpers/cli';
import { sharedDir } from '../helpers/shared';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-encode-'));
const tiny = sharedDir('data/models/lightning-ir-tiny-bert');
const write = (name: string, lines: string[]) => {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, lines.join('\n') + '\n');
  return f;
};
const readJsonl = (f: string) => fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l));

describe('m3 encode', () => {
  test('texts through the tiny BERT: one normalised dense vector per line, in order', () => {
    const input = write('texts.jsonl', ['{"text": "paris is the capital of france"}', '{"text": "berlin"}', '{"body": "what is the capital of germany ?"}']);
    const out = path.join(tmp, 'out.jsonl');
    const r = runCli(['encode', '--model', tiny, '--input', input, '--output', out, '--field', 'text']);
    expect(r.code).toBe(1); // line 3 lacks the field
    expect(r.stderr.trim()).toBe(`m3: error: ${input}:3: missing field 'text' (or 'input_ids')`);
    expect(fs.existsSync(out)).toBe(false);

    const ok = write('texts2.jsonl', ['{"text": "paris is the capital of france"}', '{"text": "berlin"}']);
    const r2 = runCli(['encode', '--model', tiny, '--input', ok, '--output', out]);
    expect(r2.code).toBe(0);
    expect(r2.stdout).toBe('');
    const rows = readJsonl(out);
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(Object.keys(row)).toEqual(['dense']);
      expect(row.dense).toHaveLength(64);
      expect(Math.hypot(...row.dense)).toBeCloseTo(1, 5);
    }
    expect(rows[0].dense).not.toEqual(rows[1].dense);
  });

  test('asking a model without heads for sparse output is a clear error', () => {
    const input = write('one.jsonl', ['{"text": "berlin"}']);
    const r = runCli(['encode', '--model', tiny, '--input', input, '--output', path.join(tmp, 'x.jsonl'), '--return', 'dense,sparse']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`m3: error: ${tiny}: has no colbert_linear/sparse_linear heads, so only 'dense' can be returned`);
  });

  test('malformed JSON names file:line', () => {
    const input = write('bad.jsonl', ['{"text": "a"}', '{"text": '] );
    const r = runCli(['encode', '--model', tiny, '--input', input, '--output', path.join(tmp, 'y.jsonl')]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(new RegExp(`^m3: error: ${input}:2: invalid JSON`));
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/); // no stack trace
  });

  test.each(['encoder-xlmr-safetensors', 'encoder-bert-bin'])('input_ids on the golden %s model reproduce the reference outputs', (name) => {
    const caseDir = sharedDir('golden', name);
    const t = readSafetensors(path.join(caseDir, 'tensors.safetensors'));
    const spec = JSON.parse(fs.readFileSync(path.join(caseDir, 'case.json'), 'utf8'));
    const ids = t.get('input_ids')!;
    const mask = t.get('attention_mask')!;
    const [B, L] = ids.shape;
    const seqs = Array.from({ length: B }, (_, i) => Array.from(ids.data.slice(i * L, (i + 1) * L)).filter((_, j) => mask.data[i * L + j] === 1));
    const input = write(`${name}.jsonl`, seqs.map((s) => JSON.stringify({ input_ids: s })));
    const out = path.join(tmp, `${name}.out.jsonl`);
    const r = runCli(['encode', '--model', path.join(caseDir, 'model'), '--input', input, '--output', out, '--return', 'dense,sparse,colbert', '--batch-size', '2']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const rows = readJsonl(out);
    const { rtol, atol } = spec.tolerance;
    const close = (got: number, want: number) => expect(Math.abs(got - want)).toBeLessThanOrEqual(atol + rtol * Math.abs(want));
    const dense = t.get('dense_vecs')!;
    const D = dense.shape[1];
    const sparse = t.get('sparse_vecs')!;
    const V = sparse.shape[1];
    const colbert = t.get('colbert_vecs')!;
    const C = colbert.shape[2];
    rows.forEach((row, i) => {
      row.dense.forEach((v: number, k: number) => close(v, dense.data[i * D + k]));
      // lexical weights: exactly the non-zero entries of the reference's sparse vector
      const want = Object.fromEntries(Array.from(sparse.data.slice(i * V, (i + 1) * V)).map((v, id) => [String(id), v]).filter(([, v]) => (v as number) > 0));
      expect(Object.keys(row.sparse).sort()).toEqual(Object.keys(want).sort());
      for (const k of Object.keys(want)) close(row.sparse[k], want[k] as number);
      // colbert: every non-pad position after CLS
      expect(row.colbert).toHaveLength(seqs[i].length - 1);
      row.colbert.forEach((vec: number[], j: number) => vec.forEach((v, k) => close(v, colbert.data[(i * (L - 1) + j) * C + k])));
    });
  });
});
