/**
 * `m3 eval` with several datasets end to end on a small model (configs/tiny's shape: bert-base-uncased
 * vocabulary, 2 layers of 64, random weights): XQuAD-R (a subset of the real LAReQA files in ../shared:
 * the first 3 paragraphs of each language, CC BY-SA 4.0) as a folder and as one file, and a Tatoeba-style
 * pair made from the same subset's parallel German and English questions. Each number is checked against
 * an independent computation: mAP@20 by brute force over encodeTexts vectors with relevance found again
 * here, bitext accuracy from `m3 encode`'s own output. Also: a Hugging Face layout folder scores exactly
 * as the same data in BEIR form, and `--mcls` scores with `m3 encode --mcls`'s vectors.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { cli } from '../../src/cli/main';
import { parseConfig } from '../../src/model/config';
import { encodeTexts } from '../../src/model/inference';
import { initModel, loadModel, saveModel } from '../../src/model/m3';
import { loadTokenizer } from '../../src/model/tokenizer';
import { readRunTrec } from '../../src/eval/trec';
import { loadBeir } from '../../src/eval/data';
import { availableBackends, useBackend } from '../../src/backend';
import { sharedDir } from '../helpers/shared';
import { writeToyBeir, TINY_BERT } from './fixtures';

const TINY = path.resolve(__dirname, '../../configs/tiny');
const XQUAD = sharedDir('data', 'retrieval', 'xquad-r');
const LANGS = ['de', 'en', 'es', 'zh'];
let tmp: string;
let modelDir: string;
let xqDir: string;
let pairFile: string;

type Para = { context: string; sentences: string[]; sentence_breaks: number[][]; qas: { id: string; question: string; answers: { answer_start: number }[] }[] };
const subset = (lang: string): { data: { title: string; paragraphs: Para[] }[] } => {
  const d = JSON.parse(fs.readFileSync(path.join(XQUAD, `${lang}.json`), 'utf8'));
  return { data: [{ title: d.data[0].title, paragraphs: d.data[0].paragraphs.slice(0, 3) }] };
};

let backend = 'wasm'; // the backend the CLI runs on and the references are computed with

beforeAll(async () => {
  await useBackend('wasm');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-multi-e2e-'));
  const raw = JSON.parse(fs.readFileSync(path.join(TINY, 'model', 'config.json'), 'utf8'));
  modelDir = path.join(tmp, 'tiny');
  await saveModel(initModel(parseConfig(raw), { seed: 7, tokenizer: loadTokenizer(path.join(TINY, 'tokenizer')) }), modelDir);
  xqDir = path.join(tmp, 'xquad-r');
  fs.mkdirSync(xqDir);
  for (const l of LANGS) fs.writeFileSync(path.join(xqDir, `${l}.json`), JSON.stringify(subset(l)));
  // a Tatoeba-style pair: the subset's German questions and their English originals, line by line
  const questions = (l: string) => new Map(subset(l).data[0].paragraphs.flatMap((p) => p.qas.map((q) => [q.id, q.question] as const)));
  const de = questions('de');
  const en = questions('en');
  const ids = [...de.keys()].filter((id) => en.has(id));
  pairFile = path.join(tmp, 'tatoeba.deu-eng.deu');
  fs.writeFileSync(pairFile, ids.map((id) => de.get(id)).join('\n') + '\n');
  fs.writeFileSync(path.join(tmp, 'tatoeba.deu-eng.eng'), ids.map((id) => en.get(id)).join('\n') + '\n');
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
afterEach(() => {
  backend = 'wasm';
});

async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await cli([...args, '--backend', backend]).parseAsync();
    return { code: Number(process.exitCode ?? 0), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = before;
  }
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0);

/** mAP@20 by brute force: every candidate scored, sorted (score desc, index asc), AP over the top 20. */
async function referenceMap(langs: string[], poolLangs: string[]): Promise<Record<string, number>> {
  await tf.setBackend(backend);
  const model = loadModel(modelDir);
  const cands: { text: string; answers: Set<string> }[] = [];
  for (const l of poolLangs) {
    for (const p of subset(l).data[0].paragraphs) {
      const start = cands.length;
      p.sentences.forEach((s) => cands.push({ text: s, answers: new Set() }));
      for (const qa of p.qas) {
        const a = qa.answers[0].answer_start;
        const j = p.sentence_breaks.findIndex(([b, e]) => a >= b && a < e);
        cands[start + j].answers.add(qa.id);
      }
    }
  }
  const cv = await encodeTexts(model, cands.map((c) => c.text), { maxLength: 512 });
  const out: Record<string, number> = {};
  for (const l of langs) {
    const qas = subset(l).data[0].paragraphs.flatMap((p) => p.qas);
    const qv = await encodeTexts(model, qas.map((q) => q.question), { maxLength: 512 });
    let sum = 0;
    qas.forEach((qa, qi) => {
      const order = cands.map((_, i) => ({ i, s: dot(qv[qi].dense!, cv[i].dense!) })).sort((a, b) => b.s - a.s || a.i - b.i).slice(0, 20);
      const nRel = cands.filter((c) => c.answers.has(qa.id)).length;
      let found = 0;
      let ap = 0;
      order.forEach(({ i }, r) => {
        if (cands[i].answers.has(qa.id)) ap += ++found / (r + 1);
      });
      sum += ap / nRel;
    });
    out[l] = sum / qas.length;
  }
  return out;
}

