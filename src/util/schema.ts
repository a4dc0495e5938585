/**
 * A small schema for YAML configs: every key is declared with its type, range and default; an unknown
 * key is an error naming it and the closest valid key, a mistyped or out-of-range value an error naming
 * the key, its line and the expected type. Validation returns the config with defaults filled in.
 */
import { UserError } from './errors';

export type Field =
  | { type: 'number' | 'int'; default?: number; min?: number; max?: number; optional?: boolean; doc?: string }
  | { type: 'string'; default?: string; optional?: boolean; doc?: string }
  | { type: 'bool'; default?: boolean; optional?: boolean; doc?: string }
  | { type: 'enum'; values: readonly string[]; aliases?: Readonly<Record<string, string>>; default?: string; optional?: boolean; doc?: string }
  | { type: 'list'; of: Field; default?: readonly unknown[]; optional?: boolean; minItems?: number; single?: boolean; doc?: string } // single: a lone value is a one-item list
  | { type: 'object'; fields: Schema; optional?: boolean; doc?: string }
  | { type: 'map'; of: Field; default?: Record<string, unknown>; optional?: boolean; doc?: string };

export type Schema = Record<string, Field>;

/**
 * The type `validate` returns for a schema declared `as const satisfies Schema`: config types are derived
 * from their schemas, never written twice. A key that is optional and has no default may be absent.
 */
export type Infer<S> = Simplify<
  { -readonly [K in keyof S as MayBeAbsent<S[K]> extends true ? never : K]: FieldValue<S[K]> } &
  { -readonly [K in keyof S as MayBeAbsent<S[K]> extends true ? K : never]?: FieldValue<S[K]> }
>;
type Simplify<T> = { [K in keyof T]: T[K] };
type MayBeAbsent<F> = F extends { optional: true } ? (F extends { default: unknown } ? false : true) : false;
type FieldValue<F> =
  F extends { type: 'number' | 'int' } ? number
  : F extends { type: 'string' } ? string
  : F extends { type: 'bool' } ? boolean
  : F extends { type: 'enum'; values: readonly (infer V)[] } ? V
  : F extends { type: 'list'; of: infer O } ? FieldValue<O>[]
  : F extends { type: 'object'; fields: infer S } ? Infer<S>
  : F extends { type: 'map'; of: infer O } ? Record<string, FieldValue<O>>
  : never;

/** Where a key was written, for messages: "file:line". */
export type Locate = (path: string[]) => string;

export function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

export function closest(word: string, options: string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const o of options) {
    const dist = levenshtein(word.toLowerCase(), o.toLowerCase());
    if (dist < bestD) {
      best = o;
      bestD = dist;
    }
  }
  return best !== null && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : null;
}

const typeName = (f: Field): string =>
  f.type === 'enum' ? `one of ${f.values.join(', ')}` : f.type === 'int' ? 'an integer' : f.type === 'list' ? 'a list' : f.type === 'object' || f.type === 'map' ? 'a mapping' : `a ${f.type === 'bool' ? 'boolean' : f.type}`;

export function validate<T = Record<string, unknown>>(schema: Schema, value: unknown, locate: Locate, path: string[] = []): T {
  const where = (p: string[]) => `${locate(p)}: key '${p.join('.')}'`;
  if (value === null || value === undefined) value = {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new UserError(path.length ? `${where(path)} must be a mapping` : `${locate([])}: the config must be a mapping of keys`);
  }
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!(key in schema)) {
      const hint = closest(key, Object.keys(schema));
      throw new UserError(`${locate([...path, key])}: unknown key '${[...path, key].join('.')}'${hint ? ` (did you mean '${[...path, hint].join('.')}'?)` : ''}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(schema)) {
    const v = checkField(field, obj[key], [...path, key], locate, where);
    if (v !== undefined) out[key] = v;
  }
  return out as T;
}

function checkField(field: Field, v: unknown, p: string[], locate: Locate, where: (p: string[]) => string): unknown {
  if (v === undefined || v === null) {
    if (field.type === 'object') return validate(field.fields, {}, locate, p);
    if ('default' in field && field.default !== undefined) return structuredClone(field.default);
    if (field.optional) return undefined;
    throw new UserError(`${where(p)} is required (${typeName(field)})`);
  }
  const bad = () => new UserError(`${where(p)} must be ${typeName(field)}, got ${JSON.stringify(v)}`);
  switch (field.type) {
    case 'number':
    case 'int': {
      if (typeof v !== 'number' || !Number.isFinite(v) || (field.type === 'int' && !Number.isInteger(v))) throw bad();
      if (field.min !== undefined && v < field.min) throw new UserError(`${where(p)} must be ≥ ${field.min}, got ${v}`);
      if (field.max !== undefined && v > field.max) throw new UserError(`${where(p)} must be ≤ ${field.max}, got ${v}`);
      return v;
    }
    case 'string':
      if (typeof v !== 'string') throw bad();
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw bad();
      return v;
    case 'enum':
      if (typeof v === 'string' && field.aliases?.[v] !== undefined) return field.aliases[v];
      if (typeof v !== 'string' || !field.values.includes(v)) {
        const hint = typeof v === 'string' ? closest(v, [...field.values]) : null;
        throw new UserError(`${where(p)} must be ${typeName(field)}, got ${JSON.stringify(v)}${hint ? ` (did you mean '${hint}'?)` : ''}`);
      }
      return v;
    case 'list': {
      if (field.single && !Array.isArray(v)) return [checkField(field.of, v, p, locate, where)]; // one value stands for a one-item list (`report_to: tensorboard`, as in HF)
      if (!Array.isArray(v)) throw bad();
      if (field.minItems !== undefined && v.length < field.minItems) throw new UserError(`${where(p)} needs at least ${field.minItems} item(s)`);
      return v.map((x, i) => checkField(field.of, x, [...p, String(i)], locate, where));
    }
    case 'object':
      return validate(field.fields, v, locate, p);
    case 'map': {
      if (typeof v !== 'object' || Array.isArray(v)) throw bad();
      return Object.fromEntries(Object.entries(v as object).map(([k, x]) => [k, checkField(field.of, x, [...p, k], locate, where)]));
    }
  }
}
