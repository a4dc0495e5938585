/**
 * `m3 data check`: what in a training JSONL would quietly hurt training, counted with the first few
 * examples of each, before any tokenizing or training. Per row (FlagEmbedding's fine-tuning format):
 *
 *   duplicate_queries      rows whose query (normalised) is an earlier row's
 *   pos_neg_overlap        negatives that are, byte for byte, a positive of the same row
 *   false_negatives        negatives whose normalised text is a positive's of the same row (exact ones too)
 *   empty_texts            queries, positives, negatives (pretrain: texts) that are empty or only whitespace
 *   truncated              texts longer than the max length in tokens, specials included (with a tokenizer)
 *   short_groups           rows with fewer negatives than a group of train_group_size needs (G − 1; the
 *                          row's train_group_size column first, as the reader): FlagEmbedding then samples
 *                          negatives with replacement, so the group repeats passages
 *   score_length_mismatch  rows whose pos_scores / neg_scores do not have one score per pos / neg
 *   leakage                training queries and positives whose normalised text is an evaluation query
 *
 * "Normalised" (`normalizeText`): Unicode NFKC, lower case, every run of characters that are not letters,
 * combining marks or digits (whitespace, punctuation, symbols) made one space, trimmed.
 *
 * `errors` lists what would stop `m3 data prepare` / `m3 train` (lines the trainer refuses — a score-length
 * mismatch is one — and empty files, unless skipping invalid rows; rows without negatives where a group needs
 * them; no row at all); everything else is a warning. Reads in bounded memory except for one normalised
 * query per distinct query.
 */
import * as fs from 'fs';
import type { Tokenizer } from '../model/tokenizer';
import { UserError } from '../util/errors';
import { Progress } from '../util/progress';
import { isTruncated } from './encode';
import { discoverInputs, readLines } from './lines';
import { DataFormat, describeInvalid, detectFormat, isInvalidRecord, PairRecord, parseRecord, TextRecord } from './records';
import { groupSizeFor } from './sampling';

export const CHECKS = [
  'duplicate_queries', 'pos_neg_overlap', 'false_negatives', 'empty_texts', 'truncated', 'short_groups', 'score_length_mismatch', 'leakage',
] as const;
export type CheckName = (typeof CHECKS)[number];

/** The checks that need something besides the data, and what (the report says so when it is missing). */
const NEEDS: Partial<Record<CheckName, string>> = { truncated: '--tokenizer and --max-length', leakage: '--eval' };

export interface CheckExample {
  file: string;
  line: number;
  /** The text's field ("neg[3]"), or null for a whole line. */
  field: string | null;
  /** The text (shortened), or the invalid line's problem. */
  text: string;
  /** What it clashes with ("= pos[0]", "first on line 2", "eval query 'PLAIN-5'"). */
  note?: string;
}

export interface CheckOptions {
  /** Detected from the first file's first line when absent (see detectFormat). */
  format?: DataFormat;
  /** train_group_size for `short_groups` (default: 8 for finetune, 1 for pairs, as the reader). */
  groupSize?: number;
  /** With maxLength: counts `truncated`. */
  tokenizer?: Tokenizer;
  /** Passages' max length in tokens, specials included (queries' too unless queryMaxLength). */
  maxLength?: number;
  queryMaxLength?: number;
  /** Evaluation query id → text: counts `leakage`. */
  evalQueries?: Map<string, string>;
  /** Invalid lines and empty files are skipped by training (data.skip_invalid), so they are warnings. */
  skipInvalid?: boolean;
  /** Examples kept per check (default 3). */
  examples?: number;
  /** Draw a progress bar on stderr (default true; see util/progress for when it is drawn). */
  progress?: boolean;
}

export interface DataCheck {
  files: string[];
  format: DataFormat;
  /** Valid rows (pretrain: texts), and the texts in them (queries, positives, negatives). */
  rows: number;
  texts: number;
  /** Rows with teacher scores (pos_scores / neg_scores). */
  scoredRows: number;
  /** null: the check does not apply to the format, or needs what was not given (NEEDS). */
  counts: Record<CheckName, number | null>;
  /** Lines the trainer refuses (score-length mismatches included), and empty files. */
  invalidLines: number;
  examples: Record<CheckName | 'invalid_lines', CheckExample[]>;
  /** What would make training fail, one line each; empty: training can start. */
  errors: string[];
}

