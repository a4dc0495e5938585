/**
 * `m3 score` / `scorePairs`: reranker teacher scores.
 *  - Golden: two random-weight cross-encoders (BertForSequenceClassification from pytorch_model.bin,
 *    XLMRobertaForSequenceClassification from model.safetensors) made by reranker/make_golden.py with the
 *    PyTorch reference layers; the pair token ids must equal the ones that script builds independently, and
 *    the logits must match to 1e-4 on every available backend, at a truncating and at the default max length.
 *  - Loading: weights without the `bert.` prefix load the same; num_labels ≠ 1, a dir without a classifier,
 *    a too-small max length are one-line errors.
 *  - The file: scores in the order of pos / neg, replaced in place, other fields kept; bad input names
 *    file:line and writes nothing.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { availableBackends } from '../../src/backend';
import { scorePairs, scoreTrainingFile } from '../../src/eval/score';
import { disposeModel } from '../../src/model/m3';
import { framePair, loadReranker } from '../../src/model/reranker';
import { readTorchStateDict } from '../../src/model/weights/torch';
import { writeSafetensorsFd } from '../../src/model/weights/safetensors';
import { UserError } from '../../src/util/errors';
import { TINY_BERT } from './fixtures';

const HERE = path.join(__dirname, 'reranker');
interface GoldenCase { model: 'bert' | 'xlmr'; max_length: number; pairs: [string, string][]; input_ids: number[][]; token_type_ids: number[][]; logits: number[] }
const golden = JSON.parse(fs.readFileSync(path.join(HERE, 'golden.json'), 'utf8')) as { tolerance: number; cases: GoldenCase[] };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-score-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function expectClose(got: number[], want: number[], tol: number, what: string): void {
  expect(got).toHaveLength(want.length);
  const worst = Math.max(...got.map((g, i) => Math.abs(g - want[i])));
  if (!(worst <= tol)) throw new Error(`${what}: logits differ by up to ${worst} (tolerance ${tol}): got ${got}, want ${want}`);
}

describe('golden logits from the PyTorch reference', () => {
  test('BERT and XLM-R rerankers: pair ids equal, logits within 1e-4, on every available backend', async () => {
    const backends = await availableBackends();
    expect(backends).toContain('wasm');
    for (const backend of backends) {
      await tf.setBackend(backend);
      for (const c of golden.cases) {
        const r = loadReranker(path.join(HERE, c.model));
        try {
          const max = Math.min(c.max_length, 40); // both models have 40 usable positions
          const tok = r.tokenizer!;
          c.pairs.forEach(([q, p], i) => {
            const f = framePair(r, tok.tokenize(q), tok.tokenize(p), max);
            expect(f.ids).toEqual(c.input_ids[i]);
            expect(f.types).toEqual(c.token_type_ids[i]);
          });
          // batches of 4 sort the pairs by length and pad them: the order and the masks must not matter
          const got = await scorePairs(r, c.pairs, { maxLength: c.max_length, batchSize: 4, progress: false });
          expectClose(got, c.logits, golden.tolerance, `[${backend}] ${c.model} max_length ${c.max_length}`);
        } finally {
          disposeModel(r);
        }
      }
    }
  });

  test('the truncating cases truncate: the ¾ query cut and only_second both act', () => {
    const cut = golden.cases.find((c) => c.model === 'bert' && c.max_length === 20)!;
    const full = golden.cases.find((c) => c.model === 'bert' && c.max_length === 512)!;
    expect(cut.input_ids.filter((ids) => ids.length === 20).length).toBeGreaterThanOrEqual(3);
    expect(cut.token_type_ids[2].filter((t) => t === 0).length).toBe(15 + 2); // query at 20·3/4 = 15 tokens
    expect(Math.max(...full.input_ids.map((ids) => ids.length))).toBe(40); // 512 capped by the positions
    expect(cut.logits[2]).not.toBeCloseTo(full.logits[2], 3);
  });
});

describe('loading', () => {
  beforeAll(() => tf.setBackend('wasm'));

  test('weights without the bert. prefix (safetensors) give the same logits', async () => {
    const dir = path.join(tmp, 'bert-noprefix');
    fs.mkdirSync(dir);
    for (const f of ['config.json', 'vocab.txt', 'tokenizer_config.json']) fs.copyFileSync(path.join(HERE, 'bert', f), path.join(dir, f));
    const sd = readTorchStateDict(path.join(HERE, 'bert', 'pytorch_model.bin'));
    const renamed = new Map([...sd].map(([k, v]) => [k.replace(/^bert\./, ''), v]));
    const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
    writeSafetensorsFd(fd, renamed);
    fs.closeSync(fd);
    const c = golden.cases.find((x) => x.model === 'bert' && x.max_length === 512)!;
    const r = loadReranker(dir);
    expectClose(await scorePairs(r, c.pairs, { progress: false }), c.logits, golden.tolerance, 'no prefix');
    disposeModel(r);
  });

  test('refusals: num_labels 2, no classifier weights, max length too small', async () => {
    const two = path.join(tmp, 'two-labels');
    fs.cpSync(path.join(HERE, 'xlmr'), two, { recursive: true });
    const cfg = JSON.parse(fs.readFileSync(path.join(two, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(two, 'config.json'), JSON.stringify({ ...cfg, id2label: { 0: 'no', 1: 'yes' } }));
    expect(() => loadReranker(two)).toThrow(new UserError(`${two}: num_labels is 2; a reranker has one logit per pair (num_labels 1, as bge-reranker)`));
    const plain = path.join(tmp, 'plain');
    fs.cpSync(TINY_BERT, plain, { recursive: true });
    const raw = JSON.parse(fs.readFileSync(path.join(plain, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(plain, 'config.json'), JSON.stringify({ ...raw, num_labels: 1 }));
    expect(() => loadReranker(plain)).toThrow(/weights lack 'classifier\.weight' \(not a BertForSequenceClassification checkpoint\)/);
    const r = loadReranker(path.join(HERE, 'xlmr'));
    await expect(scorePairs(r, [['a', 'b']], { maxLength: 16 })).rejects.toThrow('max length 16 leaves no room for the passage after a ¾-length query and the special tokens (at least 17)');
    disposeModel(r);
  });
});

describe('scoring a training file', () => {
  beforeAll(() => tf.setBackend('wasm'));
  const bert = () => loadReranker(path.join(HERE, 'bert'));

  test('pos_scores / neg_scores in the order of pos / neg, replaced in place; other fields kept', async () => {
    const input = path.join(tmp, 'train.jsonl');
    const rows = [
      { query: 'what is a panda?', pos: ['the giant panda is a bear', 'hi'], neg: ['cook rice'], pos_scores: [9, 9], neg_scores: [1], type: 'x' },
      { query: 'cats playing', pos: ['a dog played'], prompt: 'p' }, // no neg: pos_scores only
      { query: 'read a book', pos: ['i read books'], neg: ['boil water', 'sunny city', 'the river'] },
    ];
    fs.writeFileSync(input, rows.map((r) => JSON.stringify(r)).join('\n') + '\n\n');
    const r = bert();
    const out = path.join(tmp, 'scored.jsonl');
    const stats = await scoreTrainingFile(r, input, out, { batchSize: 2, progress: false });
    expect(stats).toEqual({ examples: 3, pairs: 8, resumed: 0 });
    const got = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const want = await scorePairs(r, rows.flatMap((x) => [...x.pos, ...(x.neg ?? [])].map((t) => [x.query, t] as [string, string])), { progress: false });
    expect(Object.keys(got[0])).toEqual(['query', 'pos', 'neg', 'pos_scores', 'neg_scores', 'type']);
    expect(Object.keys(got[1])).toEqual(['query', 'pos', 'prompt', 'pos_scores']);
    expect(Object.keys(got[2])).toEqual(['query', 'pos', 'neg', 'pos_scores', 'neg_scores']);
    const flat = got.flatMap((g) => [...g.pos_scores, ...(g.neg_scores ?? [])]);
    expectClose(flat, want, 1e-5, 'file vs scorePairs');
    expect(fs.readdirSync(tmp).filter((n) => n.startsWith('.scored.jsonl'))).toEqual([]); // no partial, no lock left
    disposeModel(r);
  });

  test('a bad line is one error naming file:line; nothing is written', async () => {
    const input = path.join(tmp, 'bad.jsonl');
    fs.writeFileSync(input, '{"query": "q", "pos": ["p"], "neg": []}\n{"query": "q", "pos": []}\n');
    const out = path.join(tmp, 'bad-out.jsonl');
    const r = bert();
    await expect(scoreTrainingFile(r, input, out, { progress: false })).rejects.toThrow(new UserError(`${input}:2: pos: is empty; every query needs at least one positive`));
    fs.writeFileSync(input, '{"query": "q", "pos": ["p"]}\n{"query": "q", "pos": ["p"]\n');
    await expect(scoreTrainingFile(r, input, out, { progress: false })).rejects.toThrow(`${input}:2: invalid JSON`);
    expect(fs.existsSync(out)).toBe(false);
    disposeModel(r);
  });
});

describe('a reranker by Hub id', () => {
  test('org/name served by a fake Hub on 127.0.0.1 opens through the Hugging Face cache and gives the golden logits', async () => {
    const { repoFromDir, startFakeHub } = await import('../helpers/fake-hub');
    const { openReranker } = await import('../../src/model/reranker');
    const vars = ['HF_HOME', 'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HF_HUB_OFFLINE'];
    const saved = Object.fromEntries(vars.map((k) => [k, process.env[k]]));
    const hub = await startFakeHub({ 'acme/tiny-reranker': repoFromDir(path.join(HERE, 'xlmr')) });
    try {
      for (const k of vars) delete process.env[k];
      Object.assign(process.env, { HF_HOME: path.join(tmp, 'hf-home'), HF_ENDPOINT: hub.url });
      await tf.setBackend('wasm');
      const c = golden.cases.find((x) => x.model === 'xlmr')!;
      const r = await openReranker('acme/tiny-reranker');
      try {
        expect(r.source.startsWith(path.join(tmp, 'hf-home', 'hub', 'models--acme--tiny-reranker', 'snapshots'))).toBe(true);
        expectClose(await scorePairs(r, c.pairs, { maxLength: c.max_length, batchSize: 4, progress: false }), c.logits, golden.tolerance, 'Hub id');
      } finally {
        disposeModel(r);
      }
    } finally {
      await hub.close();
      for (const k of vars) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  });
});
