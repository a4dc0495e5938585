/**
 * XQuAD-R (LAReQA: Roy et al., "LAReQA: Language-agnostic Answer Retrieval from a Multilingual Pool",
 * EMNLP 2020, arXiv:2004.05484; data and README: github.com/google-research-datasets/lareqa).
 *
 * A file is one language's SQuAD-v1.1 JSON with each paragraph's `sentences` and `sentence_breaks`
 * ([start, end) character offsets into `context`). Every sentence of every paragraph is a candidate answer
 * (en: 1,180 candidates for 1,190 questions, as the LAReQA README's table counts them); a question's
 * correct candidate is the sentence whose break range holds `answers[0].answer_start`. Questions share
 * their `id` across languages, so in a pool of several languages a question has one correct sentence per
 * language (11 in LAReQA's full XQuAD-R): a file evaluates its language's questions against its own
 * sentences, a folder every language's questions against all languages' sentences (LAReQA's
 * language-agnostic setting). The language is the file name (`de.json` → de). A candidate is encoded as
 * its sentence text alone.
 *
 * Metric: mAP@20 as LAReQA reports it: for each question the candidates are ranked by the dense inner
 * product (ties: lower pool index first; the pool is ordered by language name, then file order),
 *   AP@20(q) = (1 / |R_q|) · Σ_{r ≤ 20, candidate r ∈ R_q} P@r,   P@r = |R_q ∩ top r| / r,
 * with R_q the question's correct candidates, and mAP@20 the mean over questions of a language. Every
 * question has |R_q| ≤ 11 ≤ 20 correct candidates, so the denominator is the same as ranx's / trec_eval's
 * min(|R_q|, 20), and AP@20 equals full average precision (sklearn's `average_precision_score`, which
 * LAReQA-style evaluation scripts call) whenever all correct candidates rank in the top 20.
 */
import * as fs from 'fs';
import * as path from 'path';
import { M3Model } from '../model/m3';
import { UserError } from '../util/errors';
import { readTextFile } from './files';
import { denseSearch, Hits } from './search';

export const MAP_DEPTH = 20;

export interface XquadQuestions {
  ids: string[];
  texts: string[];
}

export interface XquadPool {
  /** The file or folder read. */
  source: string;
  /** Languages in pool order (sorted by name). */
  languages: string[];
  /** Candidate sentences, their language, and the question ids each one answers. */
  candidates: { texts: string[]; language: string[]; answers: string[][] };
  /** Each language's questions, in file order. */
  questions: Map<string, XquadQuestions>;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);

function list(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) throw new UserError(`${where} must be a list`);
  return v;
}

/** Whether a parsed JSON value has XQuAD-R's shape (data[].paragraphs[].sentences). */
export function looksLikeXquadR(v: unknown): boolean {
  if (!isObj(v) || !Array.isArray(v.data) || v.data.length === 0) return false;
  const a = v.data[0];
  return isObj(a) && Array.isArray(a.paragraphs) && isObj(a.paragraphs[0]) && Array.isArray(a.paragraphs[0].sentences) && Array.isArray(a.paragraphs[0].sentence_breaks);
}

export function parseJsonFile(file: string): unknown {
  try {
    return JSON.parse(readTextFile(file, 'XQuAD-R file'));
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** Reads one language's file into `pool` (candidates appended, questions under `language`). */
function readLanguage(file: string, language: string, pool: XquadPool, maxQuestions?: number): void {
  const root = parseJsonFile(file);
  if (!looksLikeXquadR(root)) throw new UserError(`${file}: not an XQuAD-R file (expected {"data": [{"paragraphs": [{"context", "qas", "sentences", "sentence_breaks"}]}]})`);
  const qs: XquadQuestions = { ids: [], texts: [] };
  const seen = new Set<string>();
  list((root as Obj).data, `${file}: 'data'`).forEach((article, ai) => {
    const paragraphs = list(isObj(article) ? article.paragraphs : undefined, `${file}: data[${ai}].paragraphs`);
    paragraphs.forEach((p, pi) => {
      const at = `${file}: data[${ai}].paragraphs[${pi}]`;
      if (!isObj(p)) throw new UserError(`${at} must be an object`);
      const sentences = list(p.sentences, `${at}.sentences`);
      const breaks = list(p.sentence_breaks, `${at}.sentence_breaks`);
      if (breaks.length !== sentences.length) throw new UserError(`${at}: ${sentences.length} sentences but ${breaks.length} sentence_breaks`);
      const first = pool.candidates.texts.length;
      sentences.forEach((s, si) => {
        if (typeof s !== 'string') throw new UserError(`${at}.sentences[${si}] must be a string`);
        const b = breaks[si];
        if (!Array.isArray(b) || b.length !== 2 || !b.every((x) => Number.isInteger(x))) throw new UserError(`${at}.sentence_breaks[${si}] must be [start, end] integers`);
        pool.candidates.texts.push(s);
        pool.candidates.language.push(language);
        pool.candidates.answers.push([]);
      });
      list(p.qas, `${at}.qas`).forEach((qa, qi) => {
        const qat = `${at}.qas[${qi}]`;
        if (!isObj(qa) || typeof qa.id !== 'string' || typeof qa.question !== 'string') throw new UserError(`${qat} must have a string 'id' and 'question'`);
        const ans = list(qa.answers, `${qat}.answers`)[0];
        if (!isObj(ans) || !Number.isInteger(ans.answer_start)) throw new UserError(`${qat}.answers[0] must have an integer 'answer_start'`);
        const start = ans.answer_start as number;
        const si = (breaks as number[][]).findIndex(([b, e]) => b <= start && start < e);
        if (si < 0) throw new UserError(`${qat}: answer_start ${start} is in no sentence_breaks range`);
        if (seen.has(qa.id)) throw new UserError(`${qat}: question id '${qa.id}' appears twice`);
        seen.add(qa.id);
        pool.candidates.answers[first + si].push(qa.id);
        if (maxQuestions === undefined || qs.ids.length < maxQuestions) {
          qs.ids.push(qa.id);
          qs.texts.push(qa.question);
        }
      });
    });
  });
  if (qs.ids.length === 0) throw new UserError(`${file}: no questions`);
  pool.questions.set(language, qs);
}

/** The XQuAD-R files of a folder (`<lang>.json`), sorted by language. */
export function xquadFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => path.join(dir, f));
}

