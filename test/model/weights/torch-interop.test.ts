/**
 * Interop with real PyTorch (Debian's python3-torch; CI installs it): torch.load(..., weights_only=True) — what
 * FlagEmbedding does — reads the files we write, we read what torch.save writes (views, dtypes, protocol 4,
 * nn.Module state dicts), and pickles carrying os.system / eval payloads are refused without running them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { readModelWeights, writeModelDir } from '../../../src/model/weights/modeldir';
import { readTorchCheckpoint, readTorchStateDict, writeTorchStateDict } from '../../../src/model/weights/torch';
import { HostTensor, TensorMap } from '../../../src/model/weights/types';
import { openForRead } from '../../../src/model/weights/fileio';
import { openZip, readZipEntry } from '../../../src/model/weights/zip';
import { UserError } from '../../../src/util/errors';
import { sharedDir } from '../../helpers/shared';
import { f32, runPython, tempDir, torchPython } from './helpers';

const tmp = tempDir('interop');
beforeAll(() => { torchPython(); });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface PyTensor { dtype: string; shape: number[]; values: number[] }

/** torch.load(weights_only=True) of each file, as JSON; also checks the zip CRCs and the OrderedDict/_metadata. */
const LOAD = `
import json, sys, zipfile, collections, torch
out = {}
for p in sys.argv[1:]:
    assert zipfile.ZipFile(p).testzip() is None, p
    sd = torch.load(p, map_location='cpu', weights_only=True)
    assert type(sd) is collections.OrderedDict, type(sd)
    out[p] = {'metadata': getattr(sd, '_metadata', None), 'tensors': {k: {'dtype': str(v.dtype), 'shape': list(v.shape),
        'values': v.reshape(-1).float().tolist() if v.is_floating_point() else v.reshape(-1).tolist()} for k, v in sd.items()}}
print(json.dumps(out))
`;

function expectTorchSees(got: Record<string, PyTensor>, want: TensorMap, dtype: string): void {
  expect(Object.keys(got)).toEqual([...want.keys()]);
  for (const [name, t] of want) {
    expect({ name, dtype: got[name].dtype, shape: got[name].shape }).toEqual({ name, dtype, shape: t.shape });
    expect(got[name].values).toEqual(Array.from(t.data));
  }
}

