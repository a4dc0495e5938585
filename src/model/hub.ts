/**
 * Models by Hub id. A model or tokenizer spec that is not an existing path and reads `org/name` or
 * `org/name@revision` names a Hugging Face Hub repo: its files are fetched by the official @huggingface/hub
 * package into the Hugging Face cache, in huggingface_hub's layout (HF_HUB_CACHE/models--org--name/ with
 * blobs/, refs/<revision>, snapshots/<commit>/ of relative symlinks into blobs/), so Python and m3 share one
 * cache, and the snapshot folder is then loaded as any model dir.
 *
 * Environment, read as huggingface_hub reads it: HF_HOME (default ~/.cache/huggingface), HF_HUB_CACHE (default
 * $HF_HOME/hub), HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (else the file `hf auth login` writes,
 * $HF_HOME/token), HF_HUB_OFFLINE=1 (the cache only: no request is made).
 *
 * Only the files m3 reads are fetched: config.json, the weights readModelWeights would pick (safetensors before
 * .bin; a sharded index and its shards), the M3 heads, the RetroMAE decoder, the tokenizer and the
 * sentence-transformers files `m3 export` copies. What the package leaves to its caller is done here: the
 * revision is pinned to one commit (refs/<revision>, written once the snapshot is complete) so all files land
 * in one snapshot folder; a progress bar per large file; each blob's size checked; one downloader per repo at a
 * time (the package streams into blobs/<etag>.incomplete, a fixed name, and renames it to the blob only when
 * the stream ends without error, so a cut connection or kill -9 leaves at most that file, restarted from zero
 * next time); HF_HUB_OFFLINE; the cached snapshot when the Hub cannot be reached; one-line errors.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { ListFileEntry } from '@huggingface/hub';
import { UserError } from '../util/errors';
import { writeFileAtomic } from '../util/fsx';
import { Progress } from '../util/progress';
import { waitForLock } from '../util/run-lock';
import { DECODER_FILE } from './retromae';
import { HEAD_FILES, SENTENCE_TRANSFORMERS_FILES, WEIGHT_FILES } from './weights/modeldir';

export interface HubId { repo: string; revision: string }

/** What a caller reads from a repo: a whole model dir, or only its tokenizer. */
export type HubFiles = 'model' | 'tokenizer';

// huggingface_hub's repo-id rule: [\w.-] parts, not starting or ending with '.' or '-', no '--' or '..', ≤ 96 chars
const PART = /^(?![.-])[\w.-]+(?<![.-])$/;
const REVISION = /^[\w.-]+(?:\/[\w.-]+)*$/;
const COMMIT = /^[0-9a-f]{40}$/;
const TOKENIZER_FILES = ['tokenizer.json', 'vocab.txt'];
const BAR_BYTES = 1 << 20;

/** `org/name` or `org/name@revision` (revision: branch, tag or commit; default main), else null. */
export function parseHubId(spec: string): HubId | null {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? 'main' : spec.slice(at + 1);
  const parts = repo.split('/');
  if (parts.length !== 2 || !parts.every((p) => PART.test(p)) || /--|\.\./.test(repo) || repo.length > 96) return null;
  if (!REVISION.test(revision) || revision.split('/').some((s) => s === '.' || s === '..')) return null;
  return { repo, revision };
}

/** Where `spec` points: the path against `base` when it exists, else the Hub id as written, else that (missing) path. */
export function modelSpec(spec: string, base = process.cwd()): string {
  const local = path.resolve(base, spec);
  return fs.existsSync(local) || !parseHubId(spec) ? local : spec;
}

/**
 * The local dir of a model or tokenizer spec — the one entry point for every place that takes one: an existing
 * path (relative to `base`, default the working dir) as it is; a Hub id, fetched into the Hugging Face cache
 * when needed, as its snapshot folder; any other spec as a path (the loader then says it is missing).
 */
export async function resolveModelDir(spec: string, opts: { files?: HubFiles; base?: string } = {}): Promise<string> {
  return specDir(modelSpec(spec, opts.base), opts.files ?? 'model');
}

