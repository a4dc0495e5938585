import * as fs from 'fs';
import * as path from 'path';
import { floatToHalf, halfToFloat } from '../../../src/model/weights/dtype';
import { readModelWeights, writeModelDir } from '../../../src/model/weights/modeldir';
import { readSafetensors, writeSafetensors } from '../../../src/model/weights/safetensors';
import { readTorchStateDict, writeTorchStateDict } from '../../../src/model/weights/torch';
import { HostTensor, TensorMap } from '../../../src/model/weights/types';
import { UserError } from '../../../src/util/errors';
import { sharedDir } from '../../helpers/shared';
import { expectSameTensors, f32, tempDir } from './helpers';

const tmp = tempDir('modeldir');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const TINY = sharedDir('data', 'models', 'lightning-ir-tiny-bert');

const message = async (fn: () => unknown): Promise<string> => {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('no error');
};
const mkdir = (name: string) => { const d = path.join(tmp, name); fs.mkdirSync(d, { recursive: true }); return d; };
const readJson = (...p: string[]) => JSON.parse(fs.readFileSync(path.join(...p), 'utf8'));

describe('reading model dirs', () => {
  const goldenDirs = fs.readdirSync(sharedDir('golden')).map((c) => sharedDir('golden', c, 'model')).filter((d) => fs.existsSync(d));

  test('finds the golden model dirs', () => {
    expect(goldenDirs.map((d) => path.basename(path.dirname(d))).sort()).toEqual(expect.arrayContaining(['encoder-bert-bin', 'encoder-xlmr-safetensors', 'train-step-unified']));
  });

  test.each(goldenDirs.map((d) => [path.basename(path.dirname(d)), d]))('golden %s: encoder matches config.json, heads are Linear(hidden → ·)', (_, dir) => {
    const cfg = readJson(dir, 'config.json');
    const w = readModelWeights(dir);
    const d = cfg.hidden_size;
    expect(w.encoder.get('embeddings.word_embeddings.weight')?.shape).toEqual([cfg.vocab_size, d]);
    expect(w.encoder.get('embeddings.position_embeddings.weight')?.shape).toEqual([cfg.max_position_embeddings, d]);
    for (let i = 0; i < cfg.num_hidden_layers; i++) expect(w.encoder.get(`encoder.layer.${i}.intermediate.dense.weight`)?.shape).toEqual([cfg.intermediate_size, d]);
    expect([...w.encoder.keys()].every((k) => /^(embeddings|encoder|pooler)\./.test(k))).toBe(true);
    expect(w.extra.size).toBe(0);
    expect([...w.heads.keys()].sort()).toEqual(['colbert_linear.bias', 'colbert_linear.weight', 'sparse_linear.bias', 'sparse_linear.weight']);
    expect(w.heads.get('colbert_linear.weight')?.shape[1]).toBe(d);
    expect(w.heads.get('sparse_linear.weight')?.shape).toEqual([1, d]);
    for (const t of [...w.encoder.values(), ...w.heads.values()]) expect(t.data.every(Number.isFinite)).toBe(true);
  });

  test('which files each golden dir is read from; float16 heads are widened', () => {
    expect(readModelWeights(sharedDir('golden', 'encoder-bert-bin', 'model')).files).toEqual(['pytorch_model.bin', 'colbert_linear.pt', 'sparse_linear.pt']);
    const x = readModelWeights(sharedDir('golden', 'encoder-xlmr-safetensors', 'model'));
    expect(x.files).toEqual(['model.safetensors', 'colbert_linear.pt', 'sparse_linear.pt']);
    expect(x.heads.get('colbert_linear.weight')!.data.every((v) => halfToFloat(floatToHalf(v)) === v)).toBe(true);
    const u = readModelWeights(sharedDir('golden', 'train-step-unified', 'model'));
    expect(u.files).toEqual(['model.safetensors', 'colbert_linear.safetensors', 'sparse_linear.safetensors']);
    expectSameTensors(new Map([['weight', u.heads.get('colbert_linear.weight')!], ['bias', u.heads.get('colbert_linear.bias')!]]), readSafetensors(sharedDir('golden', 'train-step-unified', 'model', 'colbert_linear.safetensors')));
  });

  test('the tiny HF BERT: encoder only, no heads', () => {
    const w = readModelWeights(TINY);
    expect(w.encoder.size).toBe(23);
    expect(w.heads.size).toBe(0);
    expect(w.extra.size).toBe(0);
    expect(w.files).toEqual(['model.safetensors']);
  });

  test('architecture prefixes are stripped; MLM heads and int buffers go to extra (RetroMAE weights)', async () => {
    const dir = mkdir('retromae');
    fs.copyFileSync(sharedDir('golden', 'retromae', 'retromae.safetensors'), path.join(dir, 'model.safetensors'));
    const w = readModelWeights(dir);
    const all = readSafetensors(path.join(dir, 'model.safetensors'));
    expect([...w.encoder.keys()].sort()).toEqual([...all.keys()].filter((k) => k.startsWith('roberta.')).map((k) => k.slice(8)).sort());
    expect([...w.extra.keys()].every((k) => k.startsWith('lm_head.') || k.startsWith('c_head.'))).toBe(true);
    expect(w.encoder.size + w.extra.size).toBe(all.size);

    const bert = mkdir('bert-prefixed');
    writeSafetensors(path.join(bert, 'model.safetensors'), new Map<string, HostTensor>([
      ['bert.embeddings.word_embeddings.weight', f32([4, 2])], ['bert.embeddings.position_ids', { dtype: 'int32', shape: [1, 3], data: Int32Array.from([0, 1, 2]) }],
      ['cls.predictions.bias', f32([4])], ['model.encoder.layer.0.output.dense.bias', f32([2])], ['modelx.encoder.w', f32([1])],
    ]));
    const b = readModelWeights(bert);
    expect([...b.encoder.keys()].sort()).toEqual(['embeddings.word_embeddings.weight', 'encoder.layer.0.output.dense.bias']);
    expect([...b.extra.keys()].sort()).toEqual(['bert.embeddings.position_ids', 'cls.predictions.bias', 'modelx.encoder.w']);

    const dup = mkdir('dup');
    writeSafetensors(path.join(dup, 'model.safetensors'), new Map([['bert.pooler.dense.bias', f32([2])], ['pooler.dense.bias', f32([2])]]));
    expect(await message(() => readModelWeights(dup))).toBe(`${dup}: 'pooler.dense.bias' appears twice in model.safetensors (with and without an architecture prefix)`);
  });

  test('sharded safetensors and sharded pytorch_model.bin through their index files', async () => {
    const full = readSafetensors(path.join(TINY, 'model.safetensors'));
    const names = [...full.keys()];
    const shard = (pick: (i: number) => boolean): TensorMap => new Map(names.filter((_, i) => pick(i)).map((n) => [n, full.get(n)!]));
    const st = mkdir('sharded-st');
    writeSafetensors(path.join(st, 'model-00001-of-00002.safetensors'), shard((i) => i % 2 === 0), { floatDtype: 'F32' });
    writeSafetensors(path.join(st, 'model-00002-of-00002.safetensors'), shard((i) => i % 2 === 1));
    const weightMap = Object.fromEntries(names.map((n, i) => [n, `model-0000${1 + (i % 2)}-of-00002.safetensors`]));
    fs.writeFileSync(path.join(st, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    const w = readModelWeights(st);
    expectSameTensors(w.encoder, full);
    expect(w.files).toEqual(['model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);

    const bin = mkdir('sharded-bin');
    writeTorchStateDict(path.join(bin, 'pytorch_model-00001-of-00002.bin'), shard((i) => i < 10));
    writeTorchStateDict(path.join(bin, 'pytorch_model-00002-of-00002.bin'), shard((i) => i >= 10));
    fs.writeFileSync(path.join(bin, 'pytorch_model.bin.index.json'), JSON.stringify({ weight_map: Object.fromEntries(names.map((n, i) => [n, `pytorch_model-0000${i < 10 ? 1 : 2}-of-00002.bin`])) }));
    expectSameTensors(readModelWeights(bin).encoder, full);

    const index = path.join(st, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ weight_map: { ...weightMap, 'embeddings.extra': 'model-00001-of-00002.safetensors' } }));
    expect(await message(() => readModelWeights(st))).toBe(`${index}: 'embeddings.extra' is not in model-00001-of-00002.safetensors`);
    fs.writeFileSync(index, JSON.stringify({ weight_map: { a: '../../etc/passwd' } }));
    expect(await message(() => readModelWeights(st))).toBe(`${index}: shard "../../etc/passwd" for 'a' must be a file name in the same dir`);
    fs.writeFileSync(index, JSON.stringify({ weight_map: { a: 'gone.safetensors' } }));
    expect(await message(() => readModelWeights(st))).toBe(`${index}: shard gone.safetensors is missing`);
    fs.writeFileSync(index, '{"weight_map": ');
    expect(await message(() => readModelWeights(st))).toMatch(new RegExp(`^${index}: not valid JSON \\(.+\\)$`));
  });

  test('a dir without weights, a missing dir, heads given twice or with odd tensors', async () => {
    const empty = mkdir('empty');
    fs.writeFileSync(path.join(empty, 'config.json'), '{}');
    expect(await message(() => readModelWeights(empty))).toBe(`${empty}: no model weights (expected model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)`);
    expect(await message(() => readModelWeights(path.join(tmp, 'nope')))).toBe(`${path.join(tmp, 'nope')}: model dir does not exist`);

    const twice = mkdir('twice');
    writeSafetensors(path.join(twice, 'model.safetensors'), new Map([['embeddings.x', f32([2])], ['colbert_linear.weight', f32([2, 2])]]));
    writeTorchStateDict(path.join(twice, 'colbert_linear.pt'), new Map([['weight', f32([2, 2])], ['bias', f32([2])]]));
    expect(await message(() => readModelWeights(twice))).toBe(`${twice}: 'colbert_linear.weight' is in both model.safetensors and colbert_linear.pt`);

    const odd = mkdir('odd');
    writeSafetensors(path.join(odd, 'model.safetensors'), new Map([['embeddings.x', f32([2])]]));
    writeTorchStateDict(path.join(odd, 'sparse_linear.pt'), new Map([['weight', f32([1, 2])], ['scale', f32([1])]]));
    expect(await message(() => readModelWeights(odd))).toBe(`${path.join(odd, 'sparse_linear.pt')}: unexpected tensor 'scale' (a Linear head holds weight and bias)`);
  });
});

describe('writing model dirs', () => {
  const src = sharedDir('golden', 'encoder-xlmr-safetensors', 'model');
  const config = readJson(src, 'config.json');
  const tokenizer = { save: (dir: string) => fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": {}}') };

  test('save → load round-trips every tensor exactly, heads included', async () => {
    const w = readModelWeights(src);
    const out = path.join(tmp, 'out');
    await writeModelDir(out, { config, encoder: w.encoder, heads: w.heads, tokenizer, extraFiles: { 'notes/readme.txt': 'hi', 'raw.bin': new Uint8Array([1, 2]) } });
    const back = readModelWeights(out);
    expectSameTensors(back.encoder, w.encoder);
    expectSameTensors(back.heads, w.heads);
    expect(back.files).toEqual(['model.safetensors', 'colbert_linear.pt', 'sparse_linear.pt']);
    expect(fs.readdirSync(out).sort()).toEqual(['1_Pooling', 'colbert_linear.pt', 'config.json', 'config_sentence_transformers.json', 'model.safetensors', 'modules.json', 'notes', 'raw.bin', 'sentence_bert_config.json', 'sparse_linear.pt', 'tokenizer.json']);
    expect(readJson(out, 'config.json')).toEqual(config);
    expect(fs.readFileSync(path.join(out, 'notes', 'readme.txt'), 'utf8')).toBe('hi');
    expect(readTorchStateDict(path.join(out, 'colbert_linear.pt')).get('weight')?.shape).toEqual([32, 32]);
    expect(readJson(out, 'modules.json').map((m: { type: string; path: string }) => [m.type, m.path])).toEqual([
      ['sentence_transformers.models.Transformer', ''], ['sentence_transformers.models.Pooling', '1_Pooling'], ['sentence_transformers.models.Normalize', '2_Normalize'],
    ]);
    expect(readJson(out, '1_Pooling', 'config.json')).toMatchObject({ word_embedding_dimension: 32, pooling_mode_cls_token: true, pooling_mode_mean_tokens: false });
    expect(readJson(out, 'sentence_bert_config.json')).toEqual({ max_seq_length: 38, do_lower_case: false }); // 40 positions − pad 1 − 1
  });

  test('no heads → no .pt files; normalize false → no Normalize module; BERT keeps all positions', async () => {
    const w = readModelWeights(TINY);
    const out = path.join(tmp, 'plain');
    await writeModelDir(out, { config: readJson(TINY, 'config.json'), encoder: w.encoder, normalize: false });
    expect(fs.existsSync(path.join(out, 'colbert_linear.pt'))).toBe(false);
    expect(readModelWeights(out).heads.size).toBe(0);
    expect(readJson(out, 'modules.json')).toHaveLength(2);
    expect(readJson(out, 'sentence_bert_config.json').max_seq_length).toBe(readJson(TINY, 'config.json').max_position_embeddings);
  });

  test('replacing a dir is atomic: a failed write leaves the old dir intact and no temp files', async () => {
    const w = readModelWeights(src);
    const out = path.join(tmp, 'atomic', 'model');
    await writeModelDir(out, { config, encoder: w.encoder });
    fs.writeFileSync(path.join(out, 'stale.txt'), 'old');
    const failing = { save: () => { throw new UserError('tokenizer exploded'); } };
    expect(await message(() => writeModelDir(out, { config, encoder: w.encoder, tokenizer: failing }))).toBe('tokenizer exploded');
    expect(fs.readdirSync(path.dirname(out))).toEqual(['model']);
    expect(fs.existsSync(path.join(out, 'stale.txt'))).toBe(true);
    await writeModelDir(out, { config, encoder: w.encoder, heads: w.heads });
    expect(fs.existsSync(path.join(out, 'stale.txt'))).toBe(false);
    expect(fs.readdirSync(path.dirname(out))).toEqual(['model']);
    expectSameTensors(readModelWeights(out).heads, w.heads);
  });

  test('bad inputs', async () => {
    const w = readModelWeights(src);
    const out = path.join(tmp, 'bad');
    const half = new Map([...w.heads].filter(([k]) => k !== 'sparse_linear.bias'));
    expect(await message(() => writeModelDir(out, { config, encoder: w.encoder, heads: half }))).toBe('head sparse_linear needs both sparse_linear.weight and sparse_linear.bias');
    expect(await message(() => writeModelDir(out, { config, encoder: w.encoder, heads: new Map([['dense.weight', f32([2])]]) })))
      .toBe("unknown head tensor 'dense.weight' (expected colbert_linear.weight|bias, sparse_linear.weight|bias)");
    expect(await message(() => writeModelDir(out, { config, encoder: w.encoder, extraFiles: { '../escape.txt': 'x' } }))).toBe('extra file path "../escape.txt" must be relative and inside the model dir');
    expect(await message(() => writeModelDir(out, { config, encoder: new Map() }))).toBe(`${out}: no encoder weights to write`);
    expect(fs.existsSync(out)).toBe(false);
  });
});
