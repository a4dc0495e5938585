/**
 * Training data of a stage: prepared dataset dirs are used as they are; raw JSONL inputs are prepared
 * into the cache (or reused when sources, tokenizer and settings match) — spec-default lengths come from
 * the stage config.
 */
import * as fs from 'fs';
import * as path from 'path';
import { prepareOrReuse, PrepareOptions } from '../data';
import { MANIFEST_FILE, readManifest } from '../data/manifest';
import { extendRecord, hubIdOf, TrainingRecord } from '../model/card';
import type { Trained } from './trainer';

export async function stageDatasets(inputs: string[], tokenizerDir: string, opts: PrepareOptions, cacheDir: string): Promise<string[]> {
  const prepared = inputs.filter((p) => fs.existsSync(path.join(p, MANIFEST_FILE)));
  const raw = inputs.filter((p) => !prepared.includes(p));
  const dirs = [...prepared];
  if (raw.length) {
    const r = await prepareOrReuse(raw, tokenizerDir, opts, cacheDir);
    process.stderr.write(`data: ${r.reused ? 'reusing' : 'prepared'} ${r.dir} (${r.manifest.rows} rows)\n`);
    dirs.push(r.dir);
  }
  return dirs;
}

/**
 * The training record of a stage's saved model (its model card's source): the stage, its steps and
 * evaluation, the data files it read with their sha256 (from the datasets' manifests), and `settings`.
 */
export function stageRecord(o: { stage: string; init?: string; license?: string; dirs: string[]; settings: Record<string, unknown>; trained: Trained }): TrainingRecord {
  const sources = o.dirs.flatMap((d) => readManifest(d).sources);
  const data = sources.map((src) => ({ file: path.basename(src.path), sha256: src.sha256, rows: src.rows }));
  const datasets = sources.map((src) => hubIdOf(src.path, 'datasets')).filter((d): d is string => d !== null);
  return extendRecord(o.init, { stage: o.stage, steps: o.trained.steps, data, settings: o.settings, eval: o.trained.eval }, { license: o.license, datasets });
}