/** The text near-exact duplicates are compared by (see the file comment). */
export function normalizeText(s: string): string {
  return s.normalize('NFKC').toLowerCase().replace(/[^\p{L}\p{M}\p{N}]+/gu, ' ').trim();
}

const SNIPPET = 80;
const snippet = (s: string) => {
  const t = s.replace(/\s+/g, ' ');
  return t.length > SNIPPET ? `${t.slice(0, SNIPPET - 1)}…` : t;
};

/** The format of `inputs`, from the first line of the first file that has one. */
async function detectInputFormat(files: string[]): Promise<DataFormat> {
  for (const file of files) {
    const { lines } = readLines(file);
    for await (const { lineNo, text } of lines) {
      const format = detectFormat(text);
      if (!format) throw new UserError(`${file}:${lineNo}: cannot tell the format (expected a JSON object with "query" or "text"); give --format`);
      return format;
    }
  }
  throw new UserError(`${files.join(', ')}: no JSON lines to check`);
}

/** Checks the JSONL files or directories `inputs` (as `data prepare` reads them). */
export async function checkTrainingData(inputs: string[], opts: CheckOptions = {}): Promise<DataCheck> {
  const files = discoverInputs(inputs).flatMap((g) => g.files);
  const format = opts.format ?? (await detectInputFormat(files));
  const pairs = format !== 'pretrain';
  const groupSize = opts.groupSize ?? (format === 'pairs' ? 1 : 8);
  if (!Number.isInteger(groupSize) || groupSize < 1) throw new UserError(`--group-size must be an integer ≥ 1, got ${groupSize}`);
  const tok = opts.tokenizer;
  const maxLength = opts.maxLength;
  const queryMaxLength = opts.queryMaxLength ?? maxLength;
  if ((tok === undefined) !== (maxLength === undefined)) throw new UserError('a tokenizer and a max length go together (--tokenizer DIR --max-length N)');
  for (const [flag, n] of [['--max-length', maxLength], ['--query-max-length', queryMaxLength]] as const) {
    if (n !== undefined && !(Number.isInteger(n) && n >= 3)) throw new UserError(`${flag} must be an integer ≥ 3, got ${n}`);
  }
  const keep = opts.examples ?? 3;

  const counts = Object.fromEntries(CHECKS.map((c) => [c, 0])) as Record<CheckName, number>;
  const examples = Object.fromEntries([...CHECKS, 'invalid_lines'].map((c) => [c, []])) as unknown as DataCheck['examples'];
  const found = (check: CheckName | 'invalid_lines', e: CheckExample) => {
    if (check !== 'invalid_lines') counts[check]++;
    if (examples[check].length < keep) examples[check].push(e);
  };
  const evalIds = new Map<string, string>();
  for (const [id, text] of opts.evalQueries ?? []) {
    const n = normalizeText(text);
    if (n && !evalIds.has(n)) evalIds.set(n, id);
  }
  // normalised query → where it was first seen (file index · 2^32 + line)
  const firstSeen = new Map<string, number>();
  let rows = 0;
  let texts = 0;
  let scoredRows = 0;
  let invalidLines = 0;
  let noNegatives = 0;
  const emptyFiles: string[] = [];
  let firstInvalid: string | null = null;

  const totalBytes = files.reduce((a, f) => a + fs.statSync(f).size, 0);
  const progress = opts.progress === false ? null : new Progress('check', Math.ceil(totalBytes / 1024), 'KiB');
  let bytes = 0;
  for (const [fi, file] of files.entries()) {
    const { lines } = readLines(file, (n) => progress?.update(Math.floor((bytes += n) / 1024)));
    let seen = 0;
    for await (const { lineNo: line, text: raw } of lines) {
      seen++;
      const rec = parseRecord(raw, format);
      if (isInvalidRecord(rec)) {
        invalidLines++;
        firstInvalid ??= describeInvalid(`${file}:${line}`, rec);
        found('invalid_lines', { file, line, field: rec.field, text: rec.message });
        if (rec.reason === 'score_length') found('score_length_mismatch', { file, line, field: rec.field, text: rec.message });
        continue;
      }
      rows++;
      const empty = (field: string, text: string) => {
        texts++;
        if (text.trim() === '') found('empty_texts', { file, line, field, text });
      };
      if (!pairs) {
        empty('text', (rec as TextRecord).text);
        continue;
      }
      const r = rec as PairRecord;
      if (r.posScores !== null) scoredRows++;
      empty('query', r.query);
      r.pos.forEach((p, i) => empty(`pos[${i}]`, p));
      r.neg.forEach((p, i) => empty(`neg[${i}]`, p));

      const q = normalizeText(r.query);
      const first = q ? firstSeen.get(q) : undefined;
      if (first === undefined) {
        if (q) firstSeen.set(q, fi * 2 ** 32 + line);
      } else {
        const [ff, fl] = [Math.floor(first / 2 ** 32), first % 2 ** 32];
        found('duplicate_queries', { file, line, field: 'query', text: snippet(r.query), note: `first on ${ff === fi ? `line ${fl}` : `${files[ff]}:${fl}`}` });
      }

      const exact = new Map(r.pos.map((p, i) => [p, i] as const).reverse());
      const near = new Map(r.pos.map((p, i) => [normalizeText(p), i] as const).filter(([n]) => n).reverse());
      r.neg.forEach((n, j) => {
        const e = exact.get(n);
        if (e !== undefined) found('pos_neg_overlap', { file, line, field: `neg[${j}]`, text: snippet(n), note: `= pos[${e}]` });
        const k = e ?? near.get(normalizeText(n));
        if (k !== undefined) found('false_negatives', { file, line, field: `neg[${j}]`, text: snippet(n), note: `${e !== undefined ? '=' : '≈'} pos[${k}]` });
      });

      const g = groupSizeFor(r.type, r.neg.length, r.trainGroupSize ?? groupSize);
      if (r.neg.length < g - 1) {
        found('short_groups', { file, line, field: 'neg', text: `${r.neg.length} negatives`, note: `a group of ${g} needs ${g - 1}` });
        if (r.neg.length === 0) noNegatives++;
      }

      if (tok && maxLength !== undefined) {
        if (isTruncated(tok, r.query, queryMaxLength!)) found('truncated', { file, line, field: 'query', text: snippet(r.query), note: `> ${queryMaxLength} tokens` });
        const long = (field: string) => (p: string, i: number) => {
          if (isTruncated(tok, p, maxLength)) found('truncated', { file, line, field: `${field}[${i}]`, text: snippet(p), note: `> ${maxLength} tokens` });
        };
        r.pos.forEach(long('pos'));
        r.neg.forEach(long('neg'));
      }

      if (evalIds.size) {
        const leak = (field: string, text: string) => {
          const id = evalIds.get(normalizeText(text));
          if (id !== undefined) found('leakage', { file, line, field, text: snippet(text), note: `eval query '${id}'` });
        };
        leak('query', r.query);
        r.pos.forEach((p, i) => leak(`pos[${i}]`, p));
      }
    }
    if (seen === 0) {
      emptyFiles.push(file);
      found('invalid_lines', { file, line: 1, field: null, text: 'empty file (no JSON lines)' });
    }
  }
  progress?.update(Math.ceil(totalBytes / 1024));
  progress?.done(`${rows} rows`);

  const errors: string[] = [];
  if (!opts.skipInvalid) {
    if (invalidLines) errors.push(`${invalidLines} line${invalidLines > 1 ? 's' : ''} the trainer refuses (first: ${firstInvalid}); fix them, or skip them with data.skip_invalid / --skip-invalid`);
    for (const f of emptyFiles) errors.push(`${f}:1: empty file (no JSON lines)`);
  }
  if (noNegatives) errors.push(`${noNegatives} row${noNegatives > 1 ? 's have' : ' has'} no negatives, which cannot fill their groups; use train_group_size 1 or add negatives`);
  if (rows === 0) errors.push(`${inputs.join(', ')}: no rows to train on`);

  const applies = (c: CheckName): boolean => {
    if (!pairs) return c === 'empty_texts';
    if (c === 'truncated') return !!tok;
    if (c === 'leakage') return opts.evalQueries !== undefined;
    return true;
  };
  return {
    files, format, rows, texts, scoredRows,
    counts: Object.fromEntries(CHECKS.map((c) => [c, applies(c) ? counts[c] : null])) as Record<CheckName, number | null>,
    invalidLines: invalidLines + emptyFiles.length,
    examples,
    errors,
  };
}

