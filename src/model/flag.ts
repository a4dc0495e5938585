/**
 * FlagEmbedding's `BGEM3FlagModel` surface for library users: `encode` and `computeScore` with its option
 * and output names (`return_sparse`, `dense_vecs`, `lexical_weights`, `colbert_vecs`, ...), over
 * src/model/inference.ts. Scores are keyed by this project's mode names (`dense+sparse`, `all`; FlagEmbedding
 * calls them `sparse+dense` and `colbert+sparse+dense`).
 */
import { UserError } from '../util/errors';
import { Embedding, encodeTexts, OutputKind } from './inference';
import { hasHeads, M3Model } from './m3';
import { colbertScore, denseScore, fuseScores, lexicalScore, Mode, MODES, SparseVec } from './scores';

export interface FlagEncodeOptions {
  batch_size?: number;
  max_length?: number;
  return_dense?: boolean;
  return_sparse?: boolean;
  return_colbert_vecs?: boolean;
}

export interface FlagEncodeOutput {
  dense_vecs: Float32Array[] | null;
  lexical_weights: SparseVec[] | null;
  colbert_vecs: Float32Array[][] | null;
}

/** BGEM3FlagModel.encode: dense vectors by default; sparse and ColBERT outputs need the M3 heads. */
export async function encode(model: M3Model, sentences: string | string[], o: FlagEncodeOptions = {}): Promise<FlagEncodeOutput> {
  const texts = typeof sentences === 'string' ? [sentences] : sentences;
  const outputs: OutputKind[] = [];
  if (o.return_dense ?? true) outputs.push('dense');
  if (o.return_sparse) outputs.push('sparse');
  if (o.return_colbert_vecs) outputs.push('colbert');
  const e = await encodeTexts(model, texts, { outputs, batchSize: o.batch_size ?? 12, maxLength: o.max_length ?? 8192 });
  const pick = <K extends keyof Embedding>(k: K, on: boolean) => (on ? e.map((x) => x[k]!) : null);
  return { dense_vecs: pick('dense', outputs.includes('dense')), lexical_weights: pick('sparse', outputs.includes('sparse')), colbert_vecs: pick('colbert', outputs.includes('colbert')) };
}

export interface FlagScoreOptions {
  batch_size?: number;
  max_query_length?: number;
  max_passage_length?: number;
  /** [dense, sparse, colbert] weights of the hybrid modes; compute_score's default [1, 1, 1]. */
  weights_for_different_modes?: [number, number, number];
}

/** BGEM3FlagModel.compute_score: every mode's score for each [query, passage] pair (needs the M3 heads). */
export async function computeScore(model: M3Model, pairs: [string, string][], o: FlagScoreOptions = {}): Promise<Record<Mode, number[]>> {
  if (!hasHeads(model)) throw new UserError(`${model.source}: compute_score needs the sparse and ColBERT heads (colbert_linear, sparse_linear)`);
  const opts = { return_dense: true, return_sparse: true, return_colbert_vecs: true, batch_size: o.batch_size };
  const q = await encode(model, pairs.map((p) => p[0]), { ...opts, max_length: o.max_query_length ?? 512 });
  const p = await encode(model, pairs.map((x) => x[1]), { ...opts, max_length: o.max_passage_length ?? 8192 });
  const out = Object.fromEntries(MODES.map((m) => [m, [] as number[]])) as Record<Mode, number[]>;
  pairs.forEach((_, i) => {
    const s = fuseScores(
      denseScore(q.dense_vecs![i], p.dense_vecs![i]), lexicalScore(q.lexical_weights![i], p.lexical_weights![i]),
      colbertScore(q.colbert_vecs![i], p.colbert_vecs![i]), o.weights_for_different_modes,
    );
    for (const m of MODES) out[m].push(s[m]);
  });
  return out;
}
