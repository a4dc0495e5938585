import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse } from 'yaml';
import { loadStageConfig } from '../../src/train/stage-config';

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
});
