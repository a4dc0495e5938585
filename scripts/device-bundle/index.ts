/**
 * `npm run bundle:device -- [OUT] [--force] [--offline] [--fetch]`: writes OUT (default .device-bundle/),
 * a self-contained folder (≤ 50 MiB) that runs the project on a Linux x64 machine without Node.js or a
 * package registry — Node.js itself, the project bundled by esbuild, the golden cases, the addon's sources
 * and its build. files/README.txt (copied into OUT) says what is where and how to use it.
 *
 * OUT is written as a temporary sibling and renamed at the end, so a failure leaves nothing half-written.
 * An existing OUT is an error unless it is empty, or is a device bundle and --force is given.
 *   --offline  take Node.js only from npm's cache (the tests)
 *   --fetch    only fetch and prepare Node.js into .cache/device-bundle/ (CI's install step)
 */
import * as fs from 'fs';
import * as path from 'path';
import { bundleNodeGyp, bundleProject, licenceText } from './bundle-js';
import { BundleError, NODE_RUNTIME, nodeRuntime } from './node-runtime';

const ROOT = path.resolve(__dirname, '..', '..');
const FILES = path.join(__dirname, 'files');
const LIMIT_BYTES = 50 * 2 ** 20;
const LAUNCHERS = ['m3', 'bench', 'golden', 'conformance'];

const progress = (msg: string) => process.stderr.write(`device bundle: ${msg}\n`);

function copy(src: string, dst: string, filter: (src: string) => boolean = () => true): void {
  if (!fs.existsSync(src)) throw new BundleError(`${src} not found`);
  fs.cpSync(src, dst, { recursive: true, filter, dereference: true });
}

/** node-gyp as npm ships it (the same search as native/build.js). */
function nodeGypDir(): string {
  const { nodeGypScript } = require(path.join(ROOT, 'native', 'build.js'));
  const script: string | undefined = nodeGypScript();
  if (!script) throw new BundleError('node-gyp not found (npm ships one; is npm installed?)');
  return path.resolve(path.dirname(script), '..');
}

function sharedDir(): string {
  const dir = process.env.M3_SHARED_DIR ?? path.resolve(ROOT, '..', 'shared');
  if (!fs.existsSync(path.join(dir, 'golden'))) throw new BundleError(`${dir}/golden not found (set M3_SHARED_DIR)`);
  return dir;
}

/** Bytes on disk (allocated blocks), as `du` counts them. */
function diskBytes(p: string): number {
  const st = fs.lstatSync(p);
  if (!st.isDirectory()) return st.blocks * 512;
  return fs.readdirSync(p).reduce((sum, f) => sum + diskBytes(path.join(p, f)), st.blocks * 512);
}

const isBundle = (dir: string) => fs.existsSync(path.join(dir, 'lib', 'bundle.js')) && fs.existsSync(path.join(dir, 'm3'));

async function assemble(dir: string, runtime: string): Promise<void> {
  const lib = path.join(dir, 'lib');
  progress('bundling the project with esbuild');
  const packages = await bundleProject(lib);
  const wasm = path.join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/wasm-out');
  for (const f of fs.readdirSync(wasm).filter((f) => f.endsWith('.wasm'))) fs.copyFileSync(path.join(wasm, f), path.join(lib, f));
  // bench dist, train and encode find their PyTorch scripts beside their code
  for (const f of ['dist_torch.py', 'train_torch.py', 'encode_torch.py']) fs.copyFileSync(path.join(ROOT, 'bench', f), path.join(lib, f));
  // jasmine-core lists the folder beside its module at load time (its browser files); in the bundle that is
  // lib/jasmine-core, which holds only its licence
  copy(path.join(ROOT, 'node_modules/jasmine-core/LICENSE'), path.join(lib, 'jasmine-core', 'LICENSE'));
  // `m3 report` embeds chart.js's UMD build, found through require.resolve('chart.js')
  const chart = path.join(ROOT, 'node_modules/chart.js');
  for (const f of ['package.json', 'LICENSE.md', 'dist/chart.cjs', 'dist/chart.umd.js']) copy(path.join(chart, f), path.join(dir, 'node_modules/chart.js', f));
  copy(path.join(FILES, 'launch.sh'), path.join(lib, 'launch.sh'));

  progress('carrying Node.js, the addon sources, node-gyp and the golden cases');
  copy(runtime, path.join(dir, 'node'), (f) => path.basename(f) !== 'integrity');
  const native = path.join(dir, 'native');
  for (const f of ['build.js', 'locate-libtorch.js', 'binding.gyp', 'README.md', 'src']) copy(path.join(ROOT, 'native', f), path.join(native, f));
  copy(path.join(ROOT, 'node_modules/node-addon-api'), path.join(native, 'node_modules/node-addon-api'), (f) => !/[\\/]tools$/.test(f));
  const gyp = nodeGypDir();
  const gypOut = path.join(native, 'node_modules/node-gyp');
  packages.push(...(await bundleNodeGyp(path.join(gyp, 'bin/node-gyp.js'), path.join(gypOut, 'bin/node-gyp.js'))));
  for (const f of ['package.json', 'LICENSE', 'addon.gypi', 'gyp/LICENSE', 'gyp/gyp_main.py']) copy(path.join(gyp, f), path.join(gypOut, f));
  copy(path.join(gyp, 'gyp/pylib'), path.join(gypOut, 'gyp/pylib'), (f) => !/(_test\.py|__pycache__)$/.test(f));
  const shared = sharedDir();
  for (const d of ['golden', 'reference']) copy(path.join(shared, d), path.join(dir, 'shared', d));
  for (const d of ['tiny', 'paper']) copy(path.join(ROOT, 'configs', d), path.join(dir, 'configs', d));
  copy(path.join(ROOT, 'test/helpers/max-rss.js'), path.join(dir, 'test/helpers/max-rss.js')); // bench plan preloads it

  for (const t of LAUNCHERS) {
    fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'bin', `${t}.js`), `#!/usr/bin/env node\n// \`${t}\` in the device bundle: the launcher and the tools' own child processes start this file.\nrequire('../lib/bundle.js').run('${t}');\n`);
  }
  for (const f of [...LAUNCHERS, 'build-addon.sh', 'README.txt']) copy(path.join(FILES, f), path.join(dir, f));
  copy(path.join(ROOT, 'scripts/gpu-check.sh'), path.join(dir, 'gpu-check.sh')); // issue 13's GPU check, run from the bundle
  for (const f of [...LAUNCHERS, 'build-addon.sh', 'gpu-check.sh']) fs.chmodSync(path.join(dir, f), 0o755);
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  // the project finds its root (configs/) by this name
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify({ name: pkg.name, version: pkg.version, private: true, license: pkg.license, description: 'm3-train device bundle (see README.txt)' }, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'THIRD-PARTY-LICENSES.txt'), licenceText(packages));
}

