'use strict';
// `npm install` hook: builds the libtorch addon when libtorch is present. The build is optional: whatever
// happens, this prints at most one line about it and exits 0, and the framework falls back to wasm.
//   LIBTORCH_DIR=/path/to/libtorch   use that libtorch instead of the system's
//   M3_TORCH_SKIP=1                  do not build
//   M3_TORCH_REBUILD=1               rebuild even when the addon is newer than its sources
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { locate } = require('./locate-libtorch');

const here = __dirname;
const output = path.join(here, 'build', 'Release', 'm3_torch.node');

function say(line) {
  process.stdout.write(`m3 torch addon: ${line}\n`);
}

function nodeGypScript() {
  const tries = [
    process.env.npm_config_node_gyp, // npm points lifecycle scripts at its bundled node-gyp
    (() => { try { return require.resolve('node-gyp/bin/node-gyp.js'); } catch { return undefined; } })(),
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return tries.find((p) => p && fs.existsSync(p));
}

// node-gyp cannot download Node's headers here (no network), so it must be told where they are: the
// prefix Node itself is installed under (/usr for Debian's nodejs, ~/.nvm/... for nvm) has include/node.
function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function upToDate(lib) {
  if (process.env.M3_TORCH_REBUILD || !fs.existsSync(output)) return false;
  const built = fs.statSync(output).mtimeMs;
  const sources = fs.readdirSync(path.join(here, 'src')).map((f) => path.join(here, 'src', f));
  const inputs = [...sources, path.join(here, 'binding.gyp'), path.join(here, 'locate-libtorch.js'), path.join(lib, 'libtorch_cpu.so')];
  return inputs.every((f) => fs.existsSync(f) && fs.statSync(f).mtimeMs < built);
}

function main() {
  if (process.env.M3_TORCH_SKIP) return say('skipped (M3_TORCH_SKIP is set)');
  const found = locate();
  if (!found) return say('libtorch not found (install libtorch-dev or set LIBTORCH_DIR); the torch backend is disabled');
  if (upToDate(found.lib)) return say(`up to date (${output})`);
  const gyp = nodeGypScript();
  if (!gyp) return say('node-gyp not found; the torch backend is disabled');
  const args = [gyp, 'rebuild', '--release'];
  const dir = nodeDir();
  if (dir) args.push(`--nodedir=${dir}`);
  const started = Date.now();
  const r = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8', env: process.env });
  if (r.status !== 0) {
    const log = path.join(here, 'build', 'build-error.log'); // native/build/ is git-ignored
    fs.mkdirSync(path.dirname(log), { recursive: true });
    fs.writeFileSync(log, `${r.stdout ?? ''}\n${r.stderr ?? ''}\n${r.error ?? ''}`);
    return say(`build failed (see ${log}); the torch backend is disabled`);
  }
  say(`built against ${found.lib} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

try {
  main();
} catch (e) {
  say(`build skipped: ${e.message.split('\n')[0]}`);
}
