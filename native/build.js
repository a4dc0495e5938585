'use strict';
// `npm install` hook (and the device bundle's build-addon.sh): builds the libtorch addon when libtorch is
// present. The build is optional: whatever happens, this prints one line about it and exits 0, and the
// framework falls back to wasm.
//   LIBTORCH_DIR=/path/to/libtorch   use that libtorch (else a PyTorch install, else the system's; see
//                                    locate-libtorch.js)
//   M3_TORCH_SKIP=1                  do not build
//   M3_TORCH_REBUILD=1               rebuild even when the addon is newer than its sources
//   M3_TORCH_DIRECT=1                compile with g++ directly instead of node-gyp (the default when `make`
//                                    or node-gyp is missing): the same flags, two translation units in parallel
// A build with c10d's collectives (Gloo/NCCL) that fails is retried once without them: the core addon
// matters more than data parallelism.
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const { locate, buildFlags, INSTALL_HINT } = require('./locate-libtorch');

const here = __dirname;
const release = path.join(here, 'build', 'Release');
const output = path.join(release, 'm3_torch.node');
const SOURCES = ['src/addon.cc', 'src/dist.cc', 'src/adamw.cc', 'src/gemm.cc', 'src/layer.cc'];

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

const onPath = (cmd) => (process.env.PATH ?? '').split(path.delimiter).some((d) => {
  try {
    fs.accessSync(path.join(d, cmd), fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
});

function upToDate(found) {
  if (process.env.M3_TORCH_REBUILD || !fs.existsSync(output)) return false;
  const built = fs.statSync(output).mtimeMs;
  const sources = fs.readdirSync(path.join(here, 'src')).map((f) => path.join(here, 'src', f));
  const inputs = [...sources, __filename, path.join(here, 'binding.gyp'), path.join(here, 'locate-libtorch.js'), path.join(found.lib, 'libtorch_cpu.so')];
  return inputs.every((f) => fs.existsSync(f) && fs.statSync(f).mtimeMs < built);
}

/** Runs a command to completion: { ok, log }. */
function run(cmd, args, env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: here, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = `$ ${cmd} ${args.join(' ')}\n`;
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    child.on('error', (e) => resolve({ ok: false, log: `${log}${e.message}\n` }));
    child.on('close', (code) => resolve({ ok: code === 0, log }));
  });
}

function withDist(env, dist) {
  const e = { ...env };
  if (dist) delete e.M3_TORCH_NO_DIST;
  else e.M3_TORCH_NO_DIST = '1';
  return e;
}

/** node-gyp rebuild; binding.gyp reads its flags from locate-libtorch.js, which reads M3_LIBTORCH_FOUND. */
async function viaNodeGyp(gyp, found, dist) {
  const args = [gyp, 'rebuild', '--release'];
  const dir = nodeDir();
  if (dir) args.push(`--nodedir=${dir}`);
  return run(process.execPath, args, withDist({ ...process.env, M3_LIBTORCH_FOUND: JSON.stringify(found) }, dist));
}

// What node-gyp adds to every target on Linux (its common.gypi and addon.gypi, Release), so that the direct
// build compiles what binding.gyp compiles.
const GYP_DEFINES = ['NODE_GYP_MODULE_NAME=m3_torch', 'USING_UV_SHARED=1', 'USING_V8_SHARED=1', 'V8_DEPRECATION_WARNINGS=1',
  '_FILE_OFFSET_BITS=64', '_LARGEFILE_SOURCE', '__STDC_FORMAT_MACROS', 'OPENSSL_NO_PINSHARED', 'OPENSSL_THREADS', 'BUILDING_NODE_EXTENSION'];
const GYP_CFLAGS = ['-fPIC', '-pthread', '-Wall', '-Wextra', '-Wno-unused-parameter', '-m64', '-O3', '-fno-omit-frame-pointer'];
const GYP_LDFLAGS = ['-shared', '-pthread', '-rdynamic', '-m64', '-Wl,-soname=m3_torch.node'];

