import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse } from 'yaml';
import { loadStageConfig } from '../../src/recipes/stage-config';

const root = path.resolve(__dirname, '../../configs');
const stageFiles = fs.readdirSync(root).flatMap((d) => fs.readdirSync(path.join(root, d)).filter((f) => f.endsWith('.yaml')).map((f) => path.join(root, d, f)))
  .filter((f) => 'stage' in (parse(fs.readFileSync(f, 'utf8')) ?? {}));

describe('shipped configs', () => {
  test('there are paper and tiny stage configs', () => {
    const names = stageFiles.map((f) => path.relative(root, f)).sort();
    expect(names).toEqual(expect.arrayContaining(['paper/stage1-retromae.yaml', 'paper/stage2-pairs.yaml', 'paper/stage3-unified.yaml', 'tiny/pairs.yaml', 'tiny/retromae.yaml', 'tiny/unified.yaml']));
  });

  test.each(stageFiles.map((f) => [path.relative(root, f), f]))('%s validates', (_, f) => {
    const cfg = loadStageConfig(f);
    expect(path.isAbsolute(cfg.output_dir)).toBe(true);
  });

  test('the paper values are what the paper and FlagEmbedding say', () => {
    const s1 = loadStageConfig(path.join(root, 'paper/stage1-retromae.yaml'));
    expect([s1.train.learning_rate, s1.train.grad_accum, s1.train.max_steps, s1.model.extend_positions]).toEqual([7e-5, 16, 20000, 8194]);
    const s2 = loadStageConfig(path.join(root, 'paper/stage2-pairs.yaml'));
    expect(s2.stage === 'pairs' && [s2.train.learning_rate, s2.train.max_steps, s2.data.train_group_size, s2.data.batch_size_by_bucket['0-500']]).toEqual([5e-5, 25000, 1, 700]);
    const s3 = loadStageConfig(path.join(root, 'paper/stage3-unified.yaml'));
    expect(s3.stage === 'unified' && [s3.data.train_group_size, s3.loss.use_self_distill, s3.data.batch_size_by_bucket['7000-inf'], s3.loss.temperature]).toEqual([8, true, 8, 0.02]);
  });

  test('a typo names the file, line, key and the closest valid key', () => {
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-')), 'u.yaml');
    fs.writeFileSync(f, 'stage: unified\noutput_dir: x\nmodel:\n  init: m\ndata:\n  train: [d]\nloss:\n  temprature: 0.05\n');
    expect(() => loadStageConfig(f)).toThrow(`${f}:8: unknown key 'loss.temprature' (did you mean 'loss.temperature'?)`);
    expect(() => loadStageConfig(f.replace('u.yaml', 'none.yaml'))).toThrow(/config file does not exist/);
    fs.writeFileSync(f, 'stage: unifed\n');
    expect(() => loadStageConfig(f)).toThrow(`${f}:1: key 'stage' must be one of retromae, pairs, unified, got "unifed" (did you mean 'unified'?)`);
  });

  test('a key the stage never reads is an error naming the key and the stage', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
    const f = path.join(dir, 'r.yaml');
    const retromae = 'stage: retromae\noutput_dir: x\nmodel:\n  init: m\ndata:\n  train: [d]\n';
    fs.writeFileSync(f, retromae + 'train:\n  sub_batch_size: 4\n');
    expect(() => loadStageConfig(f)).toThrow(`${f}:8: key 'train.sub_batch_size' is not read by stage 'retromae' (only by pairs, unified); remove it`);
    fs.writeFileSync(f, retromae + 'train:\n  fix_encoder: true\n');
    expect(() => loadStageConfig(f)).toThrow(`${f}:8: key 'train.fix_encoder' is not read by stage 'retromae' (only by pairs, unified); remove it`);
    fs.writeFileSync(f, retromae);
    expect(() => loadStageConfig(f, ['model.colbert_dim=64'])).toThrow(`--set model.colbert_dim: key 'model.colbert_dim' is not read by stage 'retromae' (only by pairs, unified); remove it`);
    expect(() => loadStageConfig(f, ['masking.encoder_mlm_probability=0.2'])).not.toThrow();
    const pairs = 'stage: pairs\noutput_dir: x\nmodel:\n  init: m\ndata:\n  train: [d]\n';
    fs.writeFileSync(f, pairs);
    expect(() => loadStageConfig(f, ['masking.decoder_mask_pool=8'])).toThrow(`--set masking.decoder_mask_pool: key 'masking.decoder_mask_pool' is not read by stage 'pairs' (only by retromae); remove it`);
    // defaults the schema fills in are not errors: every section of a parsed config is complete
    const cfg = loadStageConfig(f);
    expect(cfg.stage === 'pairs' && cfg.train.sub_batch_size).toBe(0);
  });

  test('a key whose setting makes it inert is an error saying why', () => {
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-')), 'p.yaml');
    fs.writeFileSync(f, 'stage: pairs\noutput_dir: x\nmodel:\n  init: m\ndata:\n  train: [d]\ntrain:\n  warmup_steps: 10\n  warmup_ratio: 0.2\n');
    expect(() => loadStageConfig(f)).toThrow(`${f}:9: key 'train.warmup_ratio' has no effect in stage 'pairs': train.warmup_steps > 0 sets the warmup; remove it`);
    fs.writeFileSync(f, 'stage: pairs\noutput_dir: x\nmodel:\n  init: m\ndata:\n  train: [d]\n');
    expect(() => loadStageConfig(f, ['loss.ensemble_weights.sparse=0.5'])).toThrow(/key 'loss.ensemble_weights' has no effect in stage 'pairs': loss.unified_finetuning is false/);
    expect(() => loadStageConfig(f, ['eval.modes=[dense]'])).toThrow(/key 'eval.modes' has no effect in stage 'pairs': eval.data is not set/);
    expect(() => loadStageConfig(f, ['train.max_steps=5', 'train.epochs=2'])).toThrow(/key 'train.epochs' has no effect/);
    expect(() => loadStageConfig(f, ['loss.unified_finetuning=true', 'loss.ensemble_weights.sparse=0.5'])).not.toThrow();
    expect(() => loadStageConfig(f, ['model.sparse_init=idf'])).toThrow(/key 'model.sparse_init' has no effect in stage 'pairs': loss.unified_finetuning is false/);
    const idf = loadStageConfig(f, ['loss.unified_finetuning=true', 'model.sparse_init=idf']);
    expect(idf.stage !== 'retromae' && idf.model.sparse_init).toBe('idf');
    expect(() => loadStageConfig(f, ['loss.unified_finetuning=true', 'model.sparse_init=bm25'])).toThrow(/model.sparse_init.*torch, idf/);
    // FlagEmbedding's compute_score mode names are accepted as aliases
    const e = loadStageConfig(f, ['eval.data=nf', 'eval.modes=[dense, colbert+sparse+dense]']);
    expect(e.eval.modes).toEqual(['dense', 'all']);
  });
});
