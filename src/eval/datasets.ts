/**
 * What an evaluation path is, decided by its layout (`m3 eval --data`, a stage's `eval.data`):
 *
 *   beir      a folder with corpus.jsonl[.gz], queries.jsonl and qrels/            (src/eval/data.ts)
 *   hf-jsonl  a folder with corpus.jsonl[.gz] of {docid, ...} and <split>.jsonl    (src/eval/hf-jsonl.ts)
 *             of {query_id, query, positive_passages, ...}: MIRACL's and MLDR's Hugging Face layout
 *   xquad-r   a <lang>.json LAReQA file, or a folder of them                      (src/eval/xquad.ts)
 *   tatoeba   tatoeba.<xxx>-eng.<xxx> (or its .eng side) with the other beside it (src/eval/bitext.ts)
 *
 * The language comes from the file name: `de.json` → de, `tatoeba.deu-eng.deu` → deu, and a folder whose
 * name is or ends in a two-letter code (`sw`, `miracl-sw`, `mldr_zh`) → that code; otherwise none.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../util/errors';
import { tatoebaPairOf } from './bitext';
import { hfCorpusFile, hfSplits } from './hf-jsonl';
import { languageOfJson, looksLikeXquadR, parseJsonFile, xquadFiles } from './xquad';

export const EVAL_FORMATS = ['beir', 'hf-jsonl', 'xquad-r', 'tatoeba'] as const;
export type EvalFormat = (typeof EVAL_FORMATS)[number];

export interface EvalDataSpec {
  /** The path as resolved. */
  path: string;
  format: EvalFormat;
  /** The file or folder name (for a Tatoeba pair, `tatoeba.<xxx>-eng`). */
  name: string;
  /** For an XQuAD-R folder, null: each of its languages is reported on its own. */
  language: string | null;
}

/** Whether the format is searched and scored like a BEIR folder (every mode; nDCG@10, Recall@100, MRR@10). */
export const isRetrievalFormat = (f: EvalFormat): boolean => f === 'beir' || f === 'hf-jsonl';

function folderLanguage(dir: string): string | null {
  const m = /(?:^|[-_.])([a-z]{2})$/.exec(path.basename(dir));
  return m ? m[1] : null;
}

const LAYOUTS = 'a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), a Hugging Face layout folder (corpus.jsonl, <split>.jsonl), an XQuAD-R <lang>.json file or folder, or a Tatoeba pair tatoeba.<xxx>-eng.<xxx>';

/** Detects the format of an evaluation path; a clear error when it is none of them. */
export function detectEvalData(p: string): EvalDataSpec {
  const abs = path.resolve(p);
  if (!fs.existsSync(abs)) {
    const pair = tatoebaPairOf(abs);
    if (pair) throw new UserError(`${p}: does not exist (a Tatoeba pair needs ${path.basename(pair.xxxFile)} and ${path.basename(pair.engFile)} side by side)`);
    throw new UserError(`${p}: evaluation data does not exist`);
  }
  if (fs.statSync(abs).isDirectory()) {
    const has = (f: string) => fs.existsSync(path.join(abs, f));
    if (has('queries.jsonl') && has('qrels')) return { path: abs, format: 'beir', name: path.basename(abs), language: folderLanguage(abs) };
    if (hfCorpusFile(abs) && hfSplits(abs).length) return { path: abs, format: 'hf-jsonl', name: path.basename(abs), language: folderLanguage(abs) };
    const jsons = xquadFiles(abs);
    if (jsons.length && !hfCorpusFile(abs)) {
      const bad = jsons.find((f) => !looksLikeXquadR(parseJsonFile(f)));
      if (bad) throw new UserError(`${bad}: not an XQuAD-R file, so ${p} is not an XQuAD-R folder (every .json in it must be one language's file)`);
      return { path: abs, format: 'xquad-r', name: path.basename(abs), language: null };
    }
    throw new UserError(`${p}: not a recognised evaluation folder; expected ${LAYOUTS}`);
  }
  const pair = tatoebaPairOf(abs);
  if (pair) {
    const missing = [pair.xxxFile, pair.engFile].find((f) => !fs.existsSync(f));
    if (missing) throw new UserError(`${missing}: does not exist (a Tatoeba pair needs ${path.basename(pair.xxxFile)} and ${path.basename(pair.engFile)} side by side)`);
    return { path: pair.xxxFile, format: 'tatoeba', name: path.basename(pair.xxxFile).replace(/\.[^.]+$/, ''), language: pair.language };
  }
  if (abs.endsWith('.json')) {
    if (!looksLikeXquadR(parseJsonFile(abs))) throw new UserError(`${p}: not an XQuAD-R file (expected {"data": [{"paragraphs": [{"context", "qas", "sentences", "sentence_breaks"}]}]})`);
    return { path: abs, format: 'xquad-r', name: path.basename(abs), language: languageOfJson(abs) };
  }
  throw new UserError(`${p}: not a recognised evaluation file; expected ${LAYOUTS}`);
}
