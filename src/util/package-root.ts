/** The repository root (the folder of m3-train's package.json), from src/ or from the compiled dist/src/. */
import * as fs from 'fs';
import * as path from 'path';

export function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'm3-train') return dir;
    if (path.dirname(dir) === dir) throw new Error(`m3-train's package.json not found above ${__dirname}`);
  }
}
