import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';
import { sparseTokenWeights } from '../../src/model/heads';
import { encoderForward } from '../../src/model/encoder';
import { addHeads, disposeModel, loadModel } from '../../src/model/m3';
import { bm25Idf, fitSparseHeadToIdf, IDF_SCALE } from '../../src/model/sparse-init';
import { runCli } from '../helpers/cli';
import { sharedDir } from '../helpers/shared';

beforeAll(() => useBackend('wasm'));

const TEXTS = [
  'vitamin d deficiency and bone health in older adults',
  'the effect of dietary fiber on the gut microbiome',
  'statin therapy and the risk of muscle pain',
  'the role of the mediterranean diet in heart disease',
  'omega 3 fatty acids and the brain',
  'the association of red meat with colon cancer',
  'green tea polyphenols and the liver',
  'the influence of sleep on the immune system',
  'arsenic in rice and the health of children',
  'the glycemic index of the breakfast cereal',
  'soy isoflavones and breast cancer survival',
  'the benefits of the walnut for the arteries',
];

describe('bm25Idf', () => {
  test("is BM25's ln(1 + (N − df + 0.5) / (df + 0.5)), counting a token once per row", () => {
    const idf = bm25Idf([[1, 2, 2], [1, 3], [1]]);
    expect(idf.get(1)).toBeCloseTo(Math.log(1 + 0.5 / 3.5), 12);
    expect(idf.get(2)).toBeCloseTo(Math.log(1 + 2.5 / 1.5), 12);
    expect(idf.get(3)).toBeCloseTo(Math.log(1 + 2.5 / 1.5), 12);
    expect(idf.has(4)).toBe(false);
  });
});

describe('fitSparseHeadToIdf', () => {
  test('turns a fresh sparse head into a term weighting: every content token active, rare tokens above common ones', () => {
    const model = loadModel(sharedDir('data/models/lightning-ir-tiny-bert'), { requireTokenizer: true });
    addHeads(model, -1, 3);
    const tok = model.tokenizer!;
    const special = [tok.clsId, tok.sepId, tok.padId, tok.unkId];
    const batches = [tok.encodeBatch(TEXTS.slice(0, 6), { maxLength: 24 }), tok.encodeBatch(TEXTS.slice(6), { maxLength: 24 })];
    const fit = fitSparseHeadToIdf(model, batches, special);
    const content = batches.flatMap((b) => Array.from(b.inputIds).filter((id, k) => b.attentionMask[k] && !special.includes(id)));
    expect(fit.tokens).toBe(content.length);
    expect(fit.r2).toBeGreaterThan(0.5);
    expect(fit.r2).toBeLessThanOrEqual(1);

    // The weights the head now gives, against its targets.
    const idf = bm25Idf(batches.flatMap((b) => Array.from({ length: b.batch }, (_, r) => Array.from(b.inputIds.subarray(r * b.length, (r + 1) * b.length)).filter((id, j) => b.attentionMask[r * b.length + j] && !special.includes(id)))));
    const weights: number[] = [], targets: number[] = [], ids: number[] = [];
    for (const b of batches) {
      const w = tf.tidy(() => sparseTokenWeights(encoderForward(model.config, model.params, b), model.params.get('sparse_linear.weight')!, model.params.get('sparse_linear.bias')!, b.attentionMask ? tf.tensor2d(b.attentionMask, [b.batch, b.length], 'int32') : undefined));
      const wv = w.dataSync();
      w.dispose();
      for (let k = 0; k < b.inputIds.length; k++) {
        if (!b.attentionMask[k] || special.includes(b.inputIds[k])) continue;
        weights.push(wv[k]);
        targets.push(IDF_SCALE * idf.get(b.inputIds[k])!);
        ids.push(b.inputIds[k]);
      }
    }
    expect(weights.filter((w) => w > 0).length / weights.length).toBeGreaterThan(0.95);
    const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    const [mw, mt] = [mean(weights), mean(targets)];
    const cov = mean(weights.map((w, i) => (w - mw) * (targets[i] - mt)));
    const corr = cov / Math.sqrt(mean(weights.map((w) => (w - mw) ** 2)) * mean(targets.map((t) => (t - mt) ** 2)));
    expect(corr).toBeGreaterThan(0.7);
    // 'the' is in 10 of the 12 texts; tokens in one text only have the highest IDF.
    const the = tok.encode('the', 8)[1];
    const rare = weights.filter((_, i) => idf.get(ids[i]) === Math.max(...idf.values()));
    expect(rare.length).toBeGreaterThanOrEqual(3);
    expect(mean(rare)).toBeGreaterThan(2 * mean(weights.filter((_, i) => ids[i] === the)));
    disposeModel(model);
  });

  test('refuses a sample without content tokens', () => {
    const model = loadModel(sharedDir('data/models/lightning-ir-tiny-bert'), { requireTokenizer: true });
    addHeads(model, -1, 3);
    const tok = model.tokenizer!;
    const b = tok.encodeBatch(['', ''], { maxLength: 8 });
    expect(() => fitSparseHeadToIdf(model, [b], [tok.clsId, tok.sepId, tok.padId, tok.unkId])).toThrow(/no content tokens/);
    disposeModel(model);
  });
});

describe('model.sparse_init: idf in a unified stage', () => {
  test('fits the fresh sparse head on the stage\'s first passages and says so; the default keeps torch\'s init', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-sparse-init-'));
    try {
      const run = (name: string, sets: string[]) => runCli(['train', 'configs/tiny/unified.yaml', '--set', `output_dir=${path.join(out, name)}`, 'train.max_steps=1', 'train.save_steps=0', ...sets]);
      const idf = run('idf', ['model.sparse_init=idf']);
      expect(idf.code).toBe(0);
      // the toy data: batches of 2 queries × group 4, so 8 passages a batch, read until 1,024 or the epoch ends
      expect(idf.stderr).toMatch(/^unified: sparse head fitted to IDF over \d+ tokens of \d+ passages \(R² 0\.\d\d\)$/m);
      const plain = run('torch', []);
      expect(plain.code).toBe(0);
      expect(plain.stderr).not.toContain('sparse head fitted');
      const bias = (name: string) => {
        const m = loadModel(path.join(out, name, 'final'));
        const b = m.params.get('sparse_linear.bias')!.dataSync()[0];
        disposeModel(m);
        return b;
      };
      expect(bias('idf')).not.toBeCloseTo(bias('torch'), 3);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