function parseArgs(argv: string[]) {
  const flags = new Set(argv.filter((a) => a.startsWith('--')));
  for (const f of flags) if (!['--force', '--offline', '--fetch'].includes(f)) throw new BundleError(`unknown option ${f} (--force, --offline, --fetch)`);
  const rest = argv.filter((a) => !a.startsWith('--'));
  if (rest.length > 1) throw new BundleError(`one output folder, not ${rest.length}`);
  // npm run starts scripts in the package root; INIT_CWD is where the user typed the command
  const cwd = process.env.INIT_CWD ?? process.cwd();
  return { out: rest[0] ? path.resolve(cwd, rest[0]) : path.join(ROOT, '.device-bundle'), force: flags.has('--force'), offline: flags.has('--offline'), fetch: flags.has('--fetch') };
}

export async function main(argv: string[]): Promise<void> {
  const started = Date.now();
  const { out, force, offline, fetch } = parseArgs(argv);
  const cache = path.join(ROOT, '.cache', 'device-bundle');
  if (fetch) {
    nodeRuntime(cache, offline, progress);
    process.stdout.write(`device bundle: ${NODE_RUNTIME.pkg}@${NODE_RUNTIME.version} ready in ${path.relative(ROOT, cache)}\n`);
    return;
  }
  const existing = fs.existsSync(out) ? fs.readdirSync(out) : null;
  if (existing && existing.length > 0 && !(force && isBundle(out))) {
    throw new BundleError(`${out} exists and is not empty${isBundle(out) ? ' (a device bundle: --force replaces it)' : ''}`);
  }
  const parent = path.dirname(out);
  try {
    fs.mkdirSync(parent, { recursive: true });
    fs.accessSync(parent, fs.constants.W_OK);
  } catch {
    throw new BundleError(`${parent} is not writable`);
  }
  const runtime = nodeRuntime(cache, offline, progress);
  const tmp = fs.mkdtempSync(path.join(parent, `.${path.basename(out)}.tmp-`));
  try {
    await assemble(tmp, runtime);
    const bytes = diskBytes(tmp);
    if (bytes > LIMIT_BYTES) throw new BundleError(`the bundle takes ${(bytes / 2 ** 20).toFixed(1)} MiB on disk, over the 50 MiB limit`);
    fs.chmodSync(tmp, 0o755); // mkdtemp makes it 0700
    if (existing) fs.rmSync(out, { recursive: true, force: true });
    fs.renameSync(tmp, out);
    const cases = fs.readdirSync(path.join(out, 'shared', 'golden')).filter((d) => fs.existsSync(path.join(out, 'shared', 'golden', d, 'case.json'))).length;
    process.stdout.write(`device bundle: ${out} (${(bytes / 2 ** 20).toFixed(1)} MiB on disk; Node.js ${NODE_RUNTIME.version}, ${cases} golden cases) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    const msg = e instanceof BundleError ? e.message : (e as Error).message.split('\n')[0];
    process.stderr.write(`device bundle: error: ${msg}\n`);
    process.exit(1);
  });
}