/** A stage's `model.init` / `model.tokenizer` (already as modelSpec gave them) as local dirs. */
export async function resolveModelSources<T extends { init?: string; tokenizer?: string }>(m: T): Promise<T> {
  return {
    ...m,
    init: m.init === undefined ? undefined : await specDir(m.init, 'model'),
    tokenizer: m.tokenizer === undefined ? undefined : await specDir(m.tokenizer, 'tokenizer'),
  };
}

async function specDir(spec: string, files: HubFiles): Promise<string> {
  const id = path.isAbsolute(spec) ? null : parseHubId(spec);
  return id ? fetchSnapshot(id, files) : path.resolve(spec);
}

const truthy = (v: string | undefined) => ['1', 'ON', 'YES', 'TRUE'].includes((v ?? '').trim().toUpperCase());
const hfHome = () => process.env.HF_HOME || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'huggingface');
const endpoint = () => (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');

function token(): string | undefined {
  if (process.env.HF_TOKEN) return process.env.HF_TOKEN.trim();
  try {
    return fs.readFileSync(process.env.HF_TOKEN_PATH || path.join(hfHome(), 'token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

const label = (id: HubId) => (id.revision === 'main' ? id.repo : `${id.repo}@${id.revision}`);
const isFile = (p: string) => {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
};

/** The cached snapshot of `id` holding what `files` needs at least, or null. */
function cachedSnapshot(id: HubId, repoDir: string, files: HubFiles): string | null {
  let commit = id.revision;
  if (!COMMIT.test(commit)) {
    try {
      commit = fs.readFileSync(path.join(repoDir, 'refs', id.revision), 'utf8').trim();
    } catch {
      return null;
    }
  }
  const dir = path.join(repoDir, 'snapshots', commit);
  const has = (names: string[]) => names.some((n) => isFile(path.join(dir, n)));
  const ok = files === 'tokenizer' ? has(TOKENIZER_FILES) : has(['config.json']) && has(WEIGHT_FILES);
  return ok ? dir : null;
}

/** The cause code of a request that got no answer (refused, unknown host, timeout), else null. */
function unreachable(e: unknown): string | null {
  // by name: fetch's errors come from Node's own realm, where instanceof fails under a vm (jest)
  if ((e as Error)?.name !== 'TypeError' || (e as Error).message !== 'fetch failed') return null;
  const cause = (e as Error).cause as { code?: string; message?: string } | undefined;
  return cause?.code ?? cause?.message ?? 'no connection';
}

/** A one-line error for a failed Hub request. */
function hubError(e: unknown, id: HubId): Error {
  if (e instanceof UserError) return e;
  const where = `${label(id)}: ${endpoint()}`;
  const status = (e as { statusCode?: unknown }).statusCode;
  if (typeof status !== 'number') {
    if (/access token/.test((e as Error)?.message ?? '')) return new UserError(`HF_TOKEN: ${(e as Error).message}`);
    return e as Error;
  }
  const said = (e as { data?: { error?: unknown } }).data?.error;
  const detail = typeof said === 'string' && said ? `: ${said}` : '';
  if (status === 401) {
    return new UserError(`${label(id)}: not a local path, and ${endpoint()} answered 401 Unauthorized${detail} (a private or gated repo, or none by that name); ${token() ? 'the token in HF_TOKEN is not accepted for it' : 'set HF_TOKEN to a token that can read it'}`);
  }
  if (status === 403) return new UserError(`${where} answered 403 Forbidden${detail} (a gated repo whose terms this account has not accepted, or a token without read access); check HF_TOKEN`);
  if (status === 404) return new UserError(`${label(id)}: not a local path, and ${endpoint()} answered 404 Not Found${detail} (no such repo, or no revision '${id.revision}')`);
  return new UserError(`${where} answered ${status}${detail}`);
}

type Hub = typeof import('@huggingface/hub');

/** The snapshot folder of `id` with the files `files` needs, fetched when it is not complete in the cache. */
async function fetchSnapshot(id: HubId, files: HubFiles): Promise<string> {
  const hub: Hub = await import('@huggingface/hub');
  const cacheDir = hub.getHFHubCachePath();
  const repoDir = path.join(cacheDir, hub.getRepoFolderName({ type: 'model', name: id.repo }));
  if (truthy(process.env.HF_HUB_OFFLINE)) {
    const dir = cachedSnapshot(id, repoDir, files);
    if (!dir) throw new UserError(`${label(id)}: not in the Hugging Face cache (${cacheDir}), and HF_HUB_OFFLINE=1 forbids downloading it`);
    return dir;
  }
  const creds = { hubUrl: endpoint(), accessToken: token() };
  let commit: string;
  const listing = new Map<string, ListFileEntry>();
  try {
    commit = COMMIT.test(id.revision) ? id.revision : (await hub.modelInfo({ name: id.repo, revision: id.revision, additionalFields: ['sha'], ...creds })).sha;
    if (typeof commit !== 'string' || !COMMIT.test(commit)) throw new UserError(`${label(id)}: ${endpoint()} gave no commit for revision '${id.revision}'`);
    for await (const e of hub.listFiles({ repo: { type: 'model', name: id.repo }, revision: commit, recursive: true, ...creds })) if (e.type === 'file') listing.set(e.path, e);
  } catch (e) {
    const cause = unreachable(e);
    if (!cause) throw hubError(e, id);
    const dir = cachedSnapshot(id, repoDir, files);
    if (!dir) throw new UserError(`${label(id)}: cannot reach ${endpoint()} (${cause}), and it is not in the Hugging Face cache (${cacheDir})`);
    process.stderr.write(`hub: cannot reach ${endpoint()} (${cause}); using the cached ${label(id)} (${path.basename(dir)})\n`);
    return dir;
  }
  const snapshot = path.join(repoDir, 'snapshots', commit);
  const lock = await waitForLock(path.join(cacheDir, '.locks', path.basename(repoDir), 'm3-download'), {
    label: label(id), what: `downloading ${id.repo}`, timeoutMs: 3600_000,
    waiting: (h) => `hub: waiting for PID ${h.pid}, which is downloading ${id.repo}`,
  });
  try {
    const get = (names: string[]) => fetchFiles(hub, id, commit, names.map((n) => listing.get(n)!), { cacheDir, repoDir, ...creds });
    const first = pickFiles(new Set(listing.keys()), files, `${label(id)} (commit ${commit})`);
    await get(first);
    await get(derivedFiles(snapshot, first, listing, `${label(id)} (commit ${commit})`));
  } finally {
    lock.release();
  }
  if (commit !== id.revision) writeFileAtomic(path.join(repoDir, 'refs', id.revision), commit);
  return snapshot;
}

/** The repo files m3 reads, as readModelWeights and loadTokenizer look for them; errors when the essentials are absent. */
function pickFiles(names: Set<string>, files: HubFiles, where: string): string[] {
  const first = (...candidates: string[]) => candidates.find((n) => names.has(n));
  const tokenizer = first(...TOKENIZER_FILES);
  const tokenizerFiles = [tokenizer, 'tokenizer_config.json'];
  if (files === 'tokenizer') {
    if (!tokenizer) throw new UserError(`${where}: no tokenizer files (${TOKENIZER_FILES.join(' or ')})`);
    return tokenizerFiles.filter((n): n is string => !!n && names.has(n));
  }
  if (!names.has('config.json')) throw new UserError(`${where}: no config.json (not a model repo)`);
  const weights = first(...WEIGHT_FILES);
  if (!weights) throw new UserError(`${where}: no model weights (expected ${WEIGHT_FILES.join(', ')})`);
  const heads = HEAD_FILES.map((h) => first(`${h}.pt`, `${h}.safetensors`));
  return ['config.json', weights, ...heads, ...tokenizerFiles, DECODER_FILE, ...SENTENCE_TRANSFORMERS_FILES].filter((n): n is string => !!n && names.has(n));
}

/** Files named by files already fetched: the shards of a sharded index, the JSON files of sentence-transformers modules. */
function derivedFiles(snapshot: string, fetched: string[], listing: Map<string, ListFileEntry>, where: string): string[] {
  const out = new Set<string>();
  const readJson = (name: string): unknown => {
    try {
      return JSON.parse(fs.readFileSync(path.join(snapshot, name), 'utf8'));
    } catch (e) {
      throw new UserError(`${where}: ${name} is not valid JSON (${(e as Error).message.split('\n')[0]})`);
    }
  };
  const index = fetched.find((n) => n.endsWith('.index.json'));
  if (index) {
    const map = (readJson(index) as { weight_map?: Record<string, unknown> } | null)?.weight_map ?? {};
    for (const shard of new Set(Object.values(map))) {
      if (typeof shard !== 'string' || !listing.has(shard)) throw new UserError(`${where}: ${index} names shard ${JSON.stringify(shard)}, which the repo does not have`);
      out.add(shard);
    }
  }
  if (fetched.includes('modules.json')) {
    const modules = readJson('modules.json');
    const dirs = new Set((Array.isArray(modules) ? modules : []).map((m) => (m as { path?: unknown })?.path).filter((p): p is string => typeof p === 'string' && p !== ''));
    for (const name of listing.keys()) if (dirs.has(path.posix.dirname(name)) && name.endsWith('.json')) out.add(name);
  }
  return [...out];
}

let silenced = 0;
let debug = console.debug;
/** Runs `fn` with console.debug muted: the package announces each download there, on stdout, which carries only results here. */
async function withoutDebug<T>(fn: () => Promise<T>): Promise<T> {
  if (silenced++ === 0) {
    debug = console.debug;
    console.debug = () => {};
  }
  try {
    return await fn();
  } finally {
    if (--silenced === 0) console.debug = debug;
  }
}

interface FetchContext { cacheDir: string; repoDir: string; hubUrl: string; accessToken?: string }

/** Downloads `entries` at `commit` into the snapshot (those already there, at their listed size, are kept). */
async function fetchFiles(hub: Hub, id: HubId, commit: string, entries: ListFileEntry[], c: FetchContext): Promise<void> {
  for (const entry of entries) {
    const size = entry.lfs?.size ?? entry.size;
    const pointer = path.join(c.repoDir, 'snapshots', commit, entry.path);
    const etag = entry.lfs?.oid ?? entry.xetHash ?? entry.oid;
    if (!etag) throw new UserError(`${label(id)}: ${c.hubUrl} lists ${entry.path} without an oid`);
    const blob = path.join(c.repoDir, 'blobs', etag); // as downloadFileToCacheDir names it
    if (isFile(pointer)) {
      if (fs.statSync(pointer).size === size) continue;
      fs.rmSync(blob, { force: true }); // a wrong blob (another tool, a bad disk): fetched again
    }
    const bar = size >= BAR_BYTES ? new Progress(`download ${id.repo} ${entry.path}`, Math.ceil(size / 1e6), 'MB') : null;
    const timer = bar && setInterval(() => {
      try {
        bar.update(Math.floor(fs.statSync(`${blob}.incomplete`).size / 1e6));
      } catch { /* not started, or renamed into place */ }
    }, 200);
    let file: string;
    try {
      file = await withoutDebug(() => hub.downloadFileToCacheDir({ repo: { type: 'model', name: id.repo }, path: entry.path, revision: commit, ...c }));
    } catch (e) {
      if (typeof (e as { statusCode?: unknown }).statusCode === 'number' || e instanceof UserError) throw hubError(e, id);
      const why = unreachable(e) ?? ((e as Error).message || String(e));
      throw new UserError(`${label(id)}: downloading ${entry.path} from ${c.hubUrl} failed (${why}); nothing partial was kept, run again to restart it`);
    } finally {
      if (timer) clearInterval(timer);
    }
    const got = fs.statSync(file).size;
    if (got !== size) {
      fs.rmSync(file, { force: true });
      fs.rmSync(blob, { force: true });
      throw new UserError(`${label(id)}: ${entry.path} arrived with ${got} bytes, the Hub lists ${size}; removed it, run again to restart the download`);
    }
    bar?.update(Math.ceil(size / 1e6));
    bar?.done();
  }
}
