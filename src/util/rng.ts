/**
 * Seeded randomness. Every random draw in training (sampling, masking, dropout seeds) comes from a
 * generator seeded by `deriveSeed(seed, step, microBatch, ...)`, so a resumed run draws the same numbers
 * as an uninterrupted one without replaying anything.
 */

/** Mixes integers into one 32-bit seed (splitmix-style avalanche per component). */
export function deriveSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p | 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h ^ Math.floor(p / 4294967296), 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/**
 * The seed to hand TF.js's random ops: they take a seed of 0 for "no seed" and draw from Math.random, so
 * seed 0 maps to a value no integer seed takes (its generator seeds from the seed's string).
 */
export function tfSeed(seed: number): number {
  return seed === 0 ? 0.5 : seed;
}

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Fisher–Yates shuffle in place. */
  shuffle<T>(a: T[]): T[];
}

/** mulberry32: small, fast, good enough for sampling and masking. */
export function createRng(seed: number): Rng {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    shuffle<T>(a: T[]): T[] {
      for (let i = a.length - 1; i > 0; i--) {
        const j = int(i + 1);
        [a[i], a[j]] = [a[j], a[i]];
      }
      return a;
    },
  };
}
