/**
 * Per-example sampling of FlagEmbedding (AbsEmbedderSameDatasetTrainDataset._create_batch_data): one random
 * positive, G−1 negatives without replacement (the index list replicated when there are too few), and the
 * text-shuffle augmentation (_shuffle_text). Pure functions of an Rng so that every draw is reproducible
 * from the batch position.
 */
import type { Rng } from '../util/rng';

/** k indices in [0, n) without replacement; when n < k, from the index list repeated ceil(k/n) times. */
export function sampleNegatives(n: number, k: number, rng: Rng): number[] {
  if (k <= 0) return [];
  if (n <= 0) throw new RangeError(`cannot sample ${k} negatives from none`);
  const reps = n >= k ? 1 : Math.ceil(k / n);
  const pool: number[] = [];
  for (let r = 0; r < reps; r++) for (let i = 0; i < n; i++) pool.push(i);
  // partial Fisher–Yates: the first k slots are a uniform sample without replacement
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(pool.length - i);
    const t = pool[i];
    pool[i] = pool[j];
    pool[j] = t;
  }
  return pool.slice(0, k);
}

/**
 * FlagEmbedding `_shuffle_text`: a text longer than 100 characters is, with probability `ratio`, cut into
 * three chunks of len/3+1 characters that are shuffled and joined with spaces. Returns null when unchanged.
 */
export function maybeShuffleText(text: string, ratio: number, rng: Rng): string | null {
  if (ratio <= 0) return null;
  const chars = Array.from(text); // code points, as Python's len()
  if (chars.length <= 100 || !(rng.next() < ratio)) return null;
  const size = Math.floor(chars.length / 3) + 1;
  const parts: string[] = [];
  for (let i = 0; i < chars.length; i += size) parts.push(chars.slice(i, i + size).join(''));
  rng.shuffle(parts);
  return parts.join(' ');
}

/**
 * Group size of a batch (FlagEmbedding `_get_train_group_size`, from the batch's first example):
 * only_1neg → 2; symmetric_class → min(its negatives + 1, G); otherwise G.
 */
export function groupSizeFor(type: string | null, firstNegCount: number, g: number): number {
  if (type === 'only_1neg') return 2;
  if (type === 'symmetric_class') return Math.min(firstNegCount + 1, g);
  return g;
}
