/**
 * The data check `m3 train` runs on start: the cheap part of `m3 data check` over the stage's raw JSONL
 * inputs (prepared dataset dirs are past checking), with leakage into the evaluation split of the BEIR folders
 * in `eval.data`, as one line on stderr. The tokenizer pass (`truncated`) is left out: on the demo's
 * unified data it took 3-8 s where the rest took 0.5 s. It only warns: what would stop training stops the
 * data preparation right after, with its own error.
 */
import * as fs from 'fs';
import * as path from 'path';
import { checkSummary, checkTrainingData } from '../data/check';
import { MANIFEST_FILE } from '../data/manifest';
import { loadBeirQueries } from '../eval/data';
import { StageConfig } from './stage-config';

/** The summary line for `cfg`'s training data, or null when it has no raw JSONL inputs. */
export async function stageDataCheck(cfg: StageConfig): Promise<string | null> {
  const raw = cfg.data.train.filter((p) => !fs.existsSync(path.join(p, MANIFEST_FILE)));
  if (!raw.length) return null;
  const pretrain = cfg.stage === 'retromae';
  // the judged queries of every BEIR folder in eval.data (other layouts are not read here: their files can be large)
  const beirDirs = (cfg.eval.data ?? []).filter((d) => fs.existsSync(path.join(d, 'queries.jsonl')) && fs.existsSync(path.join(d, 'qrels', `${cfg.eval.split}.tsv`)));
  const evalQueries = new Map(beirDirs.flatMap((d) => [...loadBeirQueries(d, cfg.eval.split)].map(([id, q]) => [beirDirs.length > 1 ? `${path.basename(d)}:${id}` : id, q] as const)));
  const c = await checkTrainingData(raw, {
    format: pretrain ? 'pretrain' : cfg.stage === 'pairs' ? 'pairs' : 'finetune',
    groupSize: pretrain ? undefined : cfg.data.train_group_size,
    evalQueries: !pretrain && beirDirs.length ? evalQueries : undefined,
    skipInvalid: cfg.data.skip_invalid,
    progress: false,
  });
  const unscored = !pretrain && cfg.data.knowledge_distillation && c.scoredRows < c.rows
    ? `; data.knowledge_distillation is on but ${c.rows - c.scoredRows} of ${c.rows} rows have no teacher scores (their batches train without distillation)`
    : '';
  return checkSummary(c) + unscored;
}
