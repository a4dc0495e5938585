/**
 * YAML config files: parse with line positions, apply `--set a.b=value` overrides (values parsed as YAML
 * scalars), validate against a schema. Messages point at file:line of the offending key.
 */
import * as fs from 'fs';
import { isMap, LineCounter, parseDocument, parse as parseYaml } from 'yaml';
import { UserError } from './errors';
import { Schema, validate } from './schema';

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
export function applySets(value: Record<string, unknown>, sets: string[]): void {
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new UserError(`--set ${s}: expected KEY=VALUE (e.g. --set train.max_steps=10)`);
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
      if (typeof cur[k] !== 'object' || Array.isArray(cur[k])) throw new UserError(`--set ${s}: '${k}' is not a mapping`);
      cur = cur[k] as Record<string, unknown>;
    }
    cur[path[path.length - 1]] = v;
  }
}

export function loadConfig<T>(file: string, schema: Schema, sets: string[] = []): T {
  const { value, locate } = readYamlConfig(file);
  applySets(value, sets);
  return validate<T>(schema, value, (p) => {
    const set = sets.find((s) => s.startsWith(p.join('.') + '='));
    return set ? `--set ${set.split('=')[0]}` : locate(p);
  });
}