/** g++ on both translation units at once, then one link: the same flags as binding.gyp. */
async function direct(found, dist) {
  const dir = nodeDir();
  if (!dir) return { ok: false, log: `Node's headers not found (include/node/node_api.h under ${path.resolve(path.dirname(process.execPath), '..')}; set npm_config_nodedir)\n` };
  const flags = buildFlags(found, { dist });
  const cxx = process.env.CXX || 'g++';
  const objDir = path.join(release, 'obj.target', 'm3_torch', 'src');
  fs.mkdirSync(objDir, { recursive: true });
  const common = [...[...GYP_DEFINES, ...flags.defines].map((d) => `-D${d}`), `-I${path.join(dir, 'include', 'node')}`, ...flags.includes.map((i) => `-I${i}`), ...GYP_CFLAGS, ...flags.cflags];
  const objects = SOURCES.map((s) => path.join(objDir, `${path.basename(s, '.cc')}.o`));
  const compiled = await Promise.all(SOURCES.map((s, i) => run(cxx, ['-o', objects[i], s, ...common, '-c'], process.env)));
  const log = compiled.map((r) => r.log).join('');
  if (!compiled.every((r) => r.ok)) return { ok: false, log };
  const linked = await run(cxx, [...GYP_LDFLAGS, '-o', output, '-Wl,--start-group', ...objects, '-Wl,--end-group', ...flags.libs], process.env);
  return { ok: linked.ok, log: log + linked.log };
}

async function main() {
  if (process.env.M3_TORCH_SKIP) return say('skipped (M3_TORCH_SKIP is set)');
  const found = locate();
  if (!found) return say(`libtorch not found, so the torch backend is disabled and m3 runs on wasm (several times slower; npm start says how long the demo takes there). To enable it: ${INSTALL_HINT}`);
  if (upToDate(found)) return say(`up to date (${output})`);
  const gyp = nodeGypScript();
  const useDirect = Boolean(process.env.M3_TORCH_DIRECT) || !gyp || !onPath('make');
  const how = useDirect ? `${process.env.CXX || 'g++'} directly` : 'node-gyp';
  const attempt = (dist) => (useDirect ? direct(found, dist) : viaNodeGyp(gyp, found, dist));
  const started = Date.now();
  fs.rmSync(output, { force: true }); // a failed rebuild must not leave an addon older than its sources
  const dist = !process.env.M3_TORCH_NO_DIST;
  let r = await attempt(dist);
  let note = '';
  let distLog = '';
  if (!r.ok && dist && buildFlags(found, { dist }).defines.includes('M3_DIST_GLOO')) {
    distLog = r.log;
    r = await attempt(false);
  }
  // written after the last attempt: node-gyp rebuild empties build/ first (native/build/ is git-ignored)
  fs.mkdirSync(path.join(here, 'build'), { recursive: true });
  if (distLog) {
    const file = path.join(here, 'build', 'build-dist-error.log');
    fs.writeFileSync(file, distLog);
    note = `; without c10d collectives (the build with Gloo/NCCL failed, see ${file})`;
  }
  if (!r.ok) {
    const log = path.join(here, 'build', 'build-error.log');
    fs.writeFileSync(log, r.log);
    return say(`build failed (${how}${distLog ? ', with and without c10d' : ''}; see ${log}); the torch backend is disabled`);
  }
  const kind = found.cuda ? 'CUDA' : found.cudaLibs ? 'CUDA libraries but no CUDA headers: CPU only' : 'CPU';
  say(`built against ${found.lib} (${found.source}, ${kind}, ${found.std}) with ${how} in ${((Date.now() - started) / 1000).toFixed(0)} s${note}`);
}

module.exports = { nodeGypScript, nodeDir };

if (require.main === module) {
  main().catch((e) => say(`build skipped: ${e.message.split('\n')[0]}`));
}
