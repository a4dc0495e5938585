/**
 * Learning-rate schedules as HF's get_*_schedule_with_warmup: the multiplier for optimizer step k
 * (0-based, the step about to be taken). Linear: k/warmup during warmup, then linear decay to 0 at `total`.
 */
export type ScheduleKind = 'linear' | 'constant' | 'constant_with_warmup';
export const SCHEDULES: ScheduleKind[] = ['linear', 'constant', 'constant_with_warmup'];

export function lrAt(kind: ScheduleKind, baseLr: number, step: number, warmup: number, total: number): number {
  if (kind === 'constant') return baseLr;
  if (step < warmup) return (baseLr * step) / Math.max(1, warmup);
  if (kind === 'constant_with_warmup') return baseLr;
  return baseLr * Math.max(0, (total - step) / Math.max(1, total - warmup));
}

/** Warmup steps from a ratio of the total (HF `warmup_ratio`), unless given explicitly. */
export function warmupSteps(total: number, ratio: number, explicit?: number): number {
  return explicit !== undefined && explicit > 0 ? explicit : Math.ceil(total * ratio);
}