describe('torch reads what we write', () => {
  test('FlagEmbedding loads the heads of a written model dir (strict Linear.load_state_dict, weights_only)', async () => {
    const w = readModelWeights(sharedDir('golden', 'encoder-bert-bin', 'model'));
    const out = path.join(tmp, 'flag');
    await writeModelDir(out, { config: JSON.parse(fs.readFileSync(sharedDir('golden', 'encoder-bert-bin', 'model', 'config.json'), 'utf8')), encoder: w.encoder, heads: w.heads });
    const files = ['colbert_linear.pt', 'sparse_linear.pt'].map((f) => path.join(out, f));
    const got = JSON.parse(runPython(LOAD, files));
    for (const h of ['colbert_linear', 'sparse_linear']) {
      const want: TensorMap = new Map([['weight', w.heads.get(`${h}.weight`)!], ['bias', w.heads.get(`${h}.bias`)!]]);
      expect(got[path.join(out, `${h}.pt`)].metadata).toEqual({ '': { version: 1 } });
      expectTorchSees(got[path.join(out, `${h}.pt`)].tensors, want, 'torch.float32');
    }
    const strict = runPython(`
import sys, torch
d = sys.argv[1]
c = torch.load(d + '/colbert_linear.pt', map_location='cpu', weights_only=True)
s = torch.load(d + '/sparse_linear.pt', map_location='cpu', weights_only=True)
colbert = torch.nn.Linear(c['weight'].shape[1], c['weight'].shape[0]); colbert.load_state_dict(c)
sparse = torch.nn.Linear(s['weight'].shape[1], 1); sparse.load_state_dict(s)
print(tuple(colbert.weight.shape), tuple(sparse.weight.shape))
`, [out]);
    expect(strict.trim()).toBe('(16, 24) (1, 24)');
  });

  test('float16, bfloat16, int64 and forced-zip64 files load in torch', () => {
    const t: TensorMap = new Map([['w', f32([3, 4], 9, true)], ['s', f32([], 2, true)], ['e', f32([0, 2])]]);
    const ids: TensorMap = new Map([['ids', { dtype: 'int32', shape: [3], data: Int32Array.from([1, -2, 2 ** 31 - 1]) }]]);
    const files = {
      f16: path.join(tmp, 'f16.pt'), bf16: path.join(tmp, 'bf16.pt'), i64: path.join(tmp, 'i64.pt'), z64: path.join(tmp, 'z64.pt'),
    };
    writeTorchStateDict(files.f16, t, { floatDtype: 'F16' });
    writeTorchStateDict(files.bf16, new Map([['w', { ...t.get('w')!, data: t.get('w')!.data.map((v) => Math.round(v * 16) / 16) }]]), { floatDtype: 'BF16' });
    writeTorchStateDict(files.i64, ids);
    writeTorchStateDict(files.z64, t, { forceZip64: true });
    const got = JSON.parse(runPython(LOAD, Object.values(files)));
    expectTorchSees(got[files.f16].tensors, t, 'torch.float16');
    expectTorchSees(got[files.bf16].tensors, readTorchStateDict(files.bf16), 'torch.bfloat16');
    expect(got[files.bf16].tensors.w.values).toEqual(Array.from(t.get('w')!.data, (v) => Math.round(v * 16) / 16));
    expectTorchSees(got[files.i64].tensors, ids, 'torch.int64');
    expectTorchSees(got[files.z64].tensors, t, 'torch.float32');
  });

  test('our records equal torch.save\'s for the same state dict (byte for byte where torch has no extra records)', () => {
    const t: TensorMap = new Map([['weight', f32([5, 3], 4)], ['bias', f32([5], 5)]]);
    const mine = path.join(tmp, 'mine', 'colbert_linear.pt');
    const theirs = path.join(tmp, 'theirs', 'colbert_linear.pt');
    fs.mkdirSync(path.dirname(theirs), { recursive: true });
    writeTorchStateDict(mine, t);
    runPython(`
import sys, json, collections, torch
v = json.loads(sys.argv[2])
sd = collections.OrderedDict((k, torch.tensor(x['values'], dtype=torch.float32).reshape(x['shape'])) for k, x in v.items())
sd._metadata = collections.OrderedDict({'': {'version': 1}})
torch.save(sd, sys.argv[1])
`, [theirs, JSON.stringify(Object.fromEntries([...t].map(([k, x]) => [k, { shape: x.shape, values: Array.from(x.data) }])))]);
    const records = (file: string) => {
      const { fd, size } = openForRead(file);
      try {
        const z = openZip(file, fd, size);
        return new Map([...z.entries.values()].map((e) => [e.name.slice(e.name.indexOf('/') + 1), readZipEntry(z, e).toString('hex')]));
      } finally {
        fs.closeSync(fd);
      }
    };
    const a = records(mine);
    const b = records(theirs);
    for (const [name, hex] of b) if (!name.startsWith('.')) expect({ name, hex: a.get(name) }).toEqual({ name, hex });
    if (!b.has('byteorder')) {
      writeTorchStateDict(mine, t, { byteorder: false });
      expect(fs.readFileSync(mine).equals(fs.readFileSync(theirs))).toBe(true);
    }
  });
});

