/**
 * Multilingual evaluation without a model: mAP@20 (LAReQA) and bitext accuracy (LASER xsim) against
 * hand-computed cases, ties included; XQuAD-R reading on the real LAReQA files; the MIRACL/MLDR Hugging Face
 * layout; format detection; the macro average, row labels and the multi-dataset JSON shape.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { nearestNeighbourAccuracy, bitextMetrics, readTatoebaPair, tatoebaPairOf } from '../../src/eval/bitext';
import { detectEvalData } from '../../src/eval/datasets';
import { loadBeir } from '../../src/eval/data';
import { loadHfJsonl } from '../../src/eval/hf-jsonl';
import { DatasetResult, formatMultiTable, macroAverage, multiResultsJson, rowLabels } from '../../src/eval/multi';
import { denseSearch, Matrix } from '../../src/eval/search';
import { averagePrecisionAt, loadXquadR, relevantCandidates, xquadMapAt20, XquadPool } from '../../src/eval/xquad';
import { sharedDir } from '../helpers/shared';
import { writeToyBeir } from './fixtures';

const XQUAD = sharedDir('data', 'retrieval', 'xquad-r');
let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-multi-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const matrix = (rows: number[][]): Matrix => ({ data: Float32Array.from(rows.flat()), rows: rows.length, dim: rows[0].length });

describe('mAP@20 (LAReQA)', () => {
  test('hand-computed average precision: precision at each correct rank, over |R|, only the top 20 count', () => {
    // correct at ranks 2 and 4: (1/2 + 2/4) / 2
    expect(averagePrecisionAt([5, 1, 7, 3, 9], new Set([1, 3]))).toBeCloseTo(0.5, 12);
    // correct at ranks 1, 3 and never: (1/1 + 2/3) / 3
    expect(averagePrecisionAt([4, 0, 2, 8], new Set([4, 2, 6]))).toBeCloseTo((1 + 2 / 3) / 3, 12);
    // a correct candidate at rank 21 adds nothing; the denominator is still |R| = 2
    const ranking = Array.from({ length: 30 }, (_, i) => i);
    expect(averagePrecisionAt(ranking, new Set([0, 20]))).toBeCloseTo(0.5, 12);
    expect(averagePrecisionAt(ranking, new Set([19]))).toBeCloseTo(1 / 20, 12);
    expect(averagePrecisionAt([], new Set([1]))).toBe(0);
    expect(averagePrecisionAt([1, 2], new Set())).toBe(0);
  });

  test('per language over the dense search, ties going to the lower pool index', () => {
    // pool: c0 = [0,1], c1 = [1,0], c2 = [1,0] (c1 and c2 tie for a query [1,0]); c3 = [0.5,0.5]
    const corpus = matrix([[0, 1], [1, 0], [1, 0], [0.5, 0.5]]);
    const pool: XquadPool = {
      source: 'test', languages: ['aa', 'bb'],
      candidates: { texts: ['c0', 'c1', 'c2', 'c3'], language: ['aa', 'aa', 'bb', 'bb'], answers: [['q2'], [], ['q1'], ['q1']] },
      questions: new Map([['aa', { ids: ['q1'], texts: ['x'] }], ['bb', { ids: ['q1', 'q2'], texts: ['x', 'y'] }]]),
    };
    expect(relevantCandidates(pool).get('q1')).toEqual([2, 3]);
    const hits = new Map([
      ['aa', denseSearch(matrix([[1, 0]]), corpus, 20)], // ranks c1, c2 (tie → lower index first), c3, c0
      ['bb', denseSearch(matrix([[1, 0], [0, 1]]), corpus, 20)], // q2 = [0,1] ranks c0 first
    ]);
    expect(Array.from(hits.get('aa')![0].indices)).toEqual([1, 2, 3, 0]);
    const q1 = (1 / 2 + 2 / 3) / 2; // correct c2 at rank 2, c3 at rank 3
    const map = xquadMapAt20(pool, hits);
    expect(map.get('aa')).toBeCloseTo(q1, 12);
    expect(map.get('bb')).toBeCloseTo((q1 + 1) / 2, 12);
  });

  test('the real XQuAD-R files: one correct sentence per question in a file, one per language in a folder', () => {
    const en = loadXquadR(path.join(XQUAD, 'en.json'));
    expect(en.candidates.texts).toHaveLength(1180); // the LAReQA README's candidate count
    expect(en.questions.get('en')!.ids).toHaveLength(1190);
    const rel = relevantCandidates(en);
    expect(en.questions.get('en')!.ids.every((q) => rel.get(q)?.length === 1)).toBe(true);
    const all = loadXquadR(XQUAD, { maxQueries: 5 });
    expect(all.languages).toEqual(['de', 'en', 'es', 'zh']);
    expect(all.candidates.texts).toHaveLength(1276 + 1180 + 1215 + 1196);
    expect([...all.questions.values()].map((q) => q.ids.length)).toEqual([5, 5, 5, 5]);
    const relAll = relevantCandidates(all);
    for (const q of all.questions.get('zh')!.ids) expect(relAll.get(q)!.map((i) => all.candidates.language[i])).toEqual(['de', 'en', 'es', 'zh']);
  });

  test('bad XQuAD-R input is named by file and place', () => {
    const f = path.join(tmp, 'xx.json');
    fs.writeFileSync(f, JSON.stringify({ data: [{ paragraphs: [{ context: 'A b. C d.', sentences: ['A b.', 'C d.'], sentence_breaks: [[0, 4], [5, 9]], qas: [{ id: 'q', question: 'w?', answers: [{ answer_start: 40 }] }] }] }] }));
    expect(() => loadXquadR(f)).toThrow(/xx\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: answer_start 40 is in no sentence_breaks range/);
  });
});

describe('bitext accuracy (LASER xsim)', () => {
  test('hand-computed nearest neighbours in both directions, ties to the lowest index', () => {
    // eng rows 0 and 1 are identical: xxx row 1's nearest is a tie between eng 0 and 1 → eng 0 → wrong
    const xxx = matrix([[1, 0], [1, 0], [0, 1]]);
    const eng = matrix([[1, 0], [1, 0], [0.6, 0.8]]);
    expect(nearestNeighbourAccuracy(xxx, eng)).toBeCloseTo(2 / 3, 12);
    // eng → xxx: eng 0 → xxx 0 (tie 0/1) ✓, eng 1 → xxx 0 ✗, eng 2 = [0.6,0.8] → xxx 2 (0.8 > 0.6) ✓
    expect(nearestNeighbourAccuracy(eng, xxx)).toBeCloseTo(2 / 3, 12);
    const asym = bitextMetrics(matrix([[1, 0], [0, 1]]), matrix([[0.9, 0.1], [0.8, 0.2]]));
    // to eng: both xxx rows pick... [1,0]→eng0 (0.9) ✓; [0,1]→eng1 (0.2 > 0.1) ✓; from eng: eng0→xxx0 ✓, eng1→xxx0 ✗
    expect(asym).toEqual({ accuracy: 0.75, accuracy_to_eng: 1, accuracy_from_eng: 0.5 });
  });

  test('pair names, line alignment and the language from the file name', () => {
    expect(tatoebaPairOf('/d/tatoeba.deu-eng.deu')).toEqual({ xxxFile: '/d/tatoeba.deu-eng.deu', engFile: '/d/tatoeba.deu-eng.eng', language: 'deu' });
    expect(tatoebaPairOf('/d/tatoeba.deu-eng.eng')!.xxxFile).toBe('/d/tatoeba.deu-eng.deu');
    expect(tatoebaPairOf('/d/tatoeba.deu-eng.fra')).toBeNull();
    expect(tatoebaPairOf('/d/notes.txt')).toBeNull();
    const pair = tatoebaPairOf(path.join(tmp, 'tatoeba.fra-eng.fra'))!;
    fs.writeFileSync(pair.xxxFile, 'un\ndeux\r\ntrois\n');
    fs.writeFileSync(pair.engFile, 'one\ntwo\nthree');
    expect(readTatoebaPair(pair)).toEqual({ xxx: ['un', 'deux', 'trois'], eng: ['one', 'two', 'three'] });
    expect(readTatoebaPair(pair, 2).eng).toEqual(['one', 'two']);
    fs.writeFileSync(pair.engFile, 'one\ntwo\n');
    expect(() => readTatoebaPair(pair)).toThrow(/3 lines but .*tatoeba\.fra-eng\.eng has 2; the pair must be line-aligned/);
    fs.writeFileSync(pair.engFile, 'one\n\nthree\n');
    expect(() => readTatoebaPair(pair)).toThrow(/tatoeba\.fra-eng\.eng:2: empty sentence/);
  });
});

/** The toy BEIR data rewritten in the Hugging Face layout MIRACL and MLDR use. */
function writeToyHf(dir: string, beirDir: string, opts: { qrelsFile?: boolean } = {}): string {
  const ds = loadBeir(beirDir, 'dev');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'corpus.jsonl'), ds.corpus.ids.map((id, i) => JSON.stringify({ docid: id, title: '', text: ds.corpus.texts[i] })).join('\n') + '\n');
  const lines = ds.queryIds.map((q, i) => JSON.stringify({
    query_id: q, query: ds.queryTexts[i],
    positive_passages: [...ds.qrels.get(q)!].filter(([, g]) => g > 0).map(([docid]) => ({ docid, title: '', text: '' })),
    negative_passages: [],
  }));
  fs.writeFileSync(path.join(dir, 'dev.jsonl'), lines.join('\n') + '\n');
  if (opts.qrelsFile) fs.cpSync(path.join(beirDir, 'qrels'), path.join(dir, 'qrels'), { recursive: true });
  return dir;
}

