/**
 * `m3 export` on bad input: one line `m3: error: …`, exit code 1, and the output path is not created (no
 * weights, an unknown architecture, an unwritable output); bad options and an output that would replace the
 * model or a dir that is not an export are refused the same way. Plus the happy path's stdout and --json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runCli } from '../../helpers/cli';
import { sharedDir } from '../../helpers/shared';
import { exportOnnx } from '../../../src/model/export';
import { UserError } from '../../../src/util/errors';
import { parseCard } from '../../helpers/card';

const GOLDEN_MODEL = sharedDir('golden/encoder-bert-bin/model');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-export-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of the golden BERT model dir, changed by `edit`. */
function modelCopy(name: string, edit: (dir: string) => void = () => {}): string {
  const dir = path.join(tmp, name);
  fs.cpSync(GOLDEN_MODEL, dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
  fs.chmodSync(dir, 0o755);
  edit(dir);
  return dir;
}

function expectOneLineError(args: string[], message: RegExp, out: string): void {
  const r = runCli(['export', ...args]);
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^m3: error: /);
  expect(lines[0]).toMatch(message);
  expect(fs.existsSync(out)).toBe(false);
  // no temp sibling left behind either
  if (fs.existsSync(path.dirname(out)) && fs.statSync(path.dirname(out)).isDirectory()) expect(fs.readdirSync(path.dirname(out)).filter((n) => n.includes(path.basename(out)))).toEqual([]);
}

test('no weights, unknown architecture, unwritable output: one line, exit 1, no output path', () => {
  const noWeights = modelCopy('no-weights', (d) => fs.rmSync(path.join(d, 'pytorch_model.bin')));
  expectOneLineError(['--model', noWeights, '--output', path.join(tmp, 'out-a')], /no model weights/, path.join(tmp, 'out-a'));

  const unknown = modelCopy('gpt', (d) => {
    const cfg = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...cfg, model_type: 'gpt2' }));
  });
  expectOneLineError(['--model', unknown, '--output', path.join(tmp, 'out-b')], /model_type "gpt2" is not supported/, path.join(tmp, 'out-b'));

  const blocker = path.join(tmp, 'a-file');
  fs.writeFileSync(blocker, 'not a dir');
  expectOneLineError(['--model', GOLDEN_MODEL, '--output', path.join(blocker, 'onnx-out')], /a-file: cannot write here/, path.join(blocker, 'onnx-out'));
});

test('bad options and unsafe outputs are refused before anything is written', async () => {
  const out = path.join(tmp, 'out-c');
  const refuse = async (o: Parameters<typeof exportOnnx>[2], re: RegExp, model = GOLDEN_MODEL, output = out) => {
    await expect(exportOnnx(model, output, o)).rejects.toThrow(UserError);
    await expect(exportOnnx(model, output, o)).rejects.toThrow(re);
    expect(fs.existsSync(out)).toBe(false);
  };
  await refuse({ opset: 12 }, /--opset: 12 is not supported \(an integer from 13 to 22/);
  await refuse({ opset: 17.5 }, /--opset: 17.5 is not supported/);
  await refuse({ dtypes: ['int4' as never] }, /--dtype: unknown dtype 'int4'/);
  await refuse({ dtypes: [] }, /--dtype: name at least one/);
  await refuse({}, /model dir does not exist/, path.join(tmp, 'missing'));
  const halfHeads = modelCopy('half-heads', (d) => fs.rmSync(path.join(d, 'sparse_linear.pt')));
  await refuse({}, /incomplete M3 heads/, halfHeads);
  const badShape = modelCopy('bad-shape', (d) => {
    const cfg = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: cfg.intermediate_size + 1 }));
  });
  await refuse({}, /has shape .* but config.json implies/, badShape);

  // never replace the model itself, a dir holding it, or a dir that is not an earlier export
  const model = modelCopy('self');
  await expect(exportOnnx(model, model)).rejects.toThrow(/would replace the model dir/);
  await expect(exportOnnx(model, tmp)).rejects.toThrow(/would replace the model dir/);
  expect(fs.existsSync(path.join(model, 'pytorch_model.bin'))).toBe(true);
  const notExport = path.join(tmp, 'not-export');
  fs.mkdirSync(notExport);
  fs.writeFileSync(path.join(notExport, 'notes.txt'), 'mine');
  await expect(exportOnnx(GOLDEN_MODEL, notExport)).rejects.toThrow(/is not an ONNX export/);
  expect(fs.readdirSync(notExport)).toEqual(['notes.txt']);
});

test('the happy path: a summary on stdout, --json, and a re-export replacing the earlier one', () => {
  const out = path.join(tmp, 'ok');
  const r = runCli(['export', '--model', GOLDEN_MODEL, '--format', 'onnx', '--output', out, '--dtype', 'fp32,int8']);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/bert encoder, opset 17/);
  expect(r.stdout).toMatch(/outputs last_hidden_state, dense_vecs, sparse_weights, colbert_vecs/);
  expect(r.stdout).toMatch(/int8 {2}onnx\/model_quantized\.onnx/);
  expect(fs.readdirSync(path.join(out, 'onnx')).sort()).toEqual(['model.onnx', 'model_quantized.onnx']);
  // no tokenizer in the golden model dir: the export still works, with config.json, the graphs and the model card only
  expect(fs.readdirSync(out).sort()).toEqual(['README.md', 'config.json', 'onnx']);
  const { front, body } = parseCard(fs.readFileSync(path.join(out, 'README.md'), 'utf8'));
  expect(front).toEqual({ library_name: 'transformers.js', pipeline_tag: 'feature-extraction', tags: ['m3-train', 'onnx', 'feature-extraction', 'bge-m3', 'colbert', 'sparse'] });
  expect(body).toContain('`onnx/model.onnx`, `onnx/model_quantized.onnx`');

  const j = runCli(['export', '--model', GOLDEN_MODEL, '--output', out, '--dtype', 'fp16', '--opset', '14', '--json']);
  expect(j.code).toBe(0);
  const res = JSON.parse(j.stdout);
  expect(res.opset).toBe(14);
  expect(res.files.map((f: { file: string }) => f.file)).toEqual(['onnx/model_fp16.onnx']);
  expect(fs.readdirSync(path.join(out, 'onnx'))).toEqual(['model_fp16.onnx']);

  const bad = runCli(['export', '--model', GOLDEN_MODEL, '--output', path.join(tmp, 'fmt'), '--format', 'tflite']);
  expect(bad.code).toBe(1);
  expect(bad.stderr.trim()).toBe("m3: error: --format: unknown format 'tflite' (supported: onnx)");
});
