/** Paths into the read-only shared material (../shared beside the checkout, or $M3_SHARED_DIR). */
import * as path from 'path';

export function sharedDir(...parts: string[]): string {
  const root = process.env.M3_SHARED_DIR ?? path.resolve(__dirname, '../../../shared');
  return path.join(root, ...parts);
}