describe('the Hugging Face JSONL layout (MIRACL, MLDR)', () => {
  test('positive_passages give the judgements; the same data as the BEIR folder', () => {
    const beir = writeToyBeir(path.join(tmp, 'toy'));
    const hf = loadHfJsonl(writeToyHf(path.join(tmp, 'miracl-sw'), beir), 'dev');
    const b = loadBeir(beir, 'dev');
    expect(hf.corpus).toEqual(b.corpus);
    expect(hf.queryIds).toEqual(b.queryIds);
    expect(hf.queryTexts).toEqual(b.queryTexts);
    for (const q of b.queryIds) expect([...hf.qrels.get(q)!.keys()].sort()).toEqual([...b.qrels.get(q)!].filter(([, g]) => g > 0).map(([d]) => d).sort());
    expect(loadHfJsonl(path.join(tmp, 'miracl-sw'), 'dev', { maxQueries: 1 }).queryIds).toHaveLength(1);
  });

  test('a qrels file, when present, gives the (graded) judgements', () => {
    const beir = writeToyBeir(path.join(tmp, 'toy'));
    const hf = loadHfJsonl(writeToyHf(path.join(tmp, 'hf'), beir, { qrelsFile: true }), 'dev');
    expect(hf.qrels).toEqual(loadBeir(beir, 'dev').qrels);
  });

  test('bad input: unknown split, unknown positive passage', () => {
    const dir = writeToyHf(path.join(tmp, 'hf'), writeToyBeir(path.join(tmp, 'toy')));
    expect(() => loadHfJsonl(dir, 'test')).toThrow(/no test\.jsonl for split 'test' \(splits here: dev\)/);
    fs.writeFileSync(path.join(dir, 'dev.jsonl'), '{"query_id":"q","query":"x","positive_passages":[{"docid":"nope"}]}\n');
    expect(() => loadHfJsonl(dir, 'dev')).toThrow(/dev\.jsonl:1: positive passage 'nope' is not in/);
  });
});

