/**
 * Training data of a stage: prepared dataset dirs are used as they are; raw JSONL inputs are prepared
 * into the cache (or reused when sources, tokenizer and settings match) — spec-default lengths come from
 * the stage config.
 */
import * as fs from 'fs';
import * as path from 'path';
import { prepareOrReuse, PrepareOptions } from '../data';
import { MANIFEST_FILE } from '../data/manifest';

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
