/**
 * Helpers of the memory-bound test. `writeLargeDataset` writes a prepared dataset of synthetic token ids
 * straight through the Arrow chunk writer (tokenizing 200 MB would take minutes); run as a script
 * (`node --expose-gc -r bin/register.js memory-child.ts DIR`) it reads one epoch in a fresh process and
 * prints the peak of heap + arrayBuffers measured after garbage collection, as one JSON line.
 */
import * as fs from 'fs';
import * as path from 'path';
import { openArrowWriter, pairChunkBuilder } from '../../src/data/arrow';
import { FORMAT_NAME, FORMAT_VERSION, Manifest, MANIFEST_FILE } from '../../src/data/manifest';
import { openDataset } from '../../src/data/reader';

export async function writeLargeDataset(dir: string, targetBytes: number): Promise<{ rows: number; bytes: number }> {
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  let seed = 12345;
  const ids = (n: number) => {
    const a = new Int32Array(n);
    a[0] = 101;
    for (let i = 1; i < n - 1; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      a[i] = 1000 + (seed % 29000);
    }
    a[n - 1] = 102;
    return a;
  };
  const perRow = (32 + 8 * 200) * 4;
  const rowsPerFile = Math.ceil(targetBytes / perRow / 2);
  const manifest: Manifest = {
    format: FORMAT_NAME, formatVersion: FORMAT_VERSION, kind: 'finetune', createdAt: new Date().toISOString(), rows: 0,
    tokenizer: { fingerprint: 'synthetic', vocabSize: 30522, clsId: 101, sepId: 102, padId: 0 },
    maxLengths: { query: 32, passage: 200 },
    options: { smallThreshold: 0, dropThreshold: 0, keepText: false, queryInstruction: null, queryInstructionFormat: '{}{}' },
    sources: [], datasets: [], skipped: {}, tokens: 0,
  };
  let bytes = 0;
  for (let f = 0; f < 2; f++) {
    const rel = `data/000${f}-synthetic_len-0-500.arrow`;
    const w = openArrowWriter(path.join(dir, rel));
    let b = pairChunkBuilder(false);
    for (let r = 0; r < rowsPerFile; r++) {
      b.append({ query: ids(32), pos: [ids(200)], neg: Array.from({ length: 7 }, () => ids(200)), posScores: [1], negScores: [0, 0, 0, 0, 0, 0, 0] });
      if (b.ids >= 256 * 1024) {
        w.write(b.finish());
        b = pairChunkBuilder(false);
      }
    }
    if (b.rows) w.write(b.finish());
    await w.close();
    bytes += fs.statSync(path.join(dir, rel)).size;
    manifest.sources.push({ path: `synthetic-${f}`, size: 0, sha256: '', rows: rowsPerFile, skipped: {}, buckets: { '0-500': rowsPerFile } });
    manifest.datasets.push({
      name: `synthetic/${f}`, sources: [f], type: null, noInBatchNeg: false, batchSize: null, trainGroupSize: null, hasScores: true, minNeg: 7,
      rows: rowsPerFile, buckets: { '0-500': [{ file: rel, source: f, rows: rowsPerFile, chunks: [...w.chunks] }] },
    });
  }
  manifest.rows = 2 * rowsPerFile;
  fs.writeFileSync(path.join(dir, MANIFEST_FILE), JSON.stringify(manifest));
  return { rows: manifest.rows, bytes };
}

async function readEpoch(dir: string): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const live = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  gc();
  const baseline = live();
  let peak = baseline;
  let rawPeak = 0;
  const reader = await openDataset(dir, { seed: 1, batchSize: 32, trainGroupSize: 8 });
  let rows = 0;
  let batches = 0;
  for await (const b of reader.epoch()) {
    rows += b.size;
    rawPeak = Math.max(rawPeak, live());
    if (++batches % 10 === 0) {
      gc();
      peak = Math.max(peak, live());
    }
  }
  gc();
  peak = Math.max(peak, live());
  await reader.close();
  process.stdout.write(JSON.stringify({ rows, batches, baseline, peak, rawPeak, chunksRead: reader.stats().chunksRead }) + '\n');
}

if (require.main === module) {
  readEpoch(process.argv[2]).catch((e) => {
    process.stderr.write(String(e?.stack ?? e) + '\n');
    process.exit(1);
  });
}
