/**
 * Hub ids (src/model/hub.ts): a Hugging Face cache laid out by hand as huggingface_hub writes it, and a fake
 * Hub on 127.0.0.1 (../helpers/fake-hub.ts) reached through HF_ENDPOINT. Nothing here reaches the real Hub.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel, disposeModel } from '../../src/model/m3';
import { encodeSafetensors, readSafetensors } from '../../src/model/weights/safetensors';
import { modelSpec, parseHubId, resolveModelDir } from '../../src/model/hub';
import { FakeHub, gitOid, isLfs, repoFromDir, sha256, startFakeHub } from '../helpers/fake-hub';
import { sharedDir } from '../helpers/shared';

const ROOT = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-hub-'));
const tiny = sharedDir('data/models/lightning-ir-tiny-bert');
const HF_VARS = ['HF_HOME', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_OFFLINE', 'XDG_CACHE_HOME'];
const saved = Object.fromEntries(HF_VARS.map((k) => [k, process.env[k]]));
let n = 0;
/** A fresh HF_HOME (and so a fresh cache, $HF_HOME/hub) with `env` set; other HF_* variables cleared. */
function freshEnv(env: Record<string, string> = {}): string {
  for (const k of HF_VARS) delete process.env[k];
  const home = path.join(tmp, `home-${++n}`);
  Object.assign(process.env, { HF_HOME: home }, env);
  return path.join(home, 'hub');
}
afterEach(() => {
  for (const k of HF_VARS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

function runCli(args: string[], env: Record<string, string>, timeoutMs = 120000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !HF_VARS.includes(k)));
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/m3.js'), ...args], {
    cwd: ROOT, env: { ...clean, M3_FROM_SRC: '1', M3_BACKEND: 'wasm', M3_PROGRESS: '0', ...env },
  });
  return collect(child, timeoutMs);
}

function collect(child: ChildProcess, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => (stdout += d));
  child.stderr?.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    resolve({ code, stdout, stderr });
  }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readJsonl = (f: string) => fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const repoDir = (cache: string, repo: string) => path.join(cache, `models--${repo.replace('/', '--')}`);

/** Rejects with a UserError whose one-line message matches `re`. */
async function failsWith(p: Promise<unknown>, re: RegExp): Promise<string> {
  const e = await p.then(() => null, (x: Error) => x);
  expect(e?.name).toBe('UserError');
  expect(e!.message).toMatch(re);
  expect(e!.message).not.toContain('\n');
  return e!.message;
}

/** The tiny BERT as a sharded checkpoint (two safetensors shards and their index), with files m3 never reads beside it. */
function shardedRepo() {
  const repo = repoFromDir(tiny);
  const tensors = [...readSafetensors(path.join(tiny, 'model.safetensors'))];
  const half = tensors.length >> 1;
  const shards = [tensors.slice(0, half), tensors.slice(half)];
  const names = shards.map((_, i) => `model-0000${i + 1}-of-00002.safetensors`);
  const weightMap = Object.fromEntries(shards.flatMap((s, i) => s.map(([n]) => [n, names[i]])));
  repo.files.delete('model.safetensors');
  shards.forEach((s, i) => repo.files.set(names[i], encodeSafetensors(new Map(s))));
  repo.files.set('model.safetensors.index.json', Buffer.from(JSON.stringify({ metadata: {}, weight_map: weightMap })));
  for (const extra of ['pytorch_model.bin', 'onnx/model.onnx', 'README.md']) repo.files.set(extra, Buffer.from('not read'));
  return repo;
}

