import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { tmpDir } from './helpers';
import { writeLargeDataset } from './memory-child';

const ROOT = path.resolve(__dirname, '../..');

test('reading a ≥ 200 MB prepared dataset keeps heap + arrayBuffers under 64 MB', async () => {
  const dir = tmpDir('m3-mem-');
  try {
    const { rows, bytes } = await writeLargeDataset(dir, 210e6);
    expect(bytes).toBeGreaterThanOrEqual(200e6);
    // a fresh process, so the measurement holds only the reader (and a hard heap cap as a second guard)
    const child = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=96', '-r', path.join(ROOT, 'bin/register.js'), path.join(__dirname, 'memory-child.ts'), dir], {
      encoding: 'utf8', timeout: 120_000,
    });
    expect(child.stderr).toBe('');
    expect(child.status).toBe(0);
    const r = JSON.parse(child.stdout.trim());
    expect(r.rows).toBe(Math.floor(rows / 2 / 32) * 32 * 2);
    expect(r.chunksRead).toBeGreaterThan(100);
    process.stdout.write(`memory test: ${(bytes / 1e6).toFixed(0)} MB read, peak heap+arrayBuffers ${(r.peak / 2 ** 20).toFixed(1)} MiB after GC (baseline ${(r.baseline / 2 ** 20).toFixed(1)}, highest seen without GC ${(r.rawPeak / 2 ** 20).toFixed(1)})\n`);
    expect(r.peak).toBeLessThan(64 * 2 ** 20);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
