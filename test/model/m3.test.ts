import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';
import { parseConfig } from '../../src/model/config';
import { encodeTexts } from '../../src/model/inference';
import { colbertDim, disposeModel, hasHeads, initModel, loadModel, saveModel } from '../../src/model/m3';
import { loadTokenizer } from '../../src/model/tokenizer';
import { sharedDir } from '../helpers/shared';

beforeAll(() => useBackend('wasm'));
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'm3-model-'));

function expectSameParams(a: Map<string, tf.Tensor>, b: Map<string, tf.Tensor>): void {
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  for (const [k, t] of a) {
    expect(b.get(k)!.shape).toEqual(t.shape);
    expect(Buffer.from((b.get(k)!.dataSync() as Float32Array).buffer).equals(Buffer.from((t.dataSync() as Float32Array).buffer))).toBe(true);
  }
}

describe('M3 model dirs', () => {
  test('a FlagEmbedding-style dir written by m3 loads back identically (fp16 heads widened exactly)', async () => {
    const src = loadModel(sharedDir('golden/encoder-xlmr-safetensors/model'));
    expect(hasHeads(src)).toBe(true);
    const out = path.join(tmp(), 'saved');
    await saveModel(src, out);
    for (const f of ['config.json', 'model.safetensors', 'colbert_linear.pt', 'sparse_linear.pt', 'modules.json', '1_Pooling/config.json']) {
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    }
    const pooling = JSON.parse(fs.readFileSync(path.join(out, '1_Pooling/config.json'), 'utf8'));
    expect(pooling.pooling_mode_cls_token).toBe(true);
    const back = loadModel(out);
    expectSameParams(src.params, back.params);
    expect(back.config.raw).toEqual(src.config.raw);
    disposeModel(src);
    disposeModel(back);
  });

  test('a dir without heads encodes dense only; heads are sized from their weights', async () => {
    const tiny = loadModel(sharedDir('data/models/lightning-ir-tiny-bert'));
    expect(hasHeads(tiny)).toBe(false);
    expect(colbertDim(tiny)).toBeNull();
    const [e] = await encodeTexts(tiny, ['paris is the capital of france']);
    expect(e.dense).toHaveLength(64);
    await expect(encodeTexts(tiny, ['x'], { outputs: ['colbert'] })).rejects.toThrow(/no colbert_linear\/sparse_linear heads/);
    disposeModel(tiny);
  });

  test('a fresh model with heads and a tokenizer round-trips, tokenizer included', async () => {
    const tokenizer = loadTokenizer(sharedDir('data/models/lightning-ir-tiny-bert'));
    const config = parseConfig({ model_type: 'bert', vocab_size: 30, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 32 });
    const m = initModel(config, { seed: 1, heads: true, colbertDim: 8, tokenizer });
    expect(colbertDim(m)).toBe(8);
    const out = path.join(tmp(), 'fresh');
    await saveModel(m, out);
    const back = loadModel(out);
    expectSameParams(m.params, back.params);
    expect(back.tokenizer!.fingerprint).toBe(tokenizer.fingerprint);
    const [a] = await encodeTexts(m, ['berlin is the capital of germany'], { outputs: ['dense', 'sparse', 'colbert'] });
    const [b] = await encodeTexts(back, ['berlin is the capital of germany'], { outputs: ['dense', 'sparse', 'colbert'] });
    expect(b).toEqual(a);
    disposeModel(m);
    disposeModel(back);
  });


  test('a seed gives the same weights every time, seed 0 too (TF.js takes seed 0 for "unseeded")', () => {
    const config = parseConfig({ model_type: 'bert', vocab_size: 30, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 32 });
    for (const seed of [0, 7]) {
      const [a, b] = [initModel(config, { seed, heads: true }), initModel(config, { seed, heads: true })];
      expectSameParams(a.params, b.params);
      disposeModel(a);
      disposeModel(b);
    }
  });
  test('a model dir without config or weights is refused with one line', () => {
    const d = tmp();
    expect(() => loadModel(d)).toThrow(`${d}: no config.json (not a model dir)`);
    fs.copyFileSync(sharedDir('data/models/lightning-ir-tiny-bert/config.json'), path.join(d, 'config.json'));
    expect(() => loadModel(d)).toThrow(new RegExp(`^${d}`));
  });

  test('MCLS pools several CLS states for long inputs', async () => {
    const config = parseConfig({ model_type: 'xlm-roberta', vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 1200, type_vocab_size: 1, pad_token_id: 1 });
    const m = initModel(config, { seed: 3, heads: true });
    const { encodeIds, insertMcls } = await import('../../src/model/inference');
    const long = [0, ...Array.from({ length: 600 }, (_, i) => 5 + (i % 40)), 2];
    const { ids, clsPositions } = insertMcls(long, 0, 1000);
    expect(clsPositions).toEqual([0, 257, 514]);
    expect(ids.length).toBe(long.length + 2);
    const [plain] = await encodeIds(m, [long]);
    const [mcls] = await encodeIds(m, [long], { mcls: true, outputs: ['dense', 'colbert'] });
    expect(Math.hypot(...mcls.dense!)).toBeCloseTo(1, 5);
    expect(mcls.dense).not.toEqual(plain.dense);
    expect(mcls.colbert).toHaveLength(long.length - 1); // inserted CLS tokens are not content
    disposeModel(m);
  });
});
