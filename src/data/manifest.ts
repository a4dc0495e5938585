/**
 * manifest.json of a prepared dataset: what was read (sources with size and sha256), with which tokenizer
 * and max lengths, and where every dataset's rows went (one Arrow file per source and length bucket, with
 * the row count of each chunk so a reader can plan an epoch and seek without opening the files).
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../util/errors';
import { recoverDir } from '../util/fsx';
import type { Tokenizer } from '../model/tokenizer';
import type { DataFormat, InvalidReason } from './records';

export const MANIFEST_FILE = 'manifest.json';
export const FORMAT_NAME = 'm3-dataset';
export const FORMAT_VERSION = 1;

/** Length buckets over a group's longest tokenized text (FlagEmbedding's split_data_by_length.py): 0, 500, 1000, 2000, …, 7000, ∞. */
export const BUCKET_BOUNDS = [0, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, Infinity];
export const BUCKETS = BUCKET_BOUNDS.slice(0, -1).map((lo, i) => `${lo}-${BUCKET_BOUNDS[i + 1] === Infinity ? 'inf' : BUCKET_BOUNDS[i + 1]}`);

/** Bucket name of a group whose longest sequence has `maxLen` tokens (a length of exactly 500 is "0-500"). */
export function bucketOf(maxLen: number): string {
  for (let i = 1; i < BUCKET_BOUNDS.length; i++) if (maxLen <= BUCKET_BOUNDS[i]) return BUCKETS[i - 1];
  return BUCKETS[BUCKETS.length - 1];
}

/**
 * Per-device batch sizes by bucket on 80 GB GPUs, fine-tuning with G = 8 and unsupervised with G = 1
 * (BGE-M3 paper Table 9; the old FlagEmbedding BGE_M3/data.py get_file_batch_size).
 */
export const FINETUNE_BATCH_SIZES: Record<string, number> = {
  '0-500': 48, '500-1000': 32, '1000-2000': 20, '2000-3000': 18, '3000-4000': 14, '4000-5000': 14, '5000-6000': 12, '6000-7000': 10, '7000-inf': 8,
};
export const UNSUPERVISED_BATCH_SIZES: Record<string, number> = {
  '0-500': 700, '500-1000': 570, '1000-2000': 388, '2000-3000': 288, '3000-4000': 224, '4000-5000': 180, '5000-6000': 157, '6000-7000': 128, '7000-inf': 104,
};

export interface SourceEntry {
  /** Absolute path when prepared. */
  path: string;
  size: number;
  sha256: string;
  /** Rows written from this file, and rows skipped by reason (with --skip-invalid). */
  rows: number;
  skipped: Partial<Record<InvalidReason, number>>;
  /** Rows written per bucket. */
  buckets: Record<string, number>;
}

export interface ArrowFileEntry {
  /** Relative to the dataset dir. */
  file: string;
  source: number;
  rows: number;
  /** Row count of every record batch, in file order. */
  chunks: number[];
}

export interface DatasetEntry {
  name: string;
  /** Indices into `sources`: one file, or the small files of one directory merged (small_threshold). */
  sources: number[];
  /** FlagEmbedding `type` of the first row (normal, only_1neg, symmetric_*), or null. */
  type: string | null;
  /** From a `no_in_batch_neg` directory or file name suffix: the loss uses each query's own group only. */
  noInBatchNeg: boolean;
  /** `batch_size` / `train_group_size` columns of the first row (per-file overrides), or null. */
  batchSize: number | null;
  trainGroupSize: number | null;
  /** Whether every row carries teacher scores. */
  hasScores: boolean;
  /** Fewest negatives of any row (a group size G > 1 needs at least one). */
  minNeg: number;
  rows: number;
  buckets: Record<string, ArrowFileEntry[]>;
}

export interface Manifest {
  format: typeof FORMAT_NAME;
  formatVersion: number;
  kind: DataFormat;
  createdAt: string;
  rows: number;
  tokenizer: { fingerprint: string; vocabSize: number; clsId: number; sepId: number; padId: number };
  /** finetune / pairs: query and passage; pretrain: max. */
  maxLengths: { query?: number; passage?: number; max?: number };
  options: PrepareSettings;
  sources: SourceEntry[];
  datasets: DatasetEntry[];
  /** Rows (and empty files) skipped by reason, over all sources. */
  skipped: Partial<Record<InvalidReason, number>>;
  /** Tokens written (after truncation), all columns. */
  tokens: number;
}

/** Settings that change the prepared rows (part of the reuse check). */
export interface PrepareSettings {
  smallThreshold: number;
  dropThreshold: number;
  keepText: boolean;
  queryInstruction: string | null;
  queryInstructionFormat: string;
}

export function readManifest(dir: string): Manifest {
  recoverDir(dir); // a crash while this dir was being replaced left its old version aside
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`${dir}: not a prepared dataset (no ${MANIFEST_FILE}; run "m3 data prepare")`);
  }
  let m: Manifest;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (m.format !== FORMAT_NAME) throw new UserError(`${file}: not an m3 dataset manifest`);
  if (m.formatVersion !== FORMAT_VERSION) throw new UserError(`${file}: dataset format version ${m.formatVersion}, this m3 reads version ${FORMAT_VERSION}; prepare the data again`);
  return m;
}

/** Refuses a dataset tokenized by another tokenizer than the model's. */
export function checkTokenizer(manifest: Manifest, tokenizer: Tokenizer, dir: string): void {
  if (manifest.tokenizer.fingerprint !== tokenizer.fingerprint) {
    throw new UserError(
      `${dir}: prepared with a different tokenizer (fingerprint ${manifest.tokenizer.fingerprint.slice(0, 12)}…, ` +
        `the model's is ${tokenizer.fingerprint.slice(0, 12)}…); run "m3 data prepare --model <this model>" again`,
    );
  }
}
