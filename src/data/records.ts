/**
 * One JSON line → one validated record, or the reason it is invalid (with the field to blame), so that
 * `prepare` can stop at `file:line` or, with --skip-invalid, count skipped rows by reason.
 * Formats: finetune `{query, pos[], neg[], pos_scores?, neg_scores?, prompt?, type?, batch_size?,
 * train_group_size?}` (FlagEmbedding's fine-tuning data), pairs (the same, `neg` optional), pretrain `{text}`.
 */

export type DataFormat = 'finetune' | 'pairs' | 'pretrain';
export const DATA_FORMATS: DataFormat[] = ['finetune', 'pairs', 'pretrain'];

export type InvalidReason =
  | 'invalid_utf8'
  | 'malformed_json'
  | 'not_object'
  | 'missing_field'
  | 'wrong_type'
  | 'empty_pos'
  | 'non_finite_score'
  | 'score_length'
  | 'bad_value'
  | 'empty_file';

export interface Invalid {
  reason: InvalidReason;
  /** The field to blame ("pos_scores[2]"), or null for whole-line problems. */
  field: string | null;
  message: string;
}

export interface PairRecord {
  query: string;
  pos: string[];
  neg: string[];
  posScores: number[] | null;
  negScores: number[] | null;
  prompt: string | null;
  type: string | null;
  batchSize: number | null;
  trainGroupSize: number | null;
}

export interface TextRecord {
  text: string;
}

export type ParsedRecord = PairRecord | TextRecord;

const NON_FINITE_KEY = '__m3_non_finite__';

/**
 * JSON.parse, and when it fails because of Python's bare NaN / Infinity tokens, a second parse with
 * those tokens turned into markers, so the error can name the score instead of "invalid JSON".
 */
function parseJsonLine(text: string): unknown | Invalid {
  try {
    return JSON.parse(text);
  } catch (e) {
    const marked = text.replace(/"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)/g, (m, tok) => (tok ? `{"${NON_FINITE_KEY}":"${tok}"}` : m));
    if (marked !== text) {
      try {
        return JSON.parse(marked);
      } catch {
        /* fall through */
      }
    }
    const hint = /^\s*\[/.test(text) ? ' (JSON arrays are not read: write one object per line)' : '';
    return { reason: 'malformed_json', field: null, message: `invalid JSON: ${(e as Error).message}${hint}` };
  }
}

function isInvalid(v: unknown): v is Invalid {
  return !!v && typeof v === 'object' && 'reason' in (v as object) && 'message' in (v as object) && 'field' in (v as object);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return NON_FINITE_KEY in (v as object) ? String((v as Record<string, unknown>)[NON_FINITE_KEY]) : 'an object';
  return `a ${typeof v}`;
}

const bad = (reason: InvalidReason, field: string | null, message: string): Invalid => ({ reason, field, message });

function stringList(obj: Record<string, unknown>, key: string, required: boolean, allowString: boolean): string[] | Invalid | null {
  const v = obj[key];
  if (v === undefined || v === null) return required ? bad('missing_field', key, `missing (expected a list of strings)`) : null;
  if (allowString && typeof v === 'string') return [v];
  if (!Array.isArray(v)) return bad('wrong_type', key, `expected a list of strings, got ${typeName(v)}`);
  for (let i = 0; i < v.length; i++) {
    if (typeof v[i] !== 'string') return bad('wrong_type', `${key}[${i}]`, `expected a string, got ${typeName(v[i])}`);
  }
  return v as string[];
}

function scoreList(obj: Record<string, unknown>, key: string, expectLength: number, textsKey: string): number[] | Invalid | null {
  const v = obj[key];
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v)) return bad('wrong_type', key, `expected a list of numbers, got ${typeName(v)}`);
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (x && typeof x === 'object' && NON_FINITE_KEY in x) return bad('non_finite_score', `${key}[${i}]`, `score is ${x[NON_FINITE_KEY]}; scores must be finite`);
    if (typeof x !== 'number') return bad('wrong_type', `${key}[${i}]`, `expected a number, got ${typeName(x)}`);
    if (!Number.isFinite(x)) return bad('non_finite_score', `${key}[${i}]`, `score is ${x}; scores must be finite`);
  }
  if (v.length !== expectLength) return bad('score_length', key, `has ${v.length} scores but ${textsKey} has ${expectLength} texts`);
  return v as number[];
}

function optionalString(obj: Record<string, unknown>, key: string): string | null | Invalid {
  const v = obj[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') return bad('wrong_type', key, `expected a string, got ${typeName(v)}`);
  return v;
}

function optionalPositiveInt(obj: Record<string, unknown>, key: string): number | null | Invalid {
  const v = obj[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v)) return bad('wrong_type', key, `expected a positive integer, got ${typeName(v)}${typeof v === 'number' ? ` ${v}` : ''}`);
  if (v < 1) return bad('bad_value', key, `must be ≥ 1, got ${v}`);
  return v;
}