describe('we read what torch writes', () => {
  const SAVE = `
import sys, json, collections, torch
torch.manual_seed(0)
base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5) / 8
lin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
sd = collections.OrderedDict()
sd['transposed'] = base[1].t()
sd['stepped'] = base[:, 1::2, ::3]
sd['expanded'] = torch.arange(3.).reshape(3, 1).expand(3, 4)
sd['offset_rows'] = base.reshape(12, 5)[7:10]
sd['scalar'] = base[2, 3, 4]
sd['empty'] = torch.zeros(0, 3)
sd['half_view'] = (base.half())[0].t()
sd['bf16'] = base[1].bfloat16()
sd['f64'] = torch.tensor([1/3, -2.5, 1e-40], dtype=torch.float64)
sd['i64'] = torch.tensor([-5, 2**31 - 1], dtype=torch.int64)
sd['i32'] = torch.tensor([7, -8], dtype=torch.int32)
sd['i16'] = torch.tensor([-300], dtype=torch.int16)
sd['i8'] = torch.tensor([-3], dtype=torch.int8)
sd['u8'] = torch.tensor([250], dtype=torch.uint8)
sd['bool'] = torch.tensor([True, False])
sd['tied_a'] = base[0]
sd['tied_b'] = base[0]
sd['param'] = torch.nn.Parameter(torch.ones(2, 2) / 3)
for k, v in lin.state_dict().items(): sd['lin.' + k] = v
sd._metadata = lin.state_dict()._metadata
torch.save(sd, sys.argv[1])
torch.save(sd, sys.argv[2], pickle_protocol=4)
torch.save(lin.state_dict(), sys.argv[3], _use_new_zipfile_serialization=False)
print(json.dumps({k: {'shape': list(v.shape), 'values': (v.float() if v.is_floating_point() else v).reshape(-1).tolist()} for k, v in sd.items()}))
`;
  let want: Record<string, { shape: number[]; values: (number | boolean)[] }>;
  const files = ['p2.pt', 'p4.pt', 'legacy.pt'].map((f) => path.join(tmp, f));
  beforeAll(() => { want = JSON.parse(runPython(SAVE, files)); });

  test.each([['protocol 2', 0], ['protocol 4 (STACK_GLOBAL, MEMOIZE, FRAME)', 1]])('views, dtypes, parameters and module metadata (%s)', (_, i) => {
    const { tensors, metadata } = readTorchCheckpoint(files[i as number]);
    expect([...tensors.keys()]).toEqual(Object.keys(want));
    for (const [name, w] of Object.entries(want)) {
      const t = tensors.get(name) as HostTensor;
      expect({ name, shape: t.shape }).toEqual({ name, shape: w.shape });
      expect({ name, values: Array.from(t.data) }).toEqual({ name, values: w.values.map((v) => (typeof v === 'boolean' ? Number(v) : t.dtype === 'float32' ? Math.fround(v) : v)) });
    }
    expect(tensors.get('i64')?.dtype).toBe('int32');
    expect(metadata).toEqual({ '': { version: 1 }, 0: { version: 1 }, 1: { version: 1 } });
  });

  test('legacy (non-zip) torch files get a clear error', () => {
    expect(() => readTorchStateDict(files[2])).toThrow(new UserError(`${files[2]}: legacy (pre-1.6, non-zip) PyTorch format is not supported; re-save it with torch >= 1.6: torch.save(torch.load(path), path)`));
  });
});

describe('malicious checkpoints are refused and never run', () => {
  test('os.system via GLOBAL and STACK_GLOBAL, eval via REDUCE', () => {
    const marker = path.join(tmp, 'pwned');
    const proof = path.join(tmp, 'proof');
    const names = ['colbert_linear.pt', 'p4.pt', 'eval.pt', 'proof.pt'].map((f) => path.join(tmp, 'evil', f));
    fs.mkdirSync(path.dirname(names[0]), { recursive: true });
    runPython(`
import os, sys, torch
class Evil:
    def __init__(self, cmd): self.cmd = cmd
    def __reduce__(self): return (os.system, (self.cmd,))
class EvilEval:
    def __init__(self, code): self.code = code
    def __reduce__(self): return (eval, (self.code,))
marker, proof, p2, p4, pe, pp = sys.argv[1:]
torch.save({'weight': Evil('touch ' + marker)}, p2)
torch.save({'weight': Evil('touch ' + marker)}, p4, pickle_protocol=4)
torch.save({'weight': EvilEval("__import__('os').system('touch %s')" % marker)}, pe, pickle_protocol=4)
torch.save({'weight': Evil('touch ' + proof)}, pp)
torch.load(pp, weights_only=False)  # an unsafe loader runs the payload: the test's payloads are live
`, [marker, proof, ...names]);
    expect(fs.existsSync(proof)).toBe(true);
    expect(() => readTorchStateDict(names[0])).toThrow(new UserError(`${names[0]}: refused pickle global 'posix.system' (not in the allow-list)`));
    expect(() => readTorchStateDict(names[1])).toThrow(new UserError(`${names[1]}: refused pickle global 'posix.system' (not in the allow-list)`));
    expect(() => readTorchStateDict(names[2])).toThrow(new UserError(`${names[2]}: refused pickle global 'builtins.eval' (not in the allow-list)`));
    const dir = path.join(tmp, 'evil-dir');
    fs.mkdirSync(dir);
    fs.copyFileSync(sharedDir('golden', 'encoder-xlmr-safetensors', 'model', 'model.safetensors'), path.join(dir, 'model.safetensors'));
    fs.copyFileSync(names[0], path.join(dir, 'colbert_linear.pt'));
    expect(() => readModelWeights(dir)).toThrow(new UserError(`${path.join(dir, 'colbert_linear.pt')}: refused pickle global 'posix.system' (not in the allow-list)`));
    expect(fs.existsSync(marker)).toBe(false);
  });
});
