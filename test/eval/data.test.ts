/** BEIR folder loading: the real NFCorpus (gzip corpus), plain JSONL, and bad input named by file:line. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { documentText, loadBeir, readBeirCorpus, readBeirQrels } from '../../src/eval/data';
import { UserError } from '../../src/util/errors';
import { sharedDir } from '../helpers/shared';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-beir-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A small BEIR folder; `corpus` is written gzip-compressed when `gz`. */
function writeBeir(dir: string, files: { corpus?: string; queries?: string; qrels?: string; gz?: boolean }): string {
  fs.mkdirSync(path.join(dir, 'qrels'), { recursive: true });
  const corpus = files.corpus ?? '{"_id":"d1","title":"T1","text":"one"}\n{"_id":"d2","title":"","text":" two "}\n{"_id":3,"text":"three"}\n';
  if (files.gz) fs.writeFileSync(path.join(dir, 'corpus.jsonl.gz'), zlib.gzipSync(corpus));
  else fs.writeFileSync(path.join(dir, 'corpus.jsonl'), corpus);
  fs.writeFileSync(path.join(dir, 'queries.jsonl'), files.queries ?? '{"_id":"q1","text":"first"}\n{"_id":"q2","text":"second"}\n{"_id":"q3","text":"unjudged"}\n');
  fs.writeFileSync(path.join(dir, 'qrels', 'dev.tsv'), files.qrels ?? 'query-id\tcorpus-id\tscore\nq2\td1\t1\nq1\td2\t2\nq1\t3\t0\n');
  return dir;
}

const expectUserError = (fn: () => unknown, pattern: RegExp) => {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  expect((err as Error).message).toMatch(pattern);
};

test('NFCorpus dev: 3,633 documents from the .gz corpus, 324 judged queries, 11,385 judgements', () => {
  const ds = loadBeir(sharedDir('data', 'retrieval', 'nfcorpus'), 'dev');
  expect(ds.corpus.ids).toHaveLength(3633);
  expect(ds.queryIds).toHaveLength(324);
  let rows = 0;
  for (const j of ds.qrels.values()) rows += j.size;
  expect(rows).toBe(11385);
  expect(new Set([...ds.qrels.values()].flatMap((j) => [...j.values()]))).toEqual(new Set([1, 2]));
  const i = ds.corpus.ids.indexOf('MED-10');
  expect(ds.corpus.texts[i].startsWith('Statin Use and Breast Cancer Survival')).toBe(true); // title, space, abstract
  const few = loadBeir(sharedDir('data', 'retrieval', 'nfcorpus'), 'dev', { maxQueries: 5 });
  expect(few.queryIds).toEqual(ds.queryIds.slice(0, 5));
  expect([...few.qrels.keys()]).toEqual(few.queryIds);
});

test('plain and gzip corpora load the same; titles join as BEIR does; ids may be numbers', () => {
  const plain = loadBeir(writeBeir(path.join(tmp, 'a'), {}), 'dev');
  const gz = loadBeir(writeBeir(path.join(tmp, 'b'), { gz: true }), 'dev');
  expect(gz.corpus).toEqual(plain.corpus);
  expect(plain.corpus).toEqual({ ids: ['d1', 'd2', '3'], texts: ['T1 one', 'two', 'three'] });
  expect(plain.queryIds).toEqual(['q2', 'q1']); // judged queries only, qrels order
  expect(plain.queryTexts).toEqual(['second', 'first']);
  expect(plain.qrels.get('q1')).toEqual(new Map([['d2', 2], ['3', 0]]));
  expect(documentText(undefined, ' x ')).toBe('x');
});

test('missing pieces are one-line errors naming the path', () => {
  expectUserError(() => loadBeir(path.join(tmp, 'nope')), /nope: BEIR folder does not exist/);
  const dir = writeBeir(path.join(tmp, 'c'), {});
  expectUserError(() => loadBeir(dir, 'test'), /qrels[/\\]test\.tsv: no qrels for split 'test' \(splits here: dev\)/);
  fs.rmSync(path.join(dir, 'corpus.jsonl'));
  expectUserError(() => loadBeir(dir, 'dev'), /no corpus\.jsonl or corpus\.jsonl\.gz/);
  const d2 = writeBeir(path.join(tmp, 'd'), { qrels: 'query-id\tcorpus-id\tscore\nq9\td1\t1\n' });
  expectUserError(() => loadBeir(d2, 'dev'), /dev\.tsv: query 'q9' is not in .*queries\.jsonl/);
});

test('malformed lines name file:line', () => {
  const bad = (corpus: string, pattern: RegExp) => {
    const f = path.join(tmp, 'corpus.jsonl');
    fs.writeFileSync(f, corpus);
    expectUserError(() => readBeirCorpus(f), pattern);
  };
  bad('{"_id":"a","text":"x"}\n{"_id":"b","text":\n', /corpus\.jsonl:2: invalid JSON/);
  bad('{"_id":"a","text":"x"}\n\n[1,2]\n', /corpus\.jsonl:3: expected a JSON object/);
  bad('{"text":"x"}\n', /corpus\.jsonl:1: '_id' must be a non-empty string \(missing\)/);
  bad('{"_id":"a"}\n', /corpus\.jsonl:1: missing field 'text'/);
  bad('{"_id":"a","text":"x","title":5}\n', /corpus\.jsonl:1: 'title' must be a string/);
  bad('{"_id":"a","text":"x"}\n{"_id":"a","text":"y"}\n', /corpus\.jsonl:2: document id 'a' appears twice/);
  bad('', /the corpus is empty/);
  const gz = path.join(tmp, 'corpus.jsonl.gz');
  fs.writeFileSync(gz, 'not gzip');
  expectUserError(() => readBeirCorpus(gz), /corpus\.jsonl\.gz: not a valid gzip file/);

  const q = path.join(tmp, 'q.tsv');
  fs.writeFileSync(q, 'query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 d2 1\n');
  expectUserError(() => readBeirQrels(q), /q\.tsv:3: expected 3 tab-separated columns/);
  fs.writeFileSync(q, 'query-id\tcorpus-id\tscore\nq1\td1\thigh\n');
  expectUserError(() => readBeirQrels(q), /q\.tsv:2: score 'high' is not an integer/);
  fs.writeFileSync(q, 'q1\td1\t1\r\nq1\td1\t2\r\n'); // no header, CRLF; a repeated pair keeps the last score
  expect(readBeirQrels(q)).toEqual(new Map([['q1', new Map([['d1', 2]])]]));
});