/** Nearest-neighbour accuracy from `m3 encode`'s JSONL vectors, ties to the lowest index. */
function accuracyFrom(from: number[][], to: number[][]): number {
  let ok = 0;
  from.forEach((v, i) => {
    let best = 0;
    let bestS = -Infinity;
    to.forEach((w, j) => {
      const s = v.reduce((a, x, k) => a + x * w[k], 0);
      if (s > bestS) [best, bestS] = [j, s];
    });
    ok += best === i ? 1 : 0;
  });
  return ok / from.length;
}

async function encodeWithCli(file: string, extra: string[] = []): Promise<number[][]> {
  const input = `${file}.jsonl`;
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
  fs.writeFileSync(input, lines.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const r = await runCli(['encode', '--model', modelDir, '--input', input, '--output', `${input}.out`, ...extra]);
  expect(r.code).toBe(0);
  return fs.readFileSync(`${input}.out`, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).dense);
}

test.each(['wasm', 'torch'])('XQuAD-R folder and file and a Tatoeba pair at once on %s: per-language rows, the macro average, independent numbers', async (b) => {
  if (!(await availableBackends()).includes(b as never)) return; // torch where it is built; wasm always
  backend = b;
  const json = path.join(tmp, `multi-${b}.json`);
  const r = await runCli(['eval', '--model', modelDir, '--data', xqDir, '--data', path.join(xqDir, 'en.json'), '--data', pairFile, '--json', json]);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  const res = JSON.parse(fs.readFileSync(json, 'utf8'));
  expect(Object.keys(res)).toEqual(['datasets', 'macro']);
  expect(res.datasets.map((d: { name: string; format: string; language: string }) => [d.name, d.format, d.language])).toEqual([
    ['xquad-r', 'xquad-r', 'de'], ['xquad-r', 'xquad-r', 'en'], ['xquad-r', 'xquad-r', 'es'], ['xquad-r', 'xquad-r', 'zh'],
    ['en.json', 'xquad-r', 'en'], ['tatoeba.deu-eng', 'tatoeba', 'deu'],
  ]);
  // all languages' pool (the folder), then English questions in the English pool (the file)
  const pooled = await referenceMap(LANGS, LANGS);
  LANGS.forEach((l, i) => expect(res.datasets[i].metrics.dense['map@20']).toBeCloseTo(pooled[l], 6));
  const mono = await referenceMap(['en'], ['en']);
  expect(res.datasets[4].metrics.dense['map@20']).toBeCloseTo(mono.en, 6);
  // Tatoeba: both directions from m3 encode's own vectors
  const de = await encodeWithCli(pairFile);
  const en = await encodeWithCli(path.join(tmp, 'tatoeba.deu-eng.eng'));
  const acc = res.datasets[5].metrics.dense;
  expect(acc.accuracy_to_eng).toBeCloseTo(accuracyFrom(de, en), 12);
  expect(acc.accuracy_from_eng).toBeCloseTo(accuracyFrom(en, de), 12);
  expect(acc.accuracy).toBeCloseTo((acc.accuracy_to_eng + acc.accuracy_from_eng) / 2, 12);
  expect(acc.accuracy_to_eng).toBeGreaterThan(0); // the random model still finds some translations (numbers, names)
  // the macro average over the five XQuAD-R rows; the Tatoeba row alone for accuracy
  const maps = res.datasets.slice(0, 5).map((d: { metrics: { dense: Record<string, number> } }) => d.metrics.dense['map@20']);
  expect(res.macro.dense['map@20']).toBeCloseTo(maps.reduce((a: number, x: number) => a + x, 0) / 5, 12);
  expect(res.macro.dense.accuracy).toBe(acc.accuracy);
  // stdout: the table, a row per dataset and language, and the macro row
  expect(r.stdout.split('\n')[0]).toMatch(/^dataset\s+lang\s+mode\s+mAP@20\s+Acc\s+Acc→eng\s+Acc←eng$/);
  expect(r.stdout).toMatch(/^xquad-r\s+zh\s+dense\s+\d\.\d{4}\s+-\s+-\s+-$/m);
  expect(r.stdout).toMatch(/^macro\s+dense\s+\d\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}$/m);
});