/** Validates one line's text. `text` null means the line's bytes were not valid UTF-8. */
export function parseRecord(text: string | null, format: DataFormat): ParsedRecord | Invalid {
  if (text === null) return bad('invalid_utf8', null, 'line is not valid UTF-8');
  const parsed = parseJsonLine(text);
  if (isInvalid(parsed)) return parsed;
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return bad('not_object', null, `expected a JSON object, got ${typeName(parsed)}`);
  return recordOf(parsed as Record<string, unknown>, format);
}

/** Validates one parsed line's fields (FlagEmbedding's training-data keys and their old aliases). */
export function recordOf(obj: Record<string, unknown>, format: 'pairs' | 'finetune'): PairRecord | Invalid;
export function recordOf(obj: Record<string, unknown>, format: DataFormat): ParsedRecord | Invalid;
export function recordOf(obj: Record<string, unknown>, format: DataFormat): ParsedRecord | Invalid {
  if (format === 'pretrain') {
    // `content` is the old FlagEmbedding corpus field ({content} lines of toy_corpus.json)
    const key = obj.text !== undefined ? 'text' : obj.content !== undefined ? 'content' : null;
    if (key === null) return bad('missing_field', 'text', 'missing (expected a string)');
    if (typeof obj[key] !== 'string') return bad('wrong_type', key, `expected a string, got ${typeName(obj[key])}`);
    return { text: obj[key] as string };
  }

  const query = obj.query;
  if (query === undefined || query === null) return bad('missing_field', 'query', 'missing (expected a string)');
  if (typeof query !== 'string') return bad('wrong_type', 'query', `expected a string, got ${typeName(query)}`);
  // `positive` is the old FlagEmbedding eval-query field ({query, positive[]} lines of toy_query.json)
  const posKey = obj.pos === undefined && obj.positive !== undefined ? 'positive' : 'pos';
  const pos = stringList(obj, posKey, true, format === 'pairs');
  if (isInvalid(pos)) return pos;
  if (pos!.length === 0) return bad('empty_pos', posKey, 'is empty; every query needs at least one positive');
  const neg = stringList(obj, 'neg', format === 'finetune', false);
  if (isInvalid(neg)) return neg;
  const negs = neg ?? [];
  const posScores = scoreList(obj, 'pos_scores', pos!.length, posKey);
  if (isInvalid(posScores)) return posScores;
  const negScores = scoreList(obj, 'neg_scores', negs.length, 'neg');
  if (isInvalid(negScores)) return negScores;
  if ((posScores === null) !== (negScores === null) && negs.length > 0) {
    const missing = posScores === null ? 'pos_scores' : 'neg_scores';
    return bad('missing_field', missing, `missing while ${missing === 'pos_scores' ? 'neg_scores' : 'pos_scores'} is given (teacher scores need both)`);
  }
  const prompt = optionalString(obj, 'prompt');
  if (isInvalid(prompt)) return prompt;
  const type = optionalString(obj, 'type');
  if (isInvalid(type)) return type;
  const batchSize = optionalPositiveInt(obj, 'batch_size');
  if (isInvalid(batchSize)) return batchSize;
  const trainGroupSize = optionalPositiveInt(obj, 'train_group_size');
  if (isInvalid(trainGroupSize)) return trainGroupSize;
  return {
    query,
    pos: pos!,
    neg: negs,
    posScores,
    negScores: negScores ?? (posScores !== null ? [] : null),
    prompt,
    type,
    batchSize,
    trainGroupSize,
  };
}

export function isInvalidRecord(r: ParsedRecord | Invalid): r is Invalid {
  return isInvalid(r);
}

/** "file:line: field: message" — the one-line form every bad-input error takes. */
export function describeInvalid(where: string, inv: Invalid): string {
  return `${where}: ${inv.field ? `${inv.field}: ` : ''}${inv.message}`;
}

/**
 * The format a line's keys say it is in (for commands that take --format as optional): `query` with `neg`
 * → finetune, `query` without → pairs, `text` / `content` → pretrain; null when the line is not an object
 * with one of those keys.
 */
export function detectFormat(text: string | null): DataFormat | null {
  if (text === null) return null;
  const v = parseJsonLine(text);
  if (!v || typeof v !== 'object' || Array.isArray(v) || isInvalid(v)) return null;
  const obj = v as Record<string, unknown>;
  if (obj.query !== undefined) return obj.neg !== undefined ? 'finetune' : 'pairs';
  if (obj.text !== undefined || obj.content !== undefined) return 'pretrain';
  return null;
}
