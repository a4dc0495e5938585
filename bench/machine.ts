/**
 * What explains a benchmark's move between machines, for its rows: the CPU model and the vector extensions
 * its GEMMs can use (from /proc/cpuinfo), and on the torch backend OpenBLAS's core type (the kernels it
 * picked for this CPU) and threads, whether the linear layers take oneDNN's sgemm, and ATen's threads.
 */
import * as fs from 'fs';
import * as os from 'os';

/** The flags that decide which GEMM kernels run (AVX-512 and its bf16/VNNI extensions, AMX). */
const GEMM_FLAGS = ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16'];

export function cpuFields(): Record<string, string | number> {
  let flags: string[] = [];
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => /^flags\s*:/.test(l));
    const have = new Set((line?.split(':')[1] ?? '').trim().split(/\s+/));
    flags = GEMM_FLAGS.filter((f) => have.has(f));
  } catch { /* not Linux: the model alone */ }
  return { cpu_model: os.cpus()[0]?.model ?? 'unknown', cpu_cores: os.availableParallelism?.() ?? os.cpus().length, cpu_flags: flags.join(' ') };
}

/** cpuFields, and on the torch backend its BLAS, oneDNN and thread settings. */
export function machineFields(backend: string): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = cpuFields();
  if (backend !== 'torch') return out;
  const { addon } = require('../src/backend/torch/addon') as typeof import('../src/backend/torch/addon');
  const g = addon().gemmInfo?.();
  if (!g) return out;
  return { ...out, blas_core: g.blasCore || 'not OpenBLAS', blas_threads: g.blasThreads, dnnl_sgemm: g.dnnlSgemm, aten_threads: g.atenThreads };
}
