/**
 * Shared pieces of the golden harness: where the cases live, how a case folder is read, and the
 * element-wise tolerance check |got − want| ≤ atol + rtol·|want| that every kind uses.
 */
import * as fs from 'fs';
import * as path from 'path';
import { readSafetensors } from '../../src/model/weights/safetensors';
import { HostTensor } from '../../src/model/weights/types';

export const GOLDEN_DIR = path.resolve(process.env.M3_GOLDEN_DIR ?? path.join(__dirname, '..', '..', '..', 'shared', 'golden'));

export interface CaseSpec {
  kind: string;
  description?: string;
  params?: Record<string, any>;
  inputs?: string[];
  expected?: string[];
  scalars?: Record<string, number | number[]>;
  tolerance: { rtol: number; atol: number };
  model_dir?: string;
  config?: string;
  weights?: string;
  notes?: string;
}

export interface GoldenCase {
  name: string;
  dir: string;
  spec: CaseSpec;
  tensors: Map<string, HostTensor>;
}

export function listCases(root = GOLDEN_DIR): GoldenCase[] {
  if (!fs.existsSync(root)) throw new Error(`golden dir ${root} does not exist (set M3_GOLDEN_DIR)`);
  return fs.readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(root, d.name, 'case.json')))
    .map((d) => d.name)
    .sort()
    .map((name) => {
      const dir = path.join(root, name);
      const spec = JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8')) as CaseSpec;
      return { name, dir, spec, tensors: lazyTensors(path.join(dir, 'tensors.safetensors')) };
    });
}

// Tensors are read on first use so listing cases stays cheap.
function lazyTensors(file: string): Map<string, HostTensor> {
  let m: Map<string, HostTensor> | null = null;
  const load = () => (m ??= readSafetensors(file));
  return new Proxy(new Map(), {
    get(_t, prop) {
      const real = load();
      const v = Reflect.get(real, prop, real);
      return typeof v === 'function' ? v.bind(real) : v;
    },
  });
}

/** Throws with the worst element when any element is out of tolerance. */
export function expectClose(name: string, got: ArrayLike<number>, want: HostTensor | ArrayLike<number> | number, tol: CaseSpec['tolerance']): void {
  const w: ArrayLike<number> = typeof want === 'number' ? [want] : 'data' in (want as HostTensor) ? (want as HostTensor).data : (want as ArrayLike<number>);
  if (got.length !== w.length) throw new Error(`${name}: got ${got.length} elements, want ${w.length}`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < w.length; i++) {
    const excess = Math.abs(got[i] - w[i]) - (tol.atol + tol.rtol * Math.abs(w[i]));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(`${name}: element ${worst} is ${got[worst]}, want ${w[worst]} (rtol ${tol.rtol}, atol ${tol.atol})`);
  }
}

/** A kind's runner: runs one case on the active backend and throws on any mismatch. */
export type KindRunner = (c: GoldenCase) => Promise<void>;
