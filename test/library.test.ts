/**
 * The library entry point as a user gets it: build, `npm pack`, install the tarball into an empty app
 * (dependencies from the npm cache, install scripts off, so the backend is wasm) and run the README's
 * "Use as a library" example there; its score must equal the one computed here from src/.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useBackend } from '../src/backend';
import { encode } from '../src/model/flag';
import { loadModel } from '../src/model/m3';
import { TINY_BERT } from './eval/fixtures';

const ROOT = path.resolve(__dirname, '..');

function readmeExample(): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Use as a library'));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('README: no js example under "Use as a library"');
  return m[1];
}

test('the README example runs from a packed install and gives the score src/ gives', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-lib-'));
  const pkg = path.join(tmp, 'pkg');
  fs.mkdirSync(pkg);
  const packageJson = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  // a copy of what `files` ships, compiled there, so the repo's own dist/ is never touched mid-suite
  for (const f of [...packageJson.files.filter((f: string) => !f.startsWith('dist')), 'package.json', 'tsconfig.json', 'tsconfig.build.json', 'src']) {
    fs.cpSync(path.join(ROOT, f), path.join(pkg, f), { recursive: true });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: pkg, stdio: 'pipe' });
  expect(fs.existsSync(path.join(pkg, 'dist/src/index.d.ts'))).toBe(true);
  const tgz = execFileSync('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', tmp], { cwd: pkg, encoding: 'utf8' }).trim().split('\n').pop()!;

  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
  execFileSync('npm', ['install', path.join(tmp, tgz), '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, stdio: 'pipe' });
  fs.writeFileSync(path.join(app, 'example.js'), readmeExample());
  const out = execFileSync(process.execPath, ['example.js'], { cwd: app, encoding: 'utf8', env: { ...process.env, M3_MODEL: TINY_BERT, M3_BACKEND: 'wasm' }, stdio: ['ignore', 'pipe', 'pipe'] });

  await useBackend('wasm');
  const model = loadModel(TINY_BERT);
  const { dense_vecs } = await encode(model, ['what is BGE M3?', 'BGE M3 is an embedding model'], { max_length: 64 });
  const [q, p] = dense_vecs!;
  expect(Number(out.trim())).toBeCloseTo(q.reduce((s, x, i) => s + x * p[i], 0), 5);
  // the types ship too
  expect(fs.readFileSync(path.join(app, 'node_modules/m3-train/dist/src/index.d.ts'), 'utf8')).toMatch(/export \{ computeScore, encode \}/);
  fs.rmSync(tmp, { recursive: true, force: true });
}, 300_000);
