/**
 * The demo's shipped data (configs/demo/data): no NFCorpus dev or test query in any training file, the
 * evaluation folder holds exactly the dev split, the files are what scripts/make-demo-data.ts makes, and
 * they stay small.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { pipelineStages } from '../../src/recipes/pipeline';
import { sharedDir } from '../helpers/shared';

const ROOT = path.resolve(__dirname, '../..');
const DEMO = path.join(ROOT, 'configs/demo');
const NF = sharedDir('data/retrieval/nfcorpus');

const norm = (s: string) => s.toLowerCase().replace(/\s+/g, ' ').trim();
const lines = (file: string) => {
  const raw = fs.readFileSync(file);
  return (file.endsWith('.gz') ? zlib.gunzipSync(raw) : raw).toString('utf8').split('\n').filter((l) => l.trim());
};
const qrelIds = (split: string) => new Set(lines(path.join(NF, 'qrels', `${split}.tsv`)).slice(1).map((l) => l.split('\t')[0]));

const queries = lines(path.join(NF, 'queries.jsonl')).map((l) => JSON.parse(l) as { _id: string; text: string });
const train = qrelIds('train');
const dev = qrelIds('dev');
const test_ = new Set(queries.filter((q) => !train.has(q._id) && !dev.has(q._id)).map((q) => q._id));
const heldOut = queries.filter((q) => dev.has(q._id) || test_.has(q._id));
const heldTexts = new Set(heldOut.map((q) => norm(q.text)));
const trainingFiles = [...new Set(pipelineStages(path.join(DEMO, 'pipeline.yaml'), []).flatMap((s) => s.data.train))];

test('NFCorpus has dev and test queries to hold out', () => {
  expect(dev.size).toBe(324);
  expect(test_.size).toBeGreaterThan(300);
  expect(trainingFiles.length).toBeGreaterThanOrEqual(3);
});

test.each(trainingFiles.map((f) => [path.relative(ROOT, f), f]))('%s holds no dev or test query', (_, file) => {
  const rows = lines(file).map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(rows.length).toBeGreaterThan(100);
  const leaks: string[] = [];
  for (const row of rows) {
    if (typeof row.query === 'string' && heldTexts.has(norm(row.query))) leaks.push(`query: ${row.query}`);
    for (const key of ['text', 'pos', 'neg']) {
      const v = row[key];
      for (const t of Array.isArray(v) ? v : v === undefined ? [] : [v]) if (heldTexts.has(norm(String(t)))) leaks.push(`${key}: ${t}`);
    }
    for (const id of [...dev, ...test_]) if (row._id === id || row.query_id === id) leaks.push(`id ${id}`);
  }
  expect(leaks).toEqual([]);
});

test('stage-3 queries are NFCorpus train queries', () => {
  const trainTexts = new Set(queries.filter((q) => train.has(q._id)).map((q) => norm(q.text)));
  const file = trainingFiles.find((f) => f.includes('unified'))!;
  const rows = lines(file).map((l) => JSON.parse(l) as { query: string; pos: string[]; neg: string[] });
  for (const r of rows) {
    expect(trainTexts.has(norm(r.query))).toBe(true);
    expect(r.pos.length).toBeGreaterThan(0);
    expect(r.neg.length).toBeGreaterThan(0);
  }
});

test('the evaluation folder is the dev split over the whole corpus', () => {
  const dir = path.join(DEMO, 'data/nfcorpus-dev');
  const q = lines(path.join(dir, 'queries.jsonl')).map((l) => JSON.parse(l)._id as string);
  expect(new Set(q)).toEqual(dev);
  expect(fs.readdirSync(path.join(dir, 'qrels'))).toEqual(['dev.tsv']);
  expect(lines(path.join(dir, 'corpus.jsonl.gz')).length).toBe(3633);
});

test('the shipped files are what scripts/make-demo-data.ts makes, and small', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-demo-data-'));
  execFileSync(process.execPath, ['-r', './bin/register.js', 'scripts/make-demo-data.ts', NF, out], { cwd: ROOT, stdio: 'pipe' });
  const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
  const made = walk(out).map((f) => path.relative(out, f)).sort();
  expect(walk(path.join(DEMO, 'data')).map((f) => path.relative(path.join(DEMO, 'data'), f)).sort()).toEqual(made);
  let total = 0;
  for (const f of made) {
    const shipped = fs.readFileSync(path.join(DEMO, 'data', f));
    expect([f, shipped.equals(fs.readFileSync(path.join(out, f)))]).toEqual([f, true]);
    expect([f, shipped.length < 2e6]).toEqual([f, true]);
    total += shipped.length;
  }
  expect(total).toBeLessThan(5e6);
  fs.rmSync(out, { recursive: true, force: true });
});
