import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadConfig } from '../../src/util/config-file';
import { Schema } from '../../src/util/schema';

const schema: Schema = {
  output_dir: { type: 'string' },
  train: { type: 'object', fields: {
    learning_rate: { type: 'number', default: 1e-5, min: 0 },
    max_steps: { type: 'int', default: -1, min: -1 },
    schedule: { type: 'enum', values: ['linear', 'constant'], default: 'linear' },
  } },
};

function write(text: string): string {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-')), 'c.yaml');
  fs.writeFileSync(f, text);
  return f;
}

describe('config files', () => {
  test('defaults fill in and --set overrides', () => {
    const f = write('output_dir: out\ntrain:\n  learning_rate: 2e-5\n');
    const c = loadConfig<any>(f, schema, ['train.max_steps=7']).config;
    expect(c).toEqual({ output_dir: 'out', train: { learning_rate: 2e-5, max_steps: 7, schedule: 'linear' } });
  });

  test('an unknown key names file:line, the key and the closest valid key', () => {
    const f = write('output_dir: out\ntrain:\n  learnig_rate: 2e-5\n');
    expect(() => loadConfig(f, schema)).toThrow(`${f}:3: unknown key 'train.learnig_rate' (did you mean 'train.learning_rate'?)`);
  });

  test('a mistyped value names the key and the expected type', () => {
    const f = write('output_dir: out\ntrain:\n  max_steps: 1.5\n');
    expect(() => loadConfig(f, schema)).toThrow(`${f}:3: key 'train.max_steps' must be an integer, got 1.5`);
  });

  test('out-of-range and bad enum values are refused', () => {
    const f = write('output_dir: out\ntrain:\n  learning_rate: -1\n');
    expect(() => loadConfig(f, schema)).toThrow(`${f}:3: key 'train.learning_rate' must be ≥ 0, got -1`);
    const g = write('output_dir: out\ntrain:\n  schedule: linera\n');
    expect(() => loadConfig(g, schema)).toThrow(/must be one of linear, constant, got "linera" \(did you mean 'linear'\?\)/);
  });

  test('a bad --set value is reported against the --set flag', () => {
    const f = write('output_dir: out\n');
    expect(() => loadConfig(f, schema, ['train.max_steps=abc'])).toThrow(`--set train.max_steps: key 'train.max_steps' must be an integer, got "abc"`);
  });
});
