import { runCli } from '../helpers/cli';

describe('m3 info', () => {
  test('--json prints exactly one JSON object on stdout', () => {
    const r = runCli(['info', '--json'], { env: { M3_BACKEND: 'auto' } });
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(Object.keys(info.backends).sort()).toEqual(['cpu', 'tensorflow', 'torch', 'wasm']);
    expect(info.backends.wasm.available).toBe(true);
    expect(info.backends.tensorflow.experimental).toBe(true);
    expect(info.backends[info.selected].available).toBe(true);
    expect(r.stdout + r.stderr).not.toMatch(/Hi, looks like/); // TF.js's install banner is suppressed
  });

  test('an unknown backend is a one-line error', () => {
    const r = runCli(['info', '--backend', 'tpu']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe("m3: error: unknown backend 'tpu' (choose one of auto, torch, tensorflow, wasm, cpu)");
  });

  test('--help shows examples', () => {
    const r = runCli(['encode', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Examples:/);
  });
});