test('modes XQuAD-R and Tatoeba cannot score, and --run-file with several datasets, are refused', async () => {
  const r = await runCli(['eval', '--model', modelDir, '--data', pairFile, '--modes', 'dense,sparse']);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/tatoeba\.deu-eng is tatoeba, which is scored with mode dense only/);
  const rf = await runCli(['eval', '--model', modelDir, '--data', xqDir, '--data', pairFile, '--run-file', path.join(tmp, 'x.trec')]);
  expect(rf.code).toBe(1);
  expect(rf.stderr).toMatch(/--run-file writes the runs of one BEIR or Hugging Face folder/);
  const bad = await runCli(['eval', '--model', modelDir, '--data', path.join(tmp, 'tatoeba.fra-eng.fra')]);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toMatch(/tatoeba\.fra-eng\.fra: does not exist/);
  // a stranger's files: one line naming the file and place, exit 1, no JSON written
  fs.writeFileSync(path.join(tmp, 'tatoeba.ita-eng.ita'), 'uno\ndue\n');
  fs.writeFileSync(path.join(tmp, 'tatoeba.ita-eng.eng'), 'one\n');
  const json = path.join(tmp, 'never.json');
  const misaligned = await runCli(['eval', '--model', modelDir, '--data', xqDir, '--data', path.join(tmp, 'tatoeba.ita-eng.ita'), '--json', json]);
  expect(misaligned.code).toBe(1);
  expect(misaligned.stderr).toMatch(/^m3: error: .*tatoeba\.ita-eng\.ita: 2 lines but .*tatoeba\.ita-eng\.eng has 1; the pair must be line-aligned\n$/);
  expect(fs.existsSync(json)).toBe(false);
  const brokenDir = path.join(tmp, 'broken-xq');
  fs.mkdirSync(brokenDir);
  fs.writeFileSync(path.join(brokenDir, 'fr.json'), '{"data": [{"paragraphs": [{"sentences": ["a"], "sentence_breaks": [[0, 1]], "qas": [{"id": "q", "question": "?", "answers": []}]}]}]}');
  const broken = await runCli(['eval', '--model', modelDir, '--data', brokenDir]);
  expect(broken.code).toBe(1);
  expect(broken.stderr).toMatch(/^m3: error: .*fr\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\] must have an integer 'answer_start'\n$/);
});

