/**
 * A stand-in for the Hugging Face Hub on 127.0.0.1, reached through HF_ENDPOINT. It answers what
 * @huggingface/hub 2.x asks, as huggingface.co answers it:
 *   GET  /api/models/{org}/{name}/revision/{rev}       model info ({id, sha, ...}; modelInfo)
 *   GET  /api/models/{org}/{name}/tree/{rev}?recursive  files with git oid, size and lfs {oid, size} (listFiles)
 *   POST /api/models/{org}/{name}/paths-info/{rev}      the same for named paths, with lastCommit (pathsInfo)
 *   GET|HEAD /{org}/{name}/resolve/{rev}/{file}        the file (Range honoured) with ETag (git oid) and
 *        X-Repo-Commit; an LFS file (weights) answers 302 to /cdn/{sha256} with X-Linked-Etag and X-Linked-Size
 *   GET  /cdn/{sha256}                                  the LFS object, Range honoured
 * Errors as the Hub gives them: 401 for a private repo without its token, 403 for a gated one, 404 with X-Error-Code
 * RepoNotFound / RevisionNotFound / EntryNotFound. `faults` cuts a file's full download short (the
 * connection closes after half of the announced Content-Length) or sends it slowly.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';

/** `token`: private, readable with that token only; `gated`: every request answers 403. */
export interface FakeRepo { files: Map<string, Buffer>; commit: string; token?: string; gated?: boolean }
export interface Fault { truncate?: boolean; bytesPerTick?: number }

export interface FakeHub {
  url: string;
  repos: Map<string, FakeRepo>;
  /** "METHOD /path" of every request, in order. */
  requests: string[];
  /** By file path in its repo. */
  faults: Map<string, Fault>;
  close(): Promise<void>;
}

const sha = (algo: string, ...parts: (string | Buffer)[]) => {
  const h = createHash(algo);
  for (const p of parts) h.update(p);
  return h.digest('hex');
};
export const gitOid = (b: Buffer) => sha('sha1', `blob ${b.length}\0`, b);
export const sha256 = (b: Buffer) => sha('sha256', b);
/** Stored through LFS (as the Hub's default .gitattributes does for weights). */
export const isLfs = (file: string) => /\.(safetensors|bin|pt|onnx)$/.test(file);

/** Every file under `dir` by relative posix path; the commit is a hash of them all. */
export function repoFromDir(dir: string, token?: string): FakeRepo {
  const files = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.name.startsWith('.')) continue;
      if (e.isDirectory()) walk(r);
      else files.set(r, fs.readFileSync(path.join(dir, r)));
    }
  };
  walk('');
  const commit = sha('sha1', ...[...files].sort(([a], [b]) => a.localeCompare(b)).flatMap(([n, b]) => [n, b]));
  return { files, commit, ...(token && { token }) };
}

function entry(file: string, b: Buffer, commit: string, expand: boolean) {
  return {
    type: 'file', oid: gitOid(b), size: b.length, path: file,
    ...(isLfs(file) && { lfs: { oid: sha256(b), size: b.length, pointerSize: 134 } }),
    ...(expand && { lastCommit: { id: commit, title: 'Upload', date: '2026-01-01T00:00:00.000Z' } }),
  };
}

