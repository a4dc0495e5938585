/**
 * YAML config files: parse with line positions, apply `--set a.b=value` overrides (values parsed as YAML
 * scalars), validate against a schema. Messages point at file:line of the offending key.
 */
import * as fs from 'fs';
import { isMap, LineCounter, parseDocument, parse as parseYaml } from 'yaml';
import { UserError } from './errors';
import { Locate, Schema, validate } from './schema';

export function readYamlConfig(file: string): { value: Record<string, unknown>; locate: (path: string[]) => string } {
  if (!fs.existsSync(file)) throw new UserError(`${file}: config file does not exist`);
  const src = fs.readFileSync(file, 'utf8');
  const lineCounter = new LineCounter();
  const doc = parseDocument(src, { lineCounter, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0];
    throw new UserError(`${file}:${e.linePos?.[0]?.line ?? '?'}: invalid YAML (${e.message.split('\n')[0]})`);
  }
  const value = (doc.toJS() ?? {}) as Record<string, unknown>;
  const locate = (path: string[]): string => {
    for (let n = path.length; n > 0; n--) {
      const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      const parent = n > 1 ? doc.getIn(path.slice(0, n - 1), true) : doc.contents;
      if (isMap(parent)) {
        const pair = parent.items.find((it) => String((it.key as { value?: unknown })?.value ?? it.key) === path[n - 1]);
        const r = (pair?.key as { range?: [number, number, number] } | undefined)?.range;
        if (r) return `${file}:${lineCounter.linePos(r[0]).line}`;
      }
      if (node?.range) return `${file}:${lineCounter.linePos(node.range[0]).line}`;
    }
    return file;
  };
  return { value, locate };
}

/** Applies `a.b.c=value` overrides in place; the value is read as YAML (numbers, booleans, lists...). */
export function applySets(value: Record<string, unknown>, sets: string[], flag = '--set'): void {
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new UserError(`${flag} ${s}: expected KEY=VALUE (e.g. ${flag} train.max_steps=10)`);
    const path = s.slice(0, eq).split('.');
    let v: unknown;
    try {
      v = parseYaml(s.slice(eq + 1));
    } catch {
      v = s.slice(eq + 1);
    }
    let cur = value as Record<string, unknown>;
    for (const k of path.slice(0, -1)) {
      if (cur[k] === undefined || cur[k] === null) cur[k] = {};
      if (typeof cur[k] !== 'object' || Array.isArray(cur[k])) throw new UserError(`${flag} ${s}: '${k}' is not a mapping`);
      cur = cur[k] as Record<string, unknown>;
    }
    cur[path[path.length - 1]] = v;
  }
}

/** A config as written (after `--set`), where each key came from, and the validated config. */
export interface LoadedConfig<T> {
  config: T;
  /** The keys as the file and the overrides set them, before defaults: what the user asked for. */
  written: Record<string, unknown>;
  /** "file:line", or "--set a.b" for an overridden key. */
  where: Locate;
}

/**
 * Reads a YAML config, applies `a.b=value` overrides (named `flag` in messages) and validates it against
 * `schema` (or the schema picked from the written keys, e.g. by `stage:`).
 */
export function loadConfig<T>(file: string, schema: Schema | ((written: Record<string, unknown>, where: Locate) => Schema), sets: string[] = [], flag = '--set'): LoadedConfig<T> {
  const { value, locate } = readYamlConfig(file);
  applySets(value, sets, flag);
  const where: Locate = (p) => {
    const set = sets.find((s) => s.startsWith(p.join('.') + '='));
    return set ? `${flag} ${set.split('=')[0]}` : locate(p);
  };
  const written = structuredClone(value);
  const config = validate<T>(typeof schema === 'function' ? schema(written, where) : schema, value, where);
  return { config, written, where };
}

/** Whether the user wrote `path` (in the file or by an override), as opposed to a schema default. */
export function isWritten(written: Record<string, unknown>, path: string[]): boolean {
  let cur: unknown = written;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object' || !(k in (cur as object))) return false;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur !== undefined && cur !== null;
}
