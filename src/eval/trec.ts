/**
 * TREC file formats: qrels (`qid iter docid rel`) and runs (`qid Q0 docid rank score tag`), whitespace
 * separated as trec_eval reads them. Runs are written with full-precision scores (the shortest decimal
 * that reads back as the same double) so ties in the file are ties in the ranking.
 */
import { UserError } from '../util/errors';
import { numberedLines, readTextFile } from './files';
import { Qrels, Run, trecOrder } from './metrics';

/** Reads a TREC qrels file. A repeated (qid, docid) keeps the last grade. */
export function readQrelsTrec(file: string): Qrels {
  const qrels: Qrels = new Map();
  for (const { line, lineNo } of numberedLines(readTextFile(file, 'qrels file'))) {
    const cols = line.trim().split(/\s+/);
    if (cols.length !== 4) throw new UserError(`${file}:${lineNo}: expected 4 columns 'qid iter docid rel', got ${cols.length}`);
    const rel = Number(cols[3]);
    if (!Number.isInteger(rel)) throw new UserError(`${file}:${lineNo}: relevance '${cols[3]}' is not an integer`);
    let judged = qrels.get(cols[0]);
    if (!judged) qrels.set(cols[0], (judged = new Map()));
    judged.set(cols[2], rel);
  }
  return qrels;
}

/** Reads a TREC run file; the rank and tag columns are ignored (trec_eval orders by score). */
export function readRunTrec(file: string): Run {
  const run: Run = new Map();
  const seen = new Map<string, Set<string>>();
  for (const { line, lineNo } of numberedLines(readTextFile(file, 'run file'))) {
    const cols = line.trim().split(/\s+/);
    if (cols.length !== 6) throw new UserError(`${file}:${lineNo}: expected 6 columns 'qid Q0 docid rank score tag', got ${cols.length}`);
    const score = Number(cols[4]);
    if (!Number.isFinite(score)) throw new UserError(`${file}:${lineNo}: score '${cols[4]}' is not a number`);
    const [qid, , docId] = cols;
    let docs = run.get(qid);
    let ids = seen.get(qid);
    if (!docs || !ids) {
      run.set(qid, (docs = []));
      seen.set(qid, (ids = new Set()));
    }
    if (ids.has(docId)) throw new UserError(`${file}:${lineNo}: document '${docId}' appears twice for query '${qid}'`);
    ids.add(docId);
    docs.push({ docId, score });
  }
  return run;
}

/** Formats a run in trec_eval order with ranks 1..n per query; `tag` must not contain whitespace. */
export function formatRunTrec(run: Run, tag: string): string {
  if (/\s/.test(tag) || tag === '') throw new UserError(`run tag '${tag}' must be non-empty without whitespace`);
  const out: string[] = [];
  for (const [qid, docs] of run) {
    trecOrder(docs).forEach((d, i) => out.push(`${qid} Q0 ${d.docId} ${i + 1} ${d.score} ${tag}`));
  }
  return out.length ? out.join('\n') + '\n' : '';
}