/** `--json`: the counts at the top level, then the rest. */
export function checkJson(c: DataCheck): Record<string, unknown> {
  return {
    ...c.counts,
    invalid_lines: c.invalidLines,
    format: c.format,
    files: c.files,
    rows: c.rows,
    texts: c.texts,
    scored_rows: c.scoredRows,
    truncated_share: c.counts.truncated === null || c.texts === 0 ? null : c.counts.truncated / c.texts,
    examples: Object.fromEntries(Object.entries(c.examples).filter(([, v]) => v.length)),
    errors: c.errors,
  };
}

const WHAT: Record<CheckName | 'invalid_lines', string> = {
  invalid_lines: 'lines training refuses',
  duplicate_queries: 'rows whose query is an earlier row\'s (normalised)',
  pos_neg_overlap: 'negatives identical to a positive of their row',
  false_negatives: 'negatives equal to a positive after normalising (exact ones too)',
  empty_texts: 'empty or whitespace-only texts',
  truncated: 'texts over the max length in tokens',
  short_groups: 'rows with fewer negatives than their group needs (sampled with replacement)',
  score_length_mismatch: 'rows whose pos_scores / neg_scores lengths differ from pos / neg',
  leakage: 'training queries and positives that are evaluation queries (normalised)',
};

/** The human-readable report: a line per check with its count, its examples under it. */
export function formatCheck(c: DataCheck): string {
  const scored = c.format === 'pretrain' ? '' : `, teacher scores on ${c.scoredRows === c.rows ? 'every row' : `${c.scoredRows} rows`}`;
  const out: string[] = [`${c.format} data: ${c.rows} rows, ${c.texts} texts in ${c.files.length} file${c.files.length > 1 ? 's' : ''}${scored}`];
  for (const check of ['invalid_lines', ...CHECKS] as const) {
    const n = check === 'invalid_lines' ? c.invalidLines : c.counts[check];
    const share = check === 'truncated' && n !== null && c.texts ? ` (${((100 * n) / c.texts).toFixed(1)} %)` : '';
    const shown = n === null ? `-  (${c.format === 'pretrain' ? `not for ${c.format} data` : `needs ${NEEDS[check as CheckName]}`})` : `${n}${share}`;
    out.push(`${check.padEnd(22)} ${shown.padEnd(12)} ${n === null ? '' : WHAT[check]}`.trimEnd());
    for (const e of c.examples[check]) {
      out.push(`    ${e.file}:${e.line}${e.field ? ` ${e.field}` : ''}: ${JSON.stringify(e.text)}${e.note ? ` ${e.note}` : ''}`);
    }
  }
  out.push(c.errors.length ? `training would fail:\n${c.errors.map((e) => `  ${e}`).join('\n')}` : 'training can start (the counts above are warnings)');
  return out.join('\n') + '\n';
}

/** One line for a training log: the counts that are not zero, and where the details are. */
export function checkSummary(c: DataCheck): string {
  const found = [
    ...(c.invalidLines ? [`invalid_lines ${c.invalidLines}`] : []),
    ...CHECKS.filter((k) => c.counts[k]).map((k) => `${k} ${c.counts[k]}`),
  ];
  const what = `${c.rows} rows in ${c.files.length} file${c.files.length > 1 ? 's' : ''}`;
  return `data: checked ${what}: ${found.length ? `${found.join(', ')} (details: m3 data check --input ${c.files.join(' ')})` : 'no problems found'}`;
}