export const languageOfJson = (file: string) => path.basename(file, '.json');

/** A file: that language's questions and sentences; a folder: every language's questions over all sentences. */
export function loadXquadR(source: string, opts: { maxQueries?: number } = {}): XquadPool {
  const pool: XquadPool = { source, languages: [], candidates: { texts: [], language: [], answers: [] }, questions: new Map() };
  const files = fs.statSync(source).isDirectory() ? xquadFiles(source) : [source];
  if (files.length === 0) throw new UserError(`${source}: no <language>.json XQuAD-R files`);
  for (const f of files) {
    const lang = languageOfJson(f);
    pool.languages.push(lang);
    readLanguage(f, lang, pool, opts.maxQueries);
  }
  return pool;
}

/** For each question id, the pool indices of its correct candidates. */
export function relevantCandidates(pool: XquadPool): Map<string, number[]> {
  const rel = new Map<string, number[]>();
  pool.candidates.answers.forEach((qids, i) => {
    for (const q of qids) {
      let l = rel.get(q);
      if (!l) rel.set(q, (l = []));
      l.push(i);
    }
  });
  return rel;
}

/** AP@k of one ranking (pool indices, best first) against the correct candidates (see the header). */
export function averagePrecisionAt(ranked: ArrayLike<number>, relevant: ReadonlySet<number>, k = MAP_DEPTH): number {
  if (relevant.size === 0) return 0;
  let found = 0;
  let sum = 0;
  for (let r = 0; r < Math.min(k, ranked.length); r++) {
    if (relevant.has(ranked[r])) sum += ++found / (r + 1);
  }
  return sum / Math.min(relevant.size, k);
}

/** mAP@20 of each language's questions, from their dense top-20 hits (one Hits per question, in order). */
export function xquadMapAt20(pool: XquadPool, hits: Map<string, Hits[]>): Map<string, number> {
  const rel = relevantCandidates(pool);
  const out = new Map<string, number>();
  for (const [lang, qs] of pool.questions) {
    const h = hits.get(lang)!;
    let sum = 0;
    qs.ids.forEach((qid, i) => (sum += averagePrecisionAt(h[i].indices, new Set(rel.get(qid) ?? []))));
    out.set(lang, sum / qs.ids.length);
  }
  return out;
}

export interface XquadEncoder {
  /** Dense vectors of texts as one row-major matrix. */
  (model: M3Model, texts: string[], maxLength: number, label: string): Promise<{ data: Float32Array; rows: number; dim: number }>;
}

/** Encodes the pool and each language's questions, searches the top 20 exactly, and scores mAP@20 per language. */
export async function evaluateXquadR(model: M3Model, pool: XquadPool, encode: XquadEncoder, opts: { maxLength: number; queryMaxLength: number }): Promise<Map<string, number>> {
  const corpus = await encode(model, pool.candidates.texts, opts.maxLength, 'encode candidates');
  const hits = new Map<string, Hits[]>();
  for (const [lang, qs] of pool.questions) {
    const q = await encode(model, qs.texts, opts.queryMaxLength, `encode questions (${lang})`);
    hits.set(lang, denseSearch(q, corpus, MAP_DEPTH));
  }
  return xquadMapAt20(pool, hits);
}
