/**
 * The data check `m3 train` prints on start (recipes/stage-check): one line over the stage's raw JSONL, with
 * the stage's format and group size, leakage into its BEIR evaluation split, a note when distillation is on
 * but rows lack teacher scores; nothing for prepared dataset dirs.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FinetuneConfig } from '../../src/finetune/config';
import { stageDataCheck } from '../../src/recipes/stage-check';
import { loadStageConfig } from '../../src/recipes/stage-config';
import { tmpDir, writeJsonl } from '../data/helpers';

const TINY = path.resolve(__dirname, '../../configs/tiny');

function beir(dir: string): string {
  writeJsonl(path.join(dir, 'queries.jsonl'), [{ _id: 'd1', text: 'Is coffee bad?' }]);
  fs.mkdirSync(path.join(dir, 'qrels'));
  fs.writeFileSync(path.join(dir, 'qrels/dev.tsv'), 'query-id\tcorpus-id\tscore\nd1\tdoc1\t1\n');
  return dir;
}

test('unified: the stage group size, leakage into eval.data, and the distillation note in one line', async () => {
  const dir = tmpDir();
  const file = writeJsonl(path.join(dir, 'train.jsonl'), [
    { query: 'is coffee bad', pos: ['p'], neg: ['a', 'b', 'c'] },
    { query: 'Is coffee bad', pos: ['q'], neg: ['a', 'b'], pos_scores: [1], neg_scores: [0, 0] },
  ]);
  const cfg = loadStageConfig(path.join(TINY, 'unified.yaml'), [`data.train=[${file}]`, `eval.data=${beir(path.join(dir, 'beir'))}`]) as FinetuneConfig;
  expect(cfg.data.train_group_size).toBe(4);
  expect(await stageDataCheck(cfg)).toBe(`data: checked 2 rows in 1 file: duplicate_queries 1, short_groups 1, leakage 2 (details: m3 data check --input ${file})`);
  cfg.data.knowledge_distillation = true;
  expect(await stageDataCheck(cfg)).toMatch(/leakage 2 \(details: .*\); data.knowledge_distillation is on but 1 of 2 rows have no teacher scores \(their batches train without distillation\)$/);
  cfg.eval.data = undefined;
  cfg.data.train_group_size = 3;
  expect(await stageDataCheck(cfg)).toMatch(/: duplicate_queries 1 \(details/);
});

test('pairs and retromae stages check in their own format; prepared dataset dirs are not checked', async () => {
  const pairs = loadStageConfig(path.join(TINY, 'pairs.yaml'));
  expect(await stageDataCheck(pairs)).toBe('data: checked 10 rows in 1 file: no problems found');
  const retromae = loadStageConfig(path.join(TINY, 'retromae.yaml'));
  expect(await stageDataCheck(retromae)).toBe('data: checked 20 rows in 2 files: no problems found');
  const prepared = tmpDir();
  fs.writeFileSync(path.join(prepared, 'manifest.json'), '{}');
  pairs.data.train = [prepared];
  expect(await stageDataCheck(pairs)).toBeNull();
});
