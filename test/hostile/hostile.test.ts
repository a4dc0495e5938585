/**
 * Hostile inputs through the real `m3` command (data prepare, train, encode, eval, pipeline): each case
 * asserts the exact one-line message (naming the file, line or key and the problem), exit 1, no stack trace
 * (unless --debug), pre-existing output byte-identical afterwards, and bounded memory — the process runs
 * with a 256 MiB heap cap and its peak RSS must stay near a plain run's (no giant allocation from a header).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { pickle } from '../../src/model/weights/pickle';
import { rawSafetensors, rawZip, torchZip } from '../model/weights/helpers';
import { ROOT, snapshot, sameSnapshot } from '../helpers/fault';
import { sharedDir } from '../helpers/shared';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-hostile-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const T = (...p: string[]) => path.join(tmp, ...p);
const TINY_BERT = sharedDir('data/models/lightning-ir-tiny-bert');
const TOKENIZER = path.join(ROOT, 'configs/tiny/tokenizer');
const RSS_LIMIT_MB = 700; // a plain encode / train start-up peaks at ~250–400 MB (tfjs + wasm)

interface Run { code: number | null; stdout: string; stderr: string; rssMb: number }

function m3(args: string[], env: Record<string, string> = {}, shell?: string): Run {
  const rssFile = T(`.rss-${process.hrtime.bigint()}`);
  const node = [process.execPath, '--max-old-space-size=256', '-r', path.join(ROOT, 'test/helpers/max-rss.js'), path.join(ROOT, 'bin/m3.js'), ...args];
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const [cmd, argv] = shell ? ['bash', ['-c', `${shell}; exec ${node.map(q).join(' ')}`]] : [node[0], node.slice(1)];
  const r = spawnSync(cmd, argv as string[], {
    cwd: ROOT, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, M3_FROM_SRC: '1', M3_BACKEND: 'wasm', M3_PROGRESS: '0', M3_TEST_RSS_FILE: rssFile, ...env },
  });
  const rssMb = fs.existsSync(rssFile) ? Number(fs.readFileSync(rssFile, 'utf8')) / 1024 : NaN;
  fs.rmSync(rssFile, { force: true });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, rssMb };
}

function write(rel: string, data: string | Buffer): string {
  const f = T(rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, data);
  return f;
}

/** A copy of the tiny BERT model dir, with `files` replaced (null removes one). */
function modelDir(name: string, files: Record<string, Buffer | string | null> = {}): string {
  const dir = T('models', name);
  fs.cpSync(TINY_BERT, dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
  for (const [f, data] of Object.entries(files)) {
    if (data === null) fs.rmSync(path.join(dir, f));
    else fs.writeFileSync(path.join(dir, f), data);
  }
  return dir;
}

const good = JSON.stringify({ query: 'what is up', pos: ['the sky'], neg: ['the ground'] });
const jsonl = (...lines: string[]) => lines.join('\n') + '\n';
/** A safetensors model.safetensors with two small F32 tensors and a header tweak. */
const st = (tweak: (h: Record<string, any>) => void, dataBytes = 32, len?: bigint): Buffer => {
  const h: Record<string, any> = { a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } };
  tweak(h);
  return fs.readFileSync(rawSafetensors(T('.st'), h, dataBytes, len));
};
const headPt = (name: string, pkl: Buffer) => fs.readFileSync(torchZip(T(`.${name}`), pkl));

interface Case {
  name: string;
  /** Builds the inputs; returns the argv and the one-line message expected after "m3: error: ". */
  setup: () => { args: string[]; message: string; shell?: string; env?: Record<string, string> };
  /** A pre-existing output that must be byte-identical afterwards. */
  existing?: string;
}

// ---- m3 data prepare: the output dir already holds a dataset (a file in it stands for one)
const dsOut = T('prep-out', 'ds');
const prepare = (input: string, extra: string[] = []) => ['data', 'prepare', '--format', 'finetune', '--input', input, '--model', TOKENIZER, '--output', dsOut, ...extra];
const prepareCase = (name: string, file: string, data: string | Buffer, message: (f: string) => string): Case => ({
  name: `data prepare: ${name}`,
  existing: dsOut,
  setup: () => {
    const f = write(`prep/${file}`, data);
    return { args: prepare(f), message: message(f) };
  },
});

