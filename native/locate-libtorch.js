'use strict';
// Finds libtorch for the addon build and derives every compiler/linker flag from it, so that binding.gyp
// (node-gyp) and build.js's direct g++ path compile the same thing. Search order:
//   1. $LIBTORCH_DIR: an unpacked libtorch archive or a pip torch's package directory (include/, lib/);
//   2. an installed PyTorch: `import torch` under $M3_PYTHON, $PYTHON, /usr/bin/python3, then python3 on
//      PATH (the first python3 on PATH is often a venv or pyenv one without torch) — its package
//      directory, which has include/ and lib/ (a pip wheel's own; Debian's python3-torch links the system's);
//   3. the system: Debian/Ubuntu `libtorch-dev` (headers in /usr/include, libraries in the multiarch dir).
// build.js passes its result to binding.gyp's `node locate-libtorch.js ...` calls through M3_LIBTORCH_FOUND,
// so python is asked once per build and both agree.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const exists = (...p) => fs.existsSync(path.join(...p));
const hasLibtorch = (c) => exists(c.include, 'ATen', 'ATen.h') && exists(c.lib, 'libtorch_cpu.so');

// Prints what the build needs from an installed torch; the site-packages directory is where pip puts the
// nvidia-* wheels (CUDA headers) beside torch.
const PROBE = [
  'import json, os, torch',
  'd = os.path.dirname(torch.__file__)',
  'print(json.dumps({"dir": d, "abi": int(torch.compiled_with_cxx11_abi()), "version": torch.__version__, "site": os.path.dirname(d)}))',
].join('\n');

function pythons() {
  const list = [process.env.M3_PYTHON, process.env.PYTHON, '/usr/bin/python3', 'python3'].filter(Boolean);
  return [...new Set(list)];
}

/** The first python that imports torch: { python, dir, abi, version, site }, or null (memoised: ~2 s each). */
let probed;
function pythonTorch() {
  if (probed === undefined) probed = probePythons();
  return probed;
}

function probePythons() {
  for (const python of pythons()) {
    const r = spawnSync(python, ['-c', PROBE], { encoding: 'utf8', timeout: 120000 });
    if (r.status !== 0 || !r.stdout) continue;
    try {
      return { python, ...JSON.parse(r.stdout.trim().split('\n').pop()) };
    } catch {
      continue;
    }
  }
  return null;
}

