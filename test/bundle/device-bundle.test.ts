/**
 * The device bundle (`npm run bundle:device -- OUT`, issue 13): built once into a temp dir, then copied into
 * an empty directory and run there with no Node.js reachable — a clean environment whose PATH is a folder of
 * links to this machine's tools minus node, npm, npx and corepack. There: `./m3 info`, `./m3 encode`, the
 * golden cases on wasm and, where libtorch is installed, `./build-addon.sh` (with no `make` on PATH, so
 * through native/build.js's direct g++ path), the golden cases on torch, and the bundle's own node-gyp
 * configuring the addon. Node.js comes from npm's cache when it is there (CI fetches it at install time with
 * `npm run bundle:device -- --fetch`), else from the npm registry, once per machine.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { sharedDir } from '../helpers/shared';

const ROOT = path.resolve(__dirname, '../..');
const { locate } = require('../../native/locate-libtorch');
const libtorch = locate() !== null;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-device-bundle-'));
const built = path.join(tmp, 'built');
const bundle = path.join(tmp, 'elsewhere', 'bundle');
const tools = path.join(tmp, 'tools');

function bundleDevice(args: string[]) {
  return spawnSync(process.execPath, ['-r', path.join(ROOT, 'bin/register.js'), path.join(ROOT, 'scripts/device-bundle/index.ts'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 600_000 });
}

/** PATH for the copy: links to every command here except Node.js and its package managers (and `make`). */
function toolDir(): void {
  fs.mkdirSync(tools);
  for (const dir of ['/usr/local/bin', '/usr/bin', '/bin']) {
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir)) {
      if (/^(node|nodejs|npm|npx|corepack|make)$/.test(name) || fs.existsSync(path.join(tools, name))) continue;
      fs.symlinkSync(path.join(dir, name), path.join(tools, name));
    }
  }
}

/** Runs a command in the copied bundle with a clean environment. */
function inBundle(cmd: string, args: string[] = [], timeoutMs = 300_000) {
  const r = spawnSync(cmd, args, { cwd: bundle, encoding: 'utf8', timeout: timeoutMs, env: { PATH: tools, HOME: tmp, M3_PROGRESS: '0' } });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

const goldenCases = fs.readdirSync(sharedDir('golden')).filter((d) => fs.existsSync(sharedDir('golden', d, 'case.json')));

beforeAll(() => {
  const r = bundleDevice([built]);
  if (r.status !== 0) throw new Error(`bundle:device failed: ${r.stderr.trim()}`);
  expect(r.stdout).toMatch(/^device bundle: .* \([\d.]+ MiB on disk; Node\.js 20\.\d+\.\d+, \d+ golden cases\) in \d+ s\n$/);
  fs.mkdirSync(path.dirname(bundle));
  fs.cpSync(built, bundle, { recursive: true }); // an empty directory elsewhere: nothing may point back
  toolDir();
}, 600_000);

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('device bundle', () => {
  test('is at most 50 MiB on disk and carries Node.js, its headers, the golden cases and the addon build', () => {
    const du = spawnSync('du', ['-sk', built], { encoding: 'utf8' });
    expect(Number(du.stdout.split('\t')[0])).toBeLessThanOrEqual(50 * 1024);
    for (const f of ['m3', 'bench', 'golden', 'conformance', 'build-addon.sh', 'gpu-check.sh', 'README.txt', 'THIRD-PARTY-LICENSES.txt', 'node/bin/node.xz', 'node/LICENSE',
      'node/include/node/node_api.h', 'lib/bundle.js', 'lib/tokenize-worker.js', 'lib/tfjs-backend-wasm-simd.wasm', 'native/build.js', 'native/src/addon.cc',
      'native/node_modules/node-addon-api/napi.h', 'native/node_modules/node-gyp/bin/node-gyp.js', 'native/node_modules/node-gyp/gyp/gyp_main.py',
      'shared/reference/bench_torch.py', ...goldenCases.map((c) => `shared/golden/${c}/case.json`)]) {
      expect([f, fs.existsSync(path.join(built, f))]).toEqual([f, true]);
    }
    expect(fs.existsSync(path.join(built, 'node/bin/node'))).toBe(false); // unpacked on first use
  });

  test('bad output folders are refused in one line, with nothing written', () => {
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, '');
    const r1 = bundleDevice([path.join(file, 'out'), '--offline']);
    expect([r1.status, r1.stderr]).toEqual([1, `device bundle: error: ${file} is not writable\n`]);
    const r2 = bundleDevice([built, '--offline']);
    expect([r2.status, r2.stderr]).toEqual([1, `device bundle: error: ${built} exists and is not empty (a device bundle: --force replaces it)\n`]);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  test('the copy runs with no Node.js on PATH: m3 info unpacks Node.js and lists wasm', () => {
    expect(inBundle('sh', ['-c', 'command -v node npm npx || echo none']).stdout).toBe('none\n');
    const r = inBundle('./m3', ['info', '--json']);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).backends.wasm.available).toBe(true);
    expect(fs.statSync(path.join(bundle, 'node/bin/node')).mode & 0o111).toBeTruthy();
  });

  test('m3 encode: one normalised dense vector per line', () => {
    const input = path.join(tmp, 'texts.jsonl');
    const out = path.join(tmp, 'vectors.jsonl');
    fs.writeFileSync(input, '{"text": "paris is the capital of france"}\n{"text": "berlin"}\n');
    const r = inBundle('./m3', ['encode', '--backend', 'wasm', '--model', sharedDir('data/models/lightning-ir-tiny-bert'), '--input', input, '--output', out]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const rows = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(2);
    for (const row of rows) expect(Math.hypot(...row.dense)).toBeCloseTo(1, 5);
  });

  test('the golden cases pass on wasm', () => {
    const r = inBundle('./golden', ['--backend', 'wasm', '--json']);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.case, l.backend, l.ok, l.error])).toEqual(goldenCases.sort().map((c) => [c, 'wasm', true, undefined]));
    expect(r.code).toBe(0);
  });

  if (!libtorch) {
    test('without libtorch, build-addon.sh says so and fails', () => {
      const r = inBundle('./build-addon.sh');
      expect(r.stdout).toMatch(/^m3 torch addon: libtorch not found/);
      expect(r.code).toBe(1);
    });
    return;
  }

  test('build-addon.sh builds the addon with g++ directly (no make on PATH), and the golden cases pass on torch', () => {
    const r = inBundle('./build-addon.sh', [], 900_000);
    expect(r.stdout).toMatch(/^m3 torch addon: built against \S+ \(.*\) with g\+\+ directly in \d+ s\n$/);
    expect(r.code).toBe(0);
    const g = inBundle('./golden', ['--backend', 'torch', '--json']);
    const lines = g.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.case, l.backend, l.ok, l.error])).toEqual(goldenCases.sort().map((c) => [c, 'torch', true, undefined]));
    expect(g.code).toBe(0);
  }, 900_000);

  test("the bundle's node-gyp configures the addon with the bundle's Node.js and headers", () => {
    const r = inBundle('bash', ['-c', '. lib/launch.sh && cd native && "$NODE" node_modules/node-gyp/bin/node-gyp.js configure --nodedir="$M3_HOME/node"']);
    expect(r.stderr).toMatch(/gyp info ok/);
    expect(fs.readFileSync(path.join(bundle, 'native/build/m3_torch.target.mk'), 'utf8')).toMatch(/-ltorch_cpu/);
  });
});
