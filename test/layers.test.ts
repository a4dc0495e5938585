/**
 * The layers of src/, top to bottom (README "Layout"): an import may only go down, never climb.
 *   cli, index → recipes → pretrain | finetune → train, eval, losses, model, data → backend → util
 * Siblings of the stage layer never import each other; losses are functions of tensors: they import only
 * losses, backend, util and the M3 heads (src/model/heads.ts: functions of hidden states), never the encoder.
 */
import * as fs from 'fs';
import * as path from 'path';

const SRC = path.resolve(__dirname, '../src');
const RANK: Record<string, number> = {
  cli: 0, 'index.ts': 0, recipes: 1, pretrain: 2, finetune: 2, train: 3, eval: 3, losses: 3, model: 3, data: 3, backend: 4, util: 5,
};

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

const area = (file: string): string => path.relative(SRC, file).split(path.sep)[0];

/** Every relative import / require / export-from of a file, as [from area, to module path under src, specifier]. */
function imports(file: string): [string, string, string][] {
  const text = fs.readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|require\(\s*|import\(\s*)'(\.[^']*)'/g)].map((m) => m[1]);
  return specs.map((s) => [area(file), path.relative(SRC, path.resolve(path.dirname(file), s)).split(path.sep).join('/'), s]);
}

/** Why an import from area `a` to module `target` (a path under src) is not allowed, or null. */
function violation(a: string, target: string): string | null {
  const b = target.split('/')[0];
  if (a === b) return null;
  if (!(a in RANK) || !(b in RANK)) return `an area not in the layer table (${a} → ${b}); add it to README and this test`;
  if (RANK[b] < RANK[a]) return `climbs from ${a} (layer ${RANK[a]}) to ${b} (layer ${RANK[b]})`;
  if (RANK[b] === RANK[a] && RANK[a] === 2) return `sibling stages ${a} and ${b} import each other`;
  if (a === 'losses' && !['backend', 'util'].includes(b) && target !== 'model/heads') return `losses import only losses, backend, util and model/heads (got ${target})`;
  return null;
}

test('no import climbs the layers', () => {
  const bad: string[] = [];
  for (const file of sources(SRC)) {
    for (const [a, b, spec] of imports(file)) {
      const why = violation(a, b);
      if (why) bad.push(`${path.relative(SRC, file)} imports '${spec}': ${why}`);
    }
  }
  expect(bad).toEqual([]);
});

test('the rule catches a climbing import', () => {
  expect(violation('train', 'recipes/pipeline')).toMatch(/climbs/);
  expect(violation('backend', 'model/ops')).toMatch(/climbs/);
  expect(violation('pretrain', 'finetune/m3-step')).toMatch(/sibling/);
  expect(violation('losses', 'model/encoder')).toMatch(/losses import only/);
  expect(violation('losses', 'model/heads')).toBeNull();
  expect(violation('cli', 'recipes/demo')).toBeNull();
  expect(violation('eval', 'model/m3')).toBeNull();
});
