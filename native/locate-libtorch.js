'use strict';
// Finds libtorch for the addon build: $LIBTORCH_DIR (an unpacked libtorch archive or a pip torch's
// package directory: include/ and lib/ below it), else the system (Debian/Ubuntu `libtorch-dev`:
// headers in /usr/include, libraries in the multiarch directory). Used by build.js and binding.gyp.
const fs = require('fs');
const path = require('path');

function candidates() {
  const out = [];
  if (process.env.LIBTORCH_DIR) {
    const d = path.resolve(process.env.LIBTORCH_DIR);
    out.push({ include: path.join(d, 'include'), lib: path.join(d, 'lib') });
  }
  const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }[process.arch];
  for (const lib of [multiarch && `/usr/lib/${multiarch}`, '/usr/lib', '/usr/local/lib'].filter(Boolean)) {
    out.push({ include: lib.startsWith('/usr/local') ? '/usr/local/include' : '/usr/include', lib });
  }
  return out;
}

/**
 * c10d's collectives are compiled in when their headers are there: Gloo's (Debian's libgloo-dev, or the
 * copy a pip torch ships in include/) for CPU, and NCCL's beside a CUDA libtorch (nccl.h in the include
 * dirs, or $NCCL_INCLUDE_DIR).
 */
function distDefines(found) {
  const c10d = path.join(found.include, 'torch', 'csrc', 'distributed', 'c10d');
  const gloo = [found.include, '/usr/include', '/usr/local/include'].some((d) => fs.existsSync(path.join(d, 'gloo', 'algorithm.h')));
  if (!gloo || !fs.existsSync(path.join(c10d, 'ProcessGroupGloo.hpp'))) return [];
  const defines = ['M3_DIST_GLOO', 'USE_C10D_GLOO'];
  const ncclDirs = [process.env.NCCL_INCLUDE_DIR, found.include, '/usr/include', '/usr/local/cuda/include'].filter(Boolean);
  if (found.cuda && fs.existsSync(path.join(c10d, 'ProcessGroupNCCL.hpp')) && ncclDirs.some((d) => fs.existsSync(path.join(d, 'nccl.h')))) {
    defines.push('M3_DIST_NCCL', 'USE_C10D_NCCL');
  }
  return defines;
}

/** { include, lib, cuda } or null when no libtorch headers + libraries are found. */
function locate() {
  for (const c of candidates()) {
    if (fs.existsSync(path.join(c.include, 'ATen', 'ATen.h')) && fs.existsSync(path.join(c.lib, 'libtorch_cpu.so'))) {
      return { ...c, cuda: fs.existsSync(path.join(c.lib, 'libtorch_cuda.so')) };
    }
  }
  return null;
}

module.exports = { locate, distDefines };

// `node locate-libtorch.js include|lib|libs|defines` prints one value for binding.gyp.
if (require.main === module) {
  const found = locate();
  if (!found) process.exit(1);
  const what = process.argv[2];
  if (what === 'include') console.log([found.include, path.join(found.include, 'torch', 'csrc', 'api', 'include')].join(' '));
  else if (what === 'lib') console.log(found.lib);
  else if (what === 'defines') console.log(distDefines(found).join(' '));
  else if (what === 'libs') {
    // --no-as-needed keeps libtorch_cuda loaded although nothing references it directly: it registers
    // the CUDA kernels at load time.
    const libs = ['-ltorch_cpu', '-lc10'];
    if (found.cuda) libs.push('-Wl,--no-as-needed', '-ltorch_cuda', '-lc10_cuda', '-Wl,--as-needed');
    console.log(libs.join(' '));
  }
}