// An unpacked libtorch or pip torch records its ABI in TorchConfig.cmake; Debian's too (multiarch cmake dir).
function abiFromCmake(found) {
  for (const f of [path.join(found.lib, '..', 'share', 'cmake', 'Torch', 'TorchConfig.cmake'), path.join(found.lib, 'cmake', 'Torch', 'TorchConfig.cmake')]) {
    const m = fs.existsSync(f) && /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(fs.readFileSync(f, 'utf8'));
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** The include dirs of the pip nvidia-* wheels in site-packages (nvidia/<lib>/include, nvidia/cu13/include). */
function nvidiaIncludes(site) {
  const nvidia = site && path.join(site, 'nvidia');
  if (!nvidia || !fs.existsSync(nvidia)) return [];
  return fs.readdirSync(nvidia).sort().map((d) => path.join(nvidia, d, 'include')).filter((d) => fs.existsSync(d));
}

/**
 * CUDA headers c10/cuda and ATen/cuda include (cuda_runtime_api.h, cublas_v2.h, ...): a toolkit's include
 * dir, else the pip nvidia-* wheels beside torch (one include dir per library, or nvidia/cu13/include).
 */
function cudaIncludes(site) {
  for (const root of [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'].filter(Boolean)) {
    if (exists(root, 'include', 'cuda_runtime_api.h')) return [path.join(root, 'include')];
  }
  const dirs = nvidiaIncludes(site);
  if (dirs.some((d) => fs.existsSync(path.join(d, 'cuda_runtime_api.h')))) return dirs;
  if (exists('/usr/include', 'cuda_runtime_api.h')) return ['/usr/include']; // Debian's nvidia-cuda-dev
  return [];
}

// Lazily, so python is asked only when $LIBTORCH_DIR is unset or not a libtorch.
function* candidates() {
  if (process.env.LIBTORCH_DIR) {
    const d = path.resolve(process.env.LIBTORCH_DIR);
    yield { include: path.join(d, 'include'), lib: path.join(d, 'lib'), source: 'LIBTORCH_DIR' };
  }
  const py = pythonTorch();
  if (py) yield { include: path.join(py.dir, 'include'), lib: path.join(py.dir, 'lib'), source: `${py.python} (torch ${py.version})`, abi: py.abi, site: py.site };
  const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }[process.arch];
  for (const lib of [multiarch && `/usr/lib/${multiarch}`, '/usr/lib', '/usr/local/lib'].filter(Boolean)) {
    yield { include: lib.startsWith('/usr/local') ? '/usr/local/include' : '/usr/include', lib, source: 'system' };
  }
}

/**
 * { include, lib, source, site, std, abi?, cudaLibs, cuda, cudaIncludes } or null when no libtorch headers +
 * libraries are found. `cudaLibs`: a CUDA libtorch (libtorch_cuda.so, libc10_cuda.so); `cuda`: that, and
 * the CUDA headers were found too (the addon's M3_CUDA code needs both).
 */
function locate() {
  if (process.env.M3_LIBTORCH_FOUND) return JSON.parse(process.env.M3_LIBTORCH_FOUND);
  for (const c of candidates()) {
    if (!hasLibtorch(c)) continue;
    const cudaLibs = exists(c.lib, 'libtorch_cuda.so') && exists(c.lib, 'libc10_cuda.so');
    const site = c.site ?? path.resolve(c.lib, '..', '..'); // a pip torch's lib/ is <site-packages>/torch/lib
    const cudaInc = cudaLibs ? cudaIncludes(site) : [];
    const abi = c.abi ?? abiFromCmake(c);
    return { ...c, site, std: cxxStandard(c.include), ...(abi === undefined ? {} : { abi }), cudaLibs, cuda: cudaLibs && cudaInc.length > 0, cudaIncludes: cudaInc };
  }
  return null;
}

// The standard ATen.h demands (libtorch ≥ 2.13 requires C++20; older ones C++17 or C++14): -std=c++17
// unless the header asks for more.
function cxxStandard(include) {
  const f = path.join(include, 'ATen', 'ATen.h');
  const m = fs.existsSync(f) && /__cplusplus < (\d{4})\d\dL/.exec(fs.readFileSync(f, 'utf8'));
  return m && Number(m[1]) >= 2020 ? 'c++20' : 'c++17';
}

/**
 * c10d's collectives are compiled in when their headers are there: Gloo's (Debian's libgloo-dev, or the
 * copy a pip torch ships in include/) for CPU, and NCCL's beside a CUDA libtorch (nccl.h in the include
 * dirs, the pip nvidia-nccl wheel, or $NCCL_INCLUDE_DIR). M3_TORCH_NO_DIST=1 (build.js's retry after a
 * failed build with them) leaves them out.
 */
function distDefines(found) {
  return distConfig(found, !process.env.M3_TORCH_NO_DIST).defines;
}

function distConfig(found, dist) {
  const none = { defines: [], includes: [] };
  if (!dist) return none;
  const c10d = path.join(found.include, 'torch', 'csrc', 'distributed', 'c10d');
  // Gloo (CPU) and NCCL (CUDA) are independent: a pip torch may ship NCCL's side without Gloo's headers.
  const gloo = [found.include, '/usr/include', '/usr/local/include'].some((d) => fs.existsSync(path.join(d, 'gloo', 'algorithm.h')));
  const defines = gloo && fs.existsSync(path.join(c10d, 'ProcessGroupGloo.hpp')) ? ['M3_DIST_GLOO', 'USE_C10D_GLOO'] : [];
  const ncclDirs = [process.env.NCCL_INCLUDE_DIR, found.include, ...found.cudaIncludes, ...nvidiaIncludes(found.site), '/usr/include', '/usr/local/cuda/include'].filter(Boolean);
  const nccl = ncclDirs.find((d) => fs.existsSync(path.join(d, 'nccl.h')));
  if (found.cuda && nccl && fs.existsSync(path.join(c10d, 'ProcessGroupNCCL.hpp'))) {
    defines.push('M3_DIST_NCCL', 'USE_C10D_NCCL');
    return { defines, includes: [nccl] };
  }
  return defines.length ? { defines, includes: [] } : none;
}

/**
 * Everything the compiler and linker need beyond node-gyp's defaults (binding.gyp reads these through
 * the command line below; build.js's direct path adds node-gyp's defaults itself). `dist: false` leaves
 * c10d out (default: unless M3_TORCH_NO_DIST is set).
 */
function buildFlags(found, { dist = !process.env.M3_TORCH_NO_DIST } = {}) {
  const c10d = distConfig(found, dist);
  const napi = path.dirname(require.resolve('node-addon-api/package.json'));
  const includes = [napi, found.include, path.join(found.include, 'torch', 'csrc', 'api', 'include'), ...(found.cuda ? found.cudaIncludes : []), ...c10d.includes];
  const defines = ['NAPI_CPP_EXCEPTIONS', 'NAPI_VERSION=8', ...c10d.defines];
  if (found.abi !== undefined) defines.push(`_GLIBCXX_USE_CXX11_ABI=${found.abi}`);
  if (found.cuda) defines.push('M3_CUDA=1');
  const cflags = [`-std=${found.std}`, '-O2', '-fexceptions', '-frtti', '-Wno-unused-parameter', '-Wno-deprecated-declarations'];
  // --no-as-needed keeps libtorch_cuda loaded although nothing references it directly: it registers the
  // CUDA kernels at load time.
  const libs = [`-L${found.lib}`, `-Wl,-rpath,${found.lib}`, '-ltorch_cpu', '-lc10'];
  if (found.cudaLibs) libs.push('-Wl,--no-as-needed', '-ltorch_cuda', '-lc10_cuda', '-Wl,--as-needed');
  return { includes: [...new Set(includes)], defines, cflags, libs };
}

// What a newcomer without libtorch does about it (build.js's "libtorch not found" line, the torch backend's
// "addon not built" reason): the two routes to the fast path, each ending in a rebuild of the addon.
const INSTALL_HINT = 'Debian/Ubuntu: sudo apt-get install libtorch-dev libopenblas0-pthread (libgloo-dev too for data parallel), '
  + 'then npm run build:native; or with PyTorch: pip install torch (CUDA builds for GPUs), then npm run build:native '
  + '(or LIBTORCH_DIR=/path/to/libtorch npm run build:native)';

module.exports = { locate, distDefines, buildFlags, INSTALL_HINT };

// `node locate-libtorch.js include|defines|cflags|libs|lib` prints one value for binding.gyp.
if (require.main === module) {
  const found = locate();
  if (!found) process.exit(1);
  const flags = buildFlags(found);
  const what = process.argv[2];
  if (what === 'include') console.log(flags.includes.join(' '));
  else if (what === 'defines') console.log(flags.defines.join(' '));
  else if (what === 'cflags') console.log(flags.cflags.join(' '));
  else if (what === 'libs') console.log(flags.libs.join(' '));
  else if (what === 'lib') console.log(found.lib);
  else if (what === 'json') console.log(JSON.stringify(found));
  else process.exit(2);
}
