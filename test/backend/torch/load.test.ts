import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { loadTorchBackend } from '../../../src/backend/torch';
import { ADDON_PATH } from '../../../src/backend/torch/addon';
import { libtorchInstalled, loaded } from './setup';

describe('loadTorchBackend', () => {
  test('loads exactly when libtorch is installed (and the install built the addon), else says why', () => {
    if (libtorchInstalled) {
      expect(loaded).toEqual({ ok: true });
      expect(fs.existsSync(ADDON_PATH)).toBe(true);
    } else {
      expect(loaded.ok).toBe(false);
      expect((loaded as { reason: string }).reason).toMatch(/addon not built|libtorch/);
    }
  });

  test('is idempotent and never throws, also for cuda', () => {
    expect(loadTorchBackend('cpu')).toEqual(loaded);
    const cuda = loadTorchBackend('cuda');
    // The torch backend is registered once, on one device; this checkout's libtorch is CPU-only.
    expect(cuda.ok).toBe(false);
    expect((cuda as { reason: string }).reason).toMatch(/\S/);
  });

  test('the install-time build is optional: it prints one line and exits 0 when it does not build', () => {
    const r = spawnSync(process.execPath, [path.resolve(__dirname, '../../../native/build.js')], { env: { ...process.env, M3_TORCH_SKIP: '1' }, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['m3 torch addon: skipped (M3_TORCH_SKIP is set)']);
  });

  test('without libtorch, the install line names the Debian packages and the PyTorch route (and builds nothing)', () => {
    // M3_LIBTORCH_FOUND is locate()'s answer handed down by build.js; "null" is "nothing found".
    const r = spawnSync(process.execPath, [path.resolve(__dirname, '../../../native/build.js')], { env: { ...process.env, M3_LIBTORCH_FOUND: 'null', M3_TORCH_REBUILD: '1' }, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^m3 torch addon: libtorch not found, so the torch backend is disabled and m3 runs on wasm/);
    for (const part of ['apt-get install libtorch-dev libopenblas0-pthread', 'libgloo-dev', 'pip install torch', 'npm run build:native', 'LIBTORCH_DIR=']) expect(lines[0]).toContain(part);
    if (libtorchInstalled) expect(fs.existsSync(ADDON_PATH)).toBe(true); // a rebuild request without libtorch leaves the addon alone
  });

  (loaded.ok ? test : test.skip)('registers a backend named torch that TF.js can select', async () => {
    expect(tf.findBackendFactory('torch')).toBeDefined();
    expect(await tf.setBackend('torch')).toBe(true);
    expect(tf.getBackend()).toBe('torch');
    const y = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[0.5, -1], [2, 0.25]]), false, true);
    expect(Array.from(y.dataSync())).toEqual([-1.5, 2.5, -2.5, 7]);
    y.dispose();
  });
});
