/**
 * Typed access to ATen operators through the addon's boxed dispatcher. `aten('add.Tensor')` returns a
 * function that calls `aten::add.Tensor`; the operator is resolved on first use and cached, so a missing
 * operator only fails the kernel that needs it.
 */
import { addon } from './addon';

/** A tensor handle in the addon's table. */
export type Handle = number;
export type AtenFn = (...args: unknown[]) => any; // eslint-disable-line @typescript-eslint/no-explicit-any

const resolved = new Map<string, AtenFn>();

export function aten(schema: string): AtenFn {
  const existing = resolved.get(schema);
  if (existing) return existing;
  let opId = -1;
  const fn: AtenFn = (...args) => {
    if (opId < 0) {
      const dot = schema.indexOf('.');
      opId = dot < 0 ? addon().op(`aten::${schema}`, '') : addon().op(`aten::${schema.slice(0, dot)}`, schema.slice(dot + 1));
    }
    return addon().call(opId, args);
  };
  resolved.set(schema, fn);
  return fn;
}

/** c10::ScalarType codes of the dtypes the backend stores natively. */
export function scalarType(dtype: 'float32' | 'int32' | 'bool' | 'int64' | 'float64'): number {
  return addon().dtypeCodes[dtype];
}