test('a Hugging Face layout folder scores exactly as the same data in BEIR form', async () => {
  const beir = writeToyBeir(path.join(tmp, 'toy'));
  const ds = loadBeir(beir, 'dev');
  const hf = path.join(tmp, 'toy-hf');
  fs.mkdirSync(hf);
  fs.writeFileSync(path.join(hf, 'corpus.jsonl'), ds.corpus.ids.map((id, i) => JSON.stringify({ docid: id, text: ds.corpus.texts[i] })).join('\n') + '\n');
  fs.cpSync(path.join(beir, 'qrels'), path.join(hf, 'qrels'), { recursive: true }); // graded judgements from the qrels file
  fs.writeFileSync(path.join(hf, 'dev.jsonl'), ds.queryIds.map((q, i) => JSON.stringify({ query_id: q, query: ds.queryTexts[i], positive_passages: [], negative_passages: [] })).join('\n') + '\n');
  const a = path.join(tmp, 'beir.json');
  const b = path.join(tmp, 'hf.json');
  expect((await runCli(['eval', '--model', TINY_BERT, '--data', beir, '--json', a])).code).toBe(0);
  const r = await runCli(['eval', '--model', TINY_BERT, '--data', hf, '--data', beir, '--json', b]);
  expect(r.code).toBe(0);
  const single = JSON.parse(fs.readFileSync(a, 'utf8'));
  const multi = JSON.parse(fs.readFileSync(b, 'utf8'));
  expect(multi.datasets.map((d: { format: string }) => d.format)).toEqual(['hf-jsonl', 'beir']);
  expect(multi.datasets[0].metrics).toEqual(single);
  expect(multi.datasets[1].metrics).toEqual(single);
  expect(multi.macro).toEqual(single);
  // a split one of the folders lacks is refused before anything is encoded
  const noSplit = await runCli(['eval', '--model', TINY_BERT, '--data', beir, '--data', hf, '--split', 'test']);
  expect(noSplit.code).toBe(1);
  expect(noSplit.stderr).toMatch(/^m3: error: .*toy: no qrels\/test\.tsv for split 'test'\n$/);
});

test('--mcls: dense scores are those of m3 encode --mcls (a CLS every 256 tokens), not the plain CLS', async () => {
  // a model with room for long inputs (positions up to 600) so MCLS inserts CLS tokens
  const raw = { ...JSON.parse(fs.readFileSync(path.join(TINY, 'model', 'config.json'), 'utf8')), max_position_embeddings: 600, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1 };
  const longDir = path.join(tmp, 'long-model');
  await saveModel(initModel(parseConfig(raw), { seed: 11, tokenizer: loadTokenizer(path.join(TINY, 'tokenizer')) }), longDir);
  const words = (n: number, w: string) => Array.from({ length: n }, (_, i) => `${w}${i % 7 ? '' : ' and'}`).join(' ');
  const hf = path.join(tmp, 'mldr_en');
  fs.mkdirSync(hf);
  const docs = [words(300, 'river'), words(450, 'mountain'), words(20, 'river'), words(600, 'city')];
  fs.writeFileSync(path.join(hf, 'corpus.jsonl'), docs.map((text, i) => JSON.stringify({ docid: `d${i}`, text })).join('\n') + '\n');
  fs.writeFileSync(path.join(hf, 'test.jsonl'), [
    { query_id: 'q0', query: 'river', positive_passages: [{ docid: 'd0' }] },
    { query_id: 'q1', query: 'mountain and city', positive_passages: [{ docid: 'd1' }] },
  ].map((x) => JSON.stringify(x)).join('\n') + '\n');
  const runFile = path.join(tmp, 'mcls.trec');
  const json = path.join(tmp, 'mcls.json');
  const r = await runCli(['eval', '--model', longDir, '--data', hf, '--split', 'test', '--mcls', '--max-length', '512', '--run-file', runFile, '--json', json]);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  expect(JSON.parse(fs.readFileSync(json, 'utf8')).datasets[0]).toMatchObject({ name: 'mldr_en', format: 'hf-jsonl', language: 'en' });
  await tf.setBackend(backend);
  const model = loadModel(longDir);
  const score = async (mcls: boolean) => {
    const q = await encodeTexts(model, ['river', 'mountain and city'], { maxLength: 512, mcls });
    const d = await encodeTexts(model, docs, { maxLength: 512, mcls });
    return q.map((qv) => d.map((dv) => dot(qv.dense!, dv.dense!)));
  };
  const withMcls = await score(true);
  const plain = await score(false);
  const run = readRunTrec(runFile);
  for (const [qi, qid] of ['q0', 'q1'].entries()) {
    for (const { docId, score: s } of run.get(qid)!) {
      const di = Number(docId.slice(1));
      expect(s).toBeCloseTo(withMcls[qi][di], 5);
    }
  }
  // the long documents' scores move with MCLS (the 20-word one, under 256 tokens, does not)
  expect(Math.abs(withMcls[0][1] - plain[0][1])).toBeGreaterThan(1e-4);
  expect(withMcls[0][2]).toBeCloseTo(plain[0][2], 5);
  const bad = await runCli(['eval', '--model', longDir, '--data', hf, '--split', 'test', '--mcls', '--modes', 'dense,sparse']);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toMatch(/--mcls scores dense only/);
});