export async function startFakeHub(repos: Record<string, FakeRepo>): Promise<FakeHub> {
  const hub: FakeHub = { url: '', repos: new Map(Object.entries(repos)), requests: [], faults: new Map(), close: async () => {} };
  const json = (res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', ...headers });
    res.end(JSON.stringify(body));
  };
  /** The repo and commit of a request, or null after answering the error. */
  const open = (req: http.IncomingMessage, res: http.ServerResponse, name: string, rev: string | null): { repo: FakeRepo; commit: string } | null => {
    const repo = hub.repos.get(name);
    if (repo?.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      json(res, 401, { error: 'Invalid username or password.' }, { 'X-Error-Code': 'RepoNotFound' });
      return null;
    }
    if (repo?.gated) {
      json(res, 403, { error: 'Access to model is restricted. You must have access to it and be authenticated to access it. Please log in.' }, { 'X-Error-Code': 'GatedRepo' });
      return null;
    }
    if (!repo) {
      json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      return null;
    }
    if (rev !== null && rev !== 'main' && rev !== repo.commit) {
      json(res, 404, { error: `Invalid rev id: ${rev}` }, { 'X-Error-Code': 'RevisionNotFound' });
      return null;
    }
    return { repo, commit: repo.commit };
  };
  /** Sends `body` (Range honoured); a fault on `file` applies to a full GET. */
  const send = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, file: string, headers: http.OutgoingHttpHeaders) => {
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      const end = Math.min(range[2] ? Number(range[2]) : body.length - 1, body.length - 1);
      res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${body.length}`, 'Content-Length': end - start + 1, 'Accept-Ranges': 'bytes' });
      res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Length': body.length, 'Accept-Ranges': 'bytes' });
    const fault = hub.faults.get(file);
    if (req.method === 'HEAD') return void res.end();
    if (fault?.truncate) {
      res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
      return;
    }
    if (fault?.bytesPerTick) {
      let at = 0;
      const tick = () => {
        if (res.destroyed) return;
        const next = Math.min(at + fault.bytesPerTick!, body.length);
        res.write(body.subarray(at, next));
        at = next;
        if (at < body.length) setTimeout(tick, 20);
        else res.end();
      };
      return tick();
    }
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    hub.requests.push(`${req.method} ${url.pathname}`);
    const p = decodeURIComponent(url.pathname);
    let m: RegExpExecArray | null;
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(p)) && req.method === 'GET') {
      const r = open(req, res, m[1], m[2]);
      if (r) json(res, 200, { _id: 'x', id: m[1], modelId: m[1], sha: r.commit, private: !!r.repo.token, gated: false, downloads: 0, likes: 0, lastModified: '2026-01-01T00:00:00.000Z', pipeline_tag: 'feature-extraction' });
      return;
    }
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(p)) && req.method === 'GET') {
      const r = open(req, res, m[1], m[2]);
      if (!r) return;
      const dirs = new Set([...r.repo.files.keys()].filter((f) => f.includes('/')).map((f) => f.slice(0, f.lastIndexOf('/'))));
      json(res, 200, [
        ...[...dirs].map((d) => ({ type: 'directory', oid: sha('sha1', d), size: 0, path: d })),
        ...[...r.repo.files].map(([f, b]) => entry(f, b, r.commit, url.searchParams.get('expand') === 'true')),
      ]);
      return;
    }
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/paths-info\/(.+)$/.exec(p)) && req.method === 'POST') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r = open(req, res, m![1], m![2]);
        if (!r) return;
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { paths: string[]; expand?: boolean };
        json(res, 200, body.paths.filter((f) => r.repo.files.has(f)).map((f) => entry(f, r.repo.files.get(f)!, r.commit, !!body.expand)));
      });
      return;
    }
    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p)) && (req.method === 'GET' || req.method === 'HEAD')) {
      const r = open(req, res, m[1], m[2]);
      if (!r) return;
      const file = m[3];
      const body = r.repo.files.get(file);
      if (!body) {
        res.writeHead(404, { 'X-Error-Code': 'EntryNotFound', 'X-Error-Message': 'Entry not found' });
        return void res.end('Entry not found');
      }
      const common = { 'X-Repo-Commit': r.commit };
      if (isLfs(file)) {
        res.writeHead(302, { ...common, Location: `/cdn/${sha256(body)}`, ETag: `"${gitOid(body)}"`, 'X-Linked-Etag': `"${sha256(body)}"`, 'X-Linked-Size': body.length, 'Content-Length': 0 });
        return void res.end();
      }
      return send(req, res, body, file, { ...common, ETag: `"${gitOid(body)}"`, 'Content-Type': 'application/octet-stream' });
    }
    if ((m = /^\/cdn\/([0-9a-f]{64})$/.exec(p)) && req.method === 'GET') {
      for (const repo of hub.repos.values()) {
        for (const [file, body] of repo.files) if (isLfs(file) && sha256(body) === m[1]) return send(req, res, body, file, { ETag: `"${m[1]}"`, 'Content-Type': 'application/octet-stream' });
      }
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('Not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hub.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  hub.close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return hub;
}
