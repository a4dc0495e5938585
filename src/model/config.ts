/**
 * The encoder's shape, read from an HF `config.json` (BERT and XLM-RoBERTa/RoBERTa families).
 * `raw` keeps every original key so a saved model's config.json round-trips.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../util/errors';

export type Family = 'bert' | 'xlm-roberta';
export type Activation = 'gelu' | 'gelu_tanh' | 'relu';

export interface EncoderConfig {
  family: Family;
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
  padTokenId: number;
  hiddenDropout: number;
  attentionDropout: number;
  activation: Activation;
  raw: Record<string, unknown>;
}

const FAMILIES: Record<string, Family> = { bert: 'bert', 'xlm-roberta': 'xlm-roberta', roberta: 'xlm-roberta', camembert: 'xlm-roberta' };
const ACTIVATIONS: Record<string, Activation> = { gelu: 'gelu', gelu_new: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh', relu: 'relu' };

export function parseConfig(raw: Record<string, unknown>, where = 'config.json'): EncoderConfig {
  const family = FAMILIES[String(raw.model_type)];
  if (!family) throw new UserError(`${where}: model_type ${JSON.stringify(raw.model_type)} is not supported (supported: ${Object.keys(FAMILIES).join(', ')})`);
  const int = (key: string, dflt?: number): number => {
    const v = raw[key] ?? dflt;
    if (!Number.isInteger(v) || (v as number) < 0) throw new UserError(`${where}: key '${key}' must be a non-negative integer, got ${JSON.stringify(raw[key])}`);
    return v as number;
  };
  const num = (key: string, dflt: number): number => {
    const v = raw[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new UserError(`${where}: key '${key}' must be a non-negative number, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  const act = ACTIVATIONS[String(raw.hidden_act ?? 'gelu')];
  if (!act) throw new UserError(`${where}: hidden_act ${JSON.stringify(raw.hidden_act)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
  if ((raw.position_embedding_type ?? 'absolute') !== 'absolute') {
    throw new UserError(`${where}: position_embedding_type ${JSON.stringify(raw.position_embedding_type)} is not supported (only 'absolute')`);
  }
  const cfg: EncoderConfig = {
    family,
    vocabSize: int('vocab_size'),
    hidden: int('hidden_size'),
    layers: int('num_hidden_layers'),
    heads: int('num_attention_heads'),
    intermediate: int('intermediate_size'),
    maxPositions: int('max_position_embeddings'),
    typeVocabSize: int('type_vocab_size', 2),
    layerNormEps: num('layer_norm_eps', 1e-12),
    padTokenId: int('pad_token_id', family === 'bert' ? 0 : 1),
    hiddenDropout: num('hidden_dropout_prob', 0.1),
    attentionDropout: num('attention_probs_dropout_prob', 0.1),
    activation: act,
    raw: { ...raw },
  };
  if (cfg.hidden % cfg.heads !== 0) throw new UserError(`${where}: hidden_size ${cfg.hidden} is not a multiple of num_attention_heads ${cfg.heads}`);
  return cfg;
}

export function readConfig(dir: string, name = 'config.json'): EncoderConfig {
  const file = path.join(dir, name);
  if (!fs.existsSync(file)) throw new UserError(name === 'config.json' ? `${dir}: no config.json (not a model dir)` : `${file}: does not exist`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new UserError(`${file}: not a JSON object`);
  return parseConfig(raw as Record<string, unknown>, file);
}

/** Longest input the position table allows (XLM-R spends pad_id + 1 rows before the first position). */
export function maxInputLength(cfg: EncoderConfig): number {
  return cfg.family === 'xlm-roberta' ? cfg.maxPositions - cfg.padTokenId - 1 : cfg.maxPositions;
}