// ---- m3 encode: the output file already exists
const encOut = T('enc-out', 'out.jsonl');
const encIn = () => write('enc/in.jsonl', jsonl('{"text": "paris is the capital of france"}'));
const encode = (model: string, extra: string[] = []) => ['encode', '--model', model, '--input', encIn(), '--output', encOut, ...extra];
const modelCase = (name: string, files: Record<string, Buffer | string | null>, message: (dir: string) => string): Case => ({
  name: `encode --model: ${name}`,
  existing: encOut,
  setup: () => {
    const dir = modelDir(name.replace(/\W+/g, '-'), files);
    return { args: encode(dir), message: message(dir) };
  },
});

// ---- m3 train: the output dir already holds a run (its metrics must survive a refused start)
const trainOut = T('train-out');
const train = (...sets: string[]) => ['train', 'configs/tiny/unified.yaml', '--set', `output_dir=${trainOut}`, '--set', `data.cache_dir=${T('cache')}`, ...sets.flatMap((s) => ['--set', s])];

const huge = 2n ** 62n;
/** JSON.parse's own wording (it differs between Node versions). */
const jsonError = (text: string): string => {
  try {
    JSON.parse(text);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('valid JSON');
};
const CASES: Case[] = [
  prepareCase('malformed JSON line', 'bad.jsonl', jsonl(good, '{"query": "a", "pos": ["b"], '), (f) => `${f}:2: invalid JSON: ${jsonError('{"query": "a", "pos": ["b"], ')}`),
  prepareCase('oversized line (33 MiB, no newline)', 'big.jsonl', Buffer.alloc(33 << 20, 0x61), (f) => `${f}:1: line is longer than 32 MiB (not JSON lines?)`),
  prepareCase('invalid UTF-8', 'utf8.jsonl', Buffer.concat([Buffer.from(good + '\n{"query": "'), Buffer.from([0xc3, 0x28]), Buffer.from('", "pos": ["b"], "neg": []}\n')]), (f) => `${f}:2: line is not valid UTF-8`),
  prepareCase('empty file', 'empty.jsonl', '', (f) => `${f}:1: empty file (no JSON lines)`),
  prepareCase('wrong type', 'type.jsonl', jsonl(good, good, '{"query": "a", "pos": ["b"], "neg": "c"}'), (f) => `${f}:3: neg: expected a list of strings, got a string`),
  prepareCase('NaN teacher score', 'nan.jsonl', jsonl('{"query": "a", "pos": ["b"], "neg": ["c"], "pos_scores": [NaN], "neg_scores": [0.5]}'), (f) => `${f}:1: pos_scores[0]: score is NaN; scores must be finite`),
  prepareCase('mismatched list lengths', 'len.jsonl', jsonl('{"query": "a", "pos": ["b"], "neg": ["c", "d"], "pos_scores": [1], "neg_scores": [0.5]}'), (f) => `${f}:1: neg_scores: has 1 scores but neg has 2 texts`),
  {
    name: 'data prepare: output dir under a regular file',
    setup: () => {
      const f = write('prep/ok.jsonl', jsonl(good));
      const blocker = write('prep/blocker', 'a file\n');
      return { args: ['data', 'prepare', '--format', 'finetune', '--input', f, '--model', TOKENIZER, '--output', path.join(blocker, 'ds')], message: `${blocker}: cannot write here (ENOTDIR: it or a folder on its path is a file)` };
    },
  },
  {
    name: 'data prepare: disk full (ulimit -f)',
    existing: dsOut,
    setup: () => {
      const f = write('prep/many.jsonl', jsonl(...Array.from({ length: 400 }, (_, i) => JSON.stringify({ query: `query ${i}`, pos: ['a passage '.repeat(20)], neg: ['another one '.repeat(20)] }))));
      return { args: prepare(f), shell: 'ulimit -f 16', message: `${dsOut}: disk full (EFBIG); nothing was written` };
    },
  },
  // ---- model files from strangers (m3 encode --model DIR)
  modelCase('safetensors huge header length', { 'model.safetensors': st(() => undefined, 32, huge) }, (d) => `${d}/model.safetensors: safetensors header length ${huge} is out of range (0..104857600)`),
  modelCase('safetensors negative header length', { 'model.safetensors': st(() => undefined, 32, -8n) }, (d) => `${d}/model.safetensors: safetensors header length -8 is out of range (0..104857600)`),
  modelCase('safetensors truncated data', { 'model.safetensors': st(() => undefined, 20) }, (d) => `${d}/model.safetensors: tensor 'b': data_offsets [16, 32] run past the end of the data (20 bytes; file truncated?)`),
  modelCase('safetensors overlapping offsets', { 'model.safetensors': st((h) => { h.b.data_offsets = [8, 24]; }) }, (d) => `${d}/model.safetensors: tensors 'a' and 'b' overlap`),
  modelCase('safetensors out-of-range offsets', { 'model.safetensors': st((h) => { h.b.data_offsets = [4096, 4112]; }) }, (d) => `${d}/model.safetensors: tensor 'b': data_offsets [4096, 4112] run past the end of the data (32 bytes; file truncated?)`),
  modelCase('safetensors unknown dtype', { 'model.safetensors': st((h) => { h.a.dtype = 'F8_E9M9'; }) }, (d) => `${d}/model.safetensors: tensor 'a': unknown dtype "F8_E9M9"`),
  modelCase('torch head zip truncated', { 'colbert_linear.pt': headPt('colbert_linear.pt', pickle({ t: 'odict', items: [] })).subarray(0, 60) }, (d) => `${d}/colbert_linear.pt: truncated or not a zip archive (no end-of-central-directory record)`),
  modelCase('torch head zip bomb', { 'colbert_linear.pt': rawZip([{ name: 'colbert_linear/data.pkl', data: Buffer.alloc(1 << 20), deflate: true, size: 0xfffffff0 }]) },
    (d) => `${d}/colbert_linear.pt: zip entry 'colbert_linear/data.pkl': refused: ${zlib.deflateRawSync(Buffer.alloc(1 << 20)).length} deflated bytes claim to hold 4294967280 (beyond what deflate can reach; a zip bomb?)`),
  modelCase('torch head pickle with a disallowed global', { 'colbert_linear.pt': headPt('colbert_linear.pt', pickle({ t: 'reduce', func: { t: 'global', module: 'os', name: 'system' }, args: { t: 'tuple', items: [{ t: 'str', v: 'touch /tmp/pwned' }] } })) },
    (d) => `${d}/colbert_linear.pt: refused pickle global 'os.system' (not in the allow-list)`),
  modelCase('torch head pickle with a disallowed opcode', { 'colbert_linear.pt': headPt('colbert_linear.pt', Buffer.from('\x80\x02\x82\x01.', 'latin1')) },
    (d) => `${d}/colbert_linear.pt: refused pickle opcode EXT1 at byte 2 (not in the allow-list)`),
  modelCase('model dir without config.json', { 'config.json': null }, (d) => `${d}: no config.json (not a model dir)`),
  modelCase('model dir without weights', { 'model.safetensors': null }, (d) => `${d}: no model weights (expected model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)`),
  {
    name: 'encode: input line not JSON',
    existing: encOut,
    setup: () => {
      const input = write('enc/bad.jsonl', jsonl('{"text": "ok"}', '{"text": oops}'));
      return { args: ['encode', '--model', TINY_BERT, '--input', input, '--output', encOut], message: `${input}:2: invalid JSON (${jsonError('{"text": oops}')})` };
    },
  },
  {
    name: 'encode: output under a regular file',
    setup: () => {
      const blocker = write('enc/blocker', 'x');
      return { args: ['encode', '--model', TINY_BERT, '--input', encIn(), '--output', path.join(blocker, 'out.jsonl')], message: `${blocker}: cannot write here (ENOTDIR: it or a folder on its path is a file)` };
    },
  },
  {
    name: 'encode: disk full (ulimit -f 1: writes past 1 KiB fail)',
    existing: encOut,
    setup: () => ({ args: ['encode', '--model', TINY_BERT, '--input', encIn(), '--output', encOut], shell: 'ulimit -f 1', message: `${encOut}: disk full (EFBIG); nothing was written` }),
  },
  // ---- m3 train / m3 pipeline: configs
  { name: 'train: config key typo', existing: trainOut, setup: () => ({ args: train('train.max_stepz=3'), message: "--set train.max_stepz: unknown key 'train.max_stepz' (did you mean 'train.max_steps'?)" }) },
  { name: 'train: out-of-range value', existing: trainOut, setup: () => ({ args: train('train.learning_rate=-1'), message: "--set train.learning_rate: key 'train.learning_rate' must be ≥ 0, got -1" }) },
  {
    name: 'train: typo in a YAML config file',
    existing: trainOut,
    setup: () => {
      const cfg = write('cfg/unified.yaml', fs.readFileSync(path.join(ROOT, 'configs/tiny/unified.yaml'), 'utf8').replace('  batch_size: 2', '  batch_sise: 2')
        .replace(/(config|tokenizer): (model\/config.json|tokenizer)/g, (_m, k, v) => `${k}: ${path.join(ROOT, 'configs/tiny', v)}`).replace('data/toy', `${path.join(ROOT, 'configs/tiny/data')}/toy`));
      return { args: ['train', cfg, '--set', `output_dir=${trainOut}`], message: `${cfg}:14: unknown key 'data.batch_sise' (did you mean 'data.batch_size'?)` };
    },
  },
  {
    name: 'train: dataset prepared with another tokenizer',
    existing: trainOut,
    setup: () => {
      const ds = T('other-tok-ds');
      if (!fs.existsSync(ds)) {
        const r = m3(['data', 'prepare', '--format', 'finetune', '--input', path.join(ROOT, 'configs/tiny/data/toy_finetune_data.jsonl'), '--model', TINY_BERT, '--output', ds]);
        if (r.code !== 0) throw new Error(r.stderr);
      }
      return { args: train(`data.train=[${ds}]`), message: `${ds}: prepared with a different tokenizer (fingerprint ` };
    },
  },
  {
    name: 'train: model.init dir without weights',
    existing: trainOut,
    setup: () => {
      const dir = modelDir('init-no-weights', { 'model.safetensors': null });
      return { args: train(`model.init=${dir}`), message: `${dir}: no model weights (expected model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)` };
    },
  },
  {
    name: 'train: output_dir under a regular file',
    setup: () => {
      const blocker = write('train-blocker', 'x');
      return { args: ['train', 'configs/tiny/unified.yaml', '--set', `output_dir=${path.join(blocker, 'run')}`, '--set', `data.cache_dir=${T('cache')}`], message: `${path.join(blocker, 'run')}: cannot write here (ENOTDIR: it or a folder on its path is a file)` };
    },
  },
  {
    name: 'pipeline: a stage list that is not a list',
    setup: () => {
      const cfg = write('cfg/pipeline.yaml', 'output_dir: runs/x\nstages: retromae.yaml\n');
      return { args: ['pipeline', cfg], message: `${cfg}:2: key 'stages' must be a list, got "retromae.yaml"` };
    },
  },
  // ---- m3 eval: a BEIR folder from a stranger
  {
    name: 'eval: qrels line with a non-numeric grade',
    setup: () => {
      const d = T('beir');
      write('beir/corpus.jsonl', jsonl('{"_id": "d1", "text": "paris"}', '{"_id": "d2", "text": "berlin"}'));
      write('beir/queries.jsonl', jsonl('{"_id": "q1", "text": "capital of france"}'));
      const q = write('beir/qrels/dev.tsv', 'query-id\tcorpus-id\tscore\nq1\td1\tlots\n');
      return { args: ['eval', '--model', TINY_BERT, '--data', d], message: `${q}:2: score 'lots' is not an integer` };
    },
  },
];

beforeAll(() => {
  write('prep-out/ds/keep.txt', 'a dataset that must survive\n');
  write('enc-out/out.jsonl', '{"dense": [1]}\n');
  write('train-out/metrics.jsonl', '{"step": 1}\n');
  fs.mkdirSync(T('train-out/checkpoints/step-1'), { recursive: true });
});

describe('hostile inputs: one clear line, exit 1, nothing touched, bounded memory', () => {
  test.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const { args, message, shell, env } = c.setup();
    const before = c.existing ? snapshot(c.existing) : null;
    const r = m3(args, env, shell);
    const lines = r.stderr.trim().split('\n');
    const err = lines.filter((l) => l.startsWith('m3: '));
    expect(err).toHaveLength(1);
    if (message.endsWith(' ')) expect(err[0].startsWith(`m3: error: ${message}`)).toBe(true);
    else expect(err[0]).toBe(`m3: error: ${message}`);
    expect(lines.filter((l) => !l.startsWith('m3: ') && !/^(data|unified): /.test(l))).toEqual([]); // nothing else: no stack
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    if (before) expect(sameSnapshot(snapshot(c.existing!), before)).toBe(true);
    expect(r.rssMb).toBeLessThan(RSS_LIMIT_MB);
  });

  test('--debug adds the stack trace', () => {
    const dir = modelDir('debug', { 'model.safetensors': st(() => undefined, 32, huge) });
    const r = m3([...encode(dir), '--debug']);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')[0]).toBe(`m3: error: ${dir}/model.safetensors: safetensors header length ${huge} is out of range (0..104857600)`);
    expect(r.stderr).toMatch(/\n\s+at readSafetensorsHeader /);
  });
});