describe('Hub ids', () => {
  test('org/name[@revision] that is no existing path is a Hub id; an existing path wins', () => {
    expect(parseHubId('BAAI/bge-m3')).toEqual({ repo: 'BAAI/bge-m3', revision: 'main' });
    expect(parseHubId('BAAI/bge-m3@v1.0')).toEqual({ repo: 'BAAI/bge-m3', revision: 'v1.0' });
    expect(parseHubId('a_b/c.d@refs/pr/1')).toEqual({ repo: 'a_b/c.d', revision: 'refs/pr/1' });
    for (const notId of ['bge-m3', './a', '../a/b', '/abs/x', 'a/b/c', 'a/-b', 'a./b', 'a--x/b', 'a/b..c', 'a/b@', 'a/b@../../x', 'a/b@x y']) {
      expect(parseHubId(notId)).toBeNull();
    }
    fs.mkdirSync(path.join(tmp, 'org', 'local'), { recursive: true });
    expect(modelSpec('org/local', tmp)).toBe(path.join(tmp, 'org', 'local'));
    expect(modelSpec('org/remote', tmp)).toBe('org/remote');
    expect(modelSpec('missing-dir', tmp)).toBe(path.join(tmp, 'missing-dir'));
  });

  test('a cache laid out by hand as huggingface_hub writes it is read offline, by branch and by commit', async () => {
    // blobs/<git oid or LFS sha256>, refs/main, snapshots/<commit>/ of relative symlinks (a nested one too)
    const cache = freshEnv({ HF_HUB_OFFLINE: '1' });
    const repo = repoFromDir(tiny);
    const dir = repoDir(cache, 'acme/hand');
    const snap = path.join(dir, 'snapshots', repo.commit);
    const files = new Map([...repo.files, ['1_Pooling/config.json', Buffer.from('{"pooling_mode_cls_token": true}\n')]]);
    for (const [file, body] of files) {
      const blob = isLfs(file) ? sha256(body) : gitOid(body);
      fs.mkdirSync(path.join(dir, 'blobs'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'blobs', blob), body);
      const link = path.join(snap, file);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(path.relative(path.dirname(link), path.join(dir, 'blobs', blob)), link);
    }
    fs.mkdirSync(path.join(dir, 'refs'));
    fs.writeFileSync(path.join(dir, 'refs', 'main'), repo.commit);
    expect(fs.readlinkSync(path.join(snap, '1_Pooling/config.json'))).toMatch(/^\.\.\/\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/);

    const hub = await startFakeHub({ 'acme/hand': repo }); // offline: never asked
    process.env.HF_ENDPOINT = hub.url;
    try {
      expect(await resolveModelDir('acme/hand')).toBe(snap);
      expect(await resolveModelDir(`acme/hand@${repo.commit}`)).toBe(snap);
      const m = loadModel(await resolveModelDir('acme/hand'), { requireTokenizer: true });
      expect(m.tokenizer!.encode('hello world', 16).length).toBeGreaterThan(2);
      disposeModel(m);
      await failsWith(resolveModelDir('acme/hand@v2'), /^acme\/hand@v2: not in the Hugging Face cache \(.*\), and HF_HUB_OFFLINE=1 forbids downloading it$/);
      await failsWith(resolveModelDir('acme/other'), /^acme\/other: not in the Hugging Face cache/);
      expect(hub.requests).toEqual([]);
      // HF_HUB_CACHE wins over HF_HOME
      process.env.HF_HUB_CACHE = cache;
      process.env.HF_HOME = path.join(tmp, 'elsewhere');
      expect(await resolveModelDir('acme/hand')).toBe(snap);
    } finally {
      await hub.close();
    }
  });

  describe('through a fake Hub on 127.0.0.1', () => {
    let hub: FakeHub;
    let final: string;
    let commit: string;
    beforeAll(async () => {
      // a model dir trained from configs/tiny (one step), served as acme/tiny-m3
      const out = path.join(tmp, 'trained');
      const r = await runCli(['train', 'configs/tiny/unified.yaml', '--set', 'train.max_steps=1', '--set', 'train.save_steps=0',
        '--set', `output_dir=${out}`, '--set', `data.cache_dir=${path.join(tmp, 'data-cache')}`], {});
      expect(r.stderr).not.toMatch(/error/);
      expect(r.code).toBe(0);
      final = path.join(out, 'final');
      const repo = repoFromDir(final);
      commit = repo.commit;
      hub = await startFakeHub({ 'acme/tiny-m3': repo, 'acme/private': repoFromDir(tiny, 'hf_secret'), 'acme/gated': { ...repoFromDir(tiny), gated: true }, 'acme/sharded': shardedRepo() });
    }, 120000);
    afterAll(() => hub?.close());
    beforeEach(() => {
      hub.faults.clear();
      hub.requests.length = 0;
    });

    test('a Hub id trains (model.init, model.tokenizer) and encodes; the second run needs no server', async () => {
      const cache = path.join(tmp, 'e2e-hub');
      const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache };
      const ft = await runCli(['train', 'configs/tiny/unified.yaml', '--set', 'model.init=acme/tiny-m3', '--set', 'model.tokenizer=acme/tiny-m3',
        '--set', 'train.max_steps=1', '--set', 'train.save_steps=0', '--set', `output_dir=${path.join(tmp, 'ft')}`, '--set', `data.cache_dir=${path.join(tmp, 'data-cache')}`], env);
      expect(ft.stderr).not.toMatch(/error/);
      expect(ft.code).toBe(0);
      expect(JSON.parse(ft.stdout).final).toBe(path.join(tmp, 'ft', 'final'));

      // huggingface_hub's layout: refs/main, one snapshot per commit, relative links into blobs/ (LFS by sha256)
      const dir = repoDir(cache, 'acme/tiny-m3');
      expect(fs.readFileSync(path.join(dir, 'refs', 'main'), 'utf8')).toBe(commit);
      const snap = path.join(dir, 'snapshots', commit);
      const weights = fs.readFileSync(path.join(final, 'model.safetensors'));
      expect(fs.readlinkSync(path.join(snap, 'model.safetensors'))).toBe(`../../blobs/${sha256(weights)}`);
      expect(fs.readlinkSync(path.join(snap, 'config.json'))).toBe(`../../blobs/${gitOid(fs.readFileSync(path.join(final, 'config.json')))}`);
      // only what m3 reads: no vocab.txt beside tokenizer.json, no special_tokens_map.json
      const fetched = fs.readdirSync(snap, { recursive: true }).map(String).sort();
      expect(fetched).toEqual(['1_Pooling', '1_Pooling/config.json', 'colbert_linear.pt', 'config.json', 'config_sentence_transformers.json', 'model.safetensors',
        'modules.json', 'sentence_bert_config.json', 'sparse_linear.pt', 'tokenizer.json', 'tokenizer_config.json']);
      expect(fs.readdirSync(path.join(dir, 'blobs')).filter((b) => b.endsWith('.incomplete'))).toEqual([]);

      const input = path.join(tmp, 'texts.jsonl');
      fs.writeFileSync(input, '{"text": "what is the capital of france"}\n{"text": "berlin"}\n');
      const encode = (model: string, out: string, e: Record<string, string>) =>
        runCli(['encode', '--model', model, '--input', input, '--output', path.join(tmp, out), '--return', 'dense,sparse'], e);
      const local = await encode(final, 'local.jsonl', {});
      expect(local.code).toBe(0);
      hub.requests.length = 0;
      const online = await encode('acme/tiny-m3', 'online.jsonl', env);
      expect(online.stderr).toBe('');
      expect(online.code).toBe(0);
      expect(online.stdout).toBe('');
      expect(hub.requests).toEqual([`GET /api/models/acme/tiny-m3/revision/main`, `GET /api/models/acme/tiny-m3/tree/${commit}`]); // all cached: no download
      expect(readJsonl(path.join(tmp, 'online.jsonl'))).toEqual(readJsonl(path.join(tmp, 'local.jsonl')));

      await hub.close(); // the server is gone: the cache serves, with a notice
      const stopped = await encode('acme/tiny-m3', 'stopped.jsonl', env);
      expect(stopped.code).toBe(0);
      expect(stopped.stderr).toMatch(new RegExp(`^hub: cannot reach ${hub.url} \\(ECONNREFUSED\\); using the cached acme/tiny-m3 \\(${commit}\\)\n$`));
      expect(readJsonl(path.join(tmp, 'stopped.jsonl'))).toEqual(readJsonl(path.join(tmp, 'local.jsonl')));
      const offline = await encode('acme/tiny-m3', 'offline.jsonl', { ...env, HF_HUB_OFFLINE: '1' });
      expect(offline.code).toBe(0);
      expect(offline.stderr).toBe('');
      hub = await startFakeHub(Object.fromEntries(hub.repos)); // for the tests after this one
    }, 120000);

    test('401 and 403 name HF_TOKEN; a wrong token is refused; the right one fetches, from HF_TOKEN or $HF_HOME/token', async () => {
      freshEnv({ HF_ENDPOINT: hub.url });
      await failsWith(resolveModelDir('acme/private'), new RegExp(`^acme/private: not a local path, and ${hub.url} answered 401 Unauthorized: .*; set HF_TOKEN to a token that can read it$`));
      process.env.HF_TOKEN = 'hf_wrong';
      await failsWith(resolveModelDir('acme/private'), /401 Unauthorized.*the token in HF_TOKEN is not accepted for it$/);
      await failsWith(resolveModelDir('acme/gated'), /^acme\/gated: .* answered 403 Forbidden: Access to model is restricted.*; check HF_TOKEN$/);
      process.env.HF_TOKEN = 'hf_secret';
      const dir = await resolveModelDir('acme/private');
      expect(fs.readFileSync(path.join(dir, 'config.json'))).toEqual(fs.readFileSync(path.join(tiny, 'config.json')));
      const home = path.dirname(freshEnv({ HF_ENDPOINT: hub.url })); // the token file `hf auth login` writes
      fs.mkdirSync(home, { recursive: true });
      fs.writeFileSync(path.join(home, 'token'), 'hf_secret\n');
      expect(fs.existsSync(path.join(await resolveModelDir('acme/private'), 'model.safetensors'))).toBe(true);
    });

    test('404: an unknown repo or revision; no network with nothing cached; a tokenizer alone fetches only the tokenizer', async () => {
      freshEnv({ HF_ENDPOINT: hub.url });
      await failsWith(resolveModelDir('acme/nope'), new RegExp(`^acme/nope: not a local path, and ${hub.url} answered 404 Not Found: Repository not found`));
      await failsWith(resolveModelDir('acme/tiny-m3@v9'), /^acme\/tiny-m3@v9: .* answered 404 Not Found: Invalid rev id: v9/);
      const tok = await resolveModelDir('acme/tiny-m3', { files: 'tokenizer' });
      expect(fs.readdirSync(tok).sort()).toEqual(['tokenizer.json', 'tokenizer_config.json']);
      const closed = await startFakeHub({}); // a port nobody listens on
      await closed.close();
      freshEnv({ HF_ENDPOINT: closed.url });
      await failsWith(resolveModelDir('acme/tiny-m3'), new RegExp(`^acme/tiny-m3: cannot reach ${closed.url} \\(ECONNREFUSED\\), and it is not in the Hugging Face cache \\(.*\\)$`));
    });

    test('a sharded checkpoint: the index and its shards, safetensors before .bin, nothing m3 does not read', async () => {
      freshEnv({ HF_ENDPOINT: hub.url });
      const dir = await resolveModelDir('acme/sharded');
      expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json']);
      const m = loadModel(dir, { requireTokenizer: true });
      const want = readSafetensors(path.join(tiny, 'model.safetensors')).get('embeddings.word_embeddings.weight')!;
      expect(Buffer.from((m.params.get('embeddings.word_embeddings.weight')!.dataSync() as Float32Array).buffer).equals(Buffer.from(want.data.buffer, want.data.byteOffset, want.data.byteLength))).toBe(true);
      disposeModel(m);
    });

    test('a download cut short leaves nothing a reader takes; a rerun completes', async () => {
      const cache = freshEnv({ HF_ENDPOINT: hub.url });
      hub.faults.set('model.safetensors', { truncate: true });
      await failsWith(resolveModelDir('acme/tiny-m3'), /^acme\/tiny-m3: downloading model\.safetensors from .* failed \(.+\); nothing partial was kept, run again to restart it$/);
      const dir = repoDir(cache, 'acme/tiny-m3');
      const blob = sha256(fs.readFileSync(path.join(final, 'model.safetensors')));
      expect(fs.existsSync(path.join(dir, 'blobs', blob))).toBe(false);
      expect(fs.existsSync(path.join(dir, 'snapshots', commit, 'model.safetensors'))).toBe(false);
      expect(fs.existsSync(path.join(dir, 'refs', 'main'))).toBe(false); // the revision is pinned only once complete
      process.env.HF_HUB_OFFLINE = '1';
      await failsWith(resolveModelDir('acme/tiny-m3'), /not in the Hugging Face cache/);
      delete process.env.HF_HUB_OFFLINE;
      hub.faults.clear();
      const snap = await resolveModelDir('acme/tiny-m3');
      expect(sha256(fs.readFileSync(path.join(snap, 'model.safetensors')))).toBe(blob);
      disposeModel(loadModel(snap, { requireTokenizer: true }));
    });

    test('kill -9 during a download (progress on stderr), then a rerun restarts it cleanly', async () => {
      const cache = freshEnv({ HF_ENDPOINT: hub.url });
      const weights = fs.readFileSync(path.join(final, 'model.safetensors'));
      hub.faults.set('model.safetensors', { bytesPerTick: 64 << 10 }); // ~3 MB/s: the 8 MB file takes ~2.5 s
      const incomplete = path.join(repoDir(cache, 'acme/tiny-m3'), 'blobs', `${sha256(weights)}.incomplete`);
      const child = spawn(process.execPath, ['-r', path.join(ROOT, 'bin/register.js'), '-e',
        `require(${JSON.stringify(path.join(ROOT, 'src/model/hub.ts'))}).resolveModelDir('acme/tiny-m3').then((d) => console.log(d))`], {
        env: { ...process.env, M3_PROGRESS: '1' },
      });
      const done = collect(child, 60000);
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      for (let t = 0; t < 300 && !(stderr.includes('download acme/tiny-m3 model.safetensors') && fs.existsSync(incomplete) && fs.statSync(incomplete).size > 1 << 20); t++) await sleep(50);
      child.kill('SIGKILL');
      const r = await done;
      expect(r.code).toBeNull();
      expect(r.stdout).toBe('');
      expect(stderr).toMatch(/download acme\/tiny-m3 model\.safetensors .* MB\/s ETA/);
      const partial = fs.statSync(incomplete).size;
      expect(partial).toBeGreaterThan(1 << 20);
      expect(partial).toBeLessThan(weights.length);
      expect(fs.existsSync(incomplete.replace(/\.incomplete$/, ''))).toBe(false);

      hub.faults.clear();
      const notices: string[] = [];
      const spy = jest.spyOn(process.stderr, 'write').mockImplementation((s) => notices.push(String(s)) > 0);
      const snap = await resolveModelDir('acme/tiny-m3').finally(() => spy.mockRestore());
      expect(notices.join('')).toMatch(new RegExp(`^acme/tiny-m3 was locked by PID ${child.pid} on .*, which is gone; taking it over\n$`));
      expect(sha256(fs.readFileSync(path.join(snap, 'model.safetensors')))).toBe(sha256(weights)); // (toEqual on 8 MB buffers takes minutes)
      expect(fs.existsSync(incomplete)).toBe(false);
    }, 60000);
  });
});