describe('format detection', () => {
  test('each layout, and the language from the name', () => {
    const beir = writeToyBeir(path.join(tmp, 'toy'));
    const hf = writeToyHf(path.join(tmp, 'mldr_zh'), beir);
    const pair = path.join(tmp, 'tatoeba.deu-eng.deu');
    fs.writeFileSync(pair, 'a\n');
    fs.writeFileSync(path.join(tmp, 'tatoeba.deu-eng.eng'), 'a\n');
    const xq = path.join(tmp, 'xq');
    fs.mkdirSync(xq);
    fs.copyFileSync(path.join(XQUAD, 'de.json'), path.join(xq, 'de.json'));
    expect(detectEvalData(beir)).toEqual({ path: beir, format: 'beir', name: 'toy', language: null });
    expect(detectEvalData(hf)).toEqual({ path: hf, format: 'hf-jsonl', name: 'mldr_zh', language: 'zh' });
    expect(detectEvalData(path.join(XQUAD, 'es.json'))).toMatchObject({ format: 'xquad-r', name: 'es.json', language: 'es' });
    expect(detectEvalData(xq)).toEqual({ path: xq, format: 'xquad-r', name: 'xq', language: null });
    expect(detectEvalData(path.join(tmp, 'tatoeba.deu-eng.eng'))).toEqual({ path: pair, format: 'tatoeba', name: 'tatoeba.deu-eng', language: 'deu' });
  });

  test('what is none of them is a clear error', () => {
    fs.writeFileSync(path.join(tmp, 'notes.txt'), 'x');
    expect(() => detectEvalData(path.join(tmp, 'notes.txt'))).toThrow(/notes\.txt: not a recognised evaluation file; expected a BEIR folder/);
    fs.writeFileSync(path.join(tmp, 'other.json'), '{"data": []}');
    expect(() => detectEvalData(path.join(tmp, 'other.json'))).toThrow(/other\.json: not an XQuAD-R file/);
    expect(() => detectEvalData(path.join(tmp, 'tatoeba.fra-eng.fra'))).toThrow(/does not exist \(a Tatoeba pair needs tatoeba\.fra-eng\.fra and tatoeba\.fra-eng\.eng side by side\)/);
    fs.mkdirSync(path.join(tmp, 'empty'));
    expect(() => detectEvalData(path.join(tmp, 'empty'))).toThrow(/empty: not a recognised evaluation folder/);
    fs.writeFileSync(path.join(tmp, 'tatoeba.ita-eng.ita'), 'x\n');
    expect(() => detectEvalData(path.join(tmp, 'tatoeba.ita-eng.ita'))).toThrow(/tatoeba\.ita-eng\.eng: does not exist \(a Tatoeba pair needs/);
  });
});

describe('several datasets: macro average and JSON shape', () => {
  const rows: DatasetResult[] = [
    { name: 'miracl-sw', format: 'hf-jsonl', language: 'sw', metrics: { dense: { 'ndcg@10': 0.5, 'recall@100': 0.9, 'mrr@10': 0.4 }, sparse: { 'ndcg@10': 0.3, 'recall@100': 0.7, 'mrr@10': 0.2 } } },
    { name: 'miracl-te', format: 'hf-jsonl', language: 'te', metrics: { dense: { 'ndcg@10': 0.7, 'recall@100': 0.8, 'mrr@10': 0.6 } } },
    { name: 'xquad-r', format: 'xquad-r', language: 'de', metrics: { dense: { 'map@20': 0.2 } } },
    { name: 'xquad-r', format: 'xquad-r', language: 'en', metrics: { dense: { 'map@20': 0.4 } } },
    { name: 'tatoeba.deu-eng', format: 'tatoeba', language: 'deu', metrics: { dense: { 'accuracy': 0.75, 'accuracy_to_eng': 1, 'accuracy_from_eng': 0.5 } } },
  ];

  test('the macro average is the unweighted mean over the rows that report each metric', () => {
    const macro = macroAverage(rows);
    expect(Object.keys(macro.dense!)).toEqual(['ndcg@10', 'recall@100', 'mrr@10', 'map@20', 'accuracy', 'accuracy_to_eng', 'accuracy_from_eng']);
    expect(macro.dense!['ndcg@10']).toBeCloseTo(0.6, 12);
    expect(macro.dense!['map@20']).toBeCloseTo(0.3, 12);
    expect(macro.dense!.accuracy).toBe(0.75);
    expect(macro.sparse).toEqual({ 'ndcg@10': 0.3, 'recall@100': 0.7, 'mrr@10': 0.2 });
  });

  test('JSON: exactly {datasets: [{name, format, language, metrics}], macro}; labels and table', () => {
    const withExtra = rows.map((r) => ({ ...r, seconds: 3 }));
    const json = JSON.parse(JSON.stringify(multiResultsJson({ datasets: withExtra, macro: macroAverage(rows) })));
    expect(Object.keys(json)).toEqual(['datasets', 'macro']);
    for (const d of json.datasets) expect(Object.keys(d)).toEqual(['name', 'format', 'language', 'metrics']);
    expect(json.datasets[2]).toEqual({ name: 'xquad-r', format: 'xquad-r', language: 'de', metrics: { dense: { 'map@20': 0.2 } } });
    expect(rowLabels(rows)).toEqual(['miracl-sw', 'miracl-te', 'xquad-r/de', 'xquad-r/en', 'tatoeba.deu-eng']);
    const table = formatMultiTable({ datasets: rows, macro: macroAverage(rows) }).split('\n');
    expect(table[0]).toMatch(/^dataset\s+lang\s+mode\s+nDCG@10\s+Recall@100\s+MRR@10\s+mAP@20\s+Acc\s+Acc→eng\s+Acc←eng$/);
    expect(table[1]).toMatch(/^miracl-sw\s+sw\s+dense\s+0\.5000\s+0\.9000\s+0\.4000\s+-\s+-\s+-\s+-$/);
    expect(table).toContainEqual(expect.stringMatching(/^macro\s+dense\s+0\.6000\s+0\.8500\s+0\.5000\s+0\.3000\s+0\.7500\s+1\.0000\s+0\.5000$/));
  });
});
