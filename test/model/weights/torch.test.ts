import * as fs from 'fs';
import * as path from 'path';
import { floatToHalf, halfToFloat } from '../../../src/model/weights/dtype';
import { pickle, PickleNode } from '../../../src/model/weights/pickle';
import { readTorchCheckpoint, readTorchStateDict, torchZipEntries, writeTorchStateDict } from '../../../src/model/weights/torch';
import { HostTensor, TensorMap } from '../../../src/model/weights/types';
import { writeZip } from '../../../src/model/weights/zip';
import { UserError } from '../../../src/util/errors';
import { sharedDir } from '../../helpers/shared';
import { expectSameTensors, f32, tempDir, torchZip } from './helpers';

const golden = (...p: string[]) => sharedDir('golden', ...p);
const tmp = tempDir('torch');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const message = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('no error');
};

const craft = (name: string, pkl: Buffer, storages: Record<string, Uint8Array> = {}) => torchZip(path.join(tmp, name), pkl, storages);

const int = (v: number): PickleNode => ({ t: 'int', v });
const tup = (...items: PickleNode[]): PickleNode => ({ t: 'tuple', items });
const str = (v: string): PickleNode => ({ t: 'str', v });
/** _rebuild_tensor_v2(storage(key, cls, numel), offset, size, stride, False, OrderedDict()). */
function view(key: string, cls: string, numel: number, offset: number, size: number[], stride: number[]): PickleNode {
  return {
    t: 'reduce',
    func: { t: 'global', module: 'torch._utils', name: '_rebuild_tensor_v2' },
    args: tup({ t: 'persid', pid: tup(str('storage'), { t: 'global', module: 'torch', name: cls }, str(key), str('cpu'), int(numel)) }, int(offset), tup(...size.map(int)), tup(...stride.map(int)), { t: 'bool', v: false }, { t: 'odict', items: [] }),
  };
}
const stateDict = (items: [string, PickleNode][]) => pickle({ t: 'odict', items: items.map(([k, v]) => [str(k), v] as [PickleNode, PickleNode]) });
const floats = (n: number) => new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer);

describe('reading torch checkpoints', () => {
  test('the golden BERT pytorch_model.bin and its float32 heads', () => {
    const { tensors, metadata } = readTorchCheckpoint(golden('encoder-bert-bin', 'model', 'pytorch_model.bin'));
    expect(tensors.size).toBe(39);
    expect([...tensors.keys()].slice(0, 2)).toEqual(['embeddings.word_embeddings.weight', 'embeddings.position_embeddings.weight']);
    expect(tensors.get('embeddings.word_embeddings.weight')?.shape).toEqual([200, 24]);
    expect(tensors.get('encoder.layer.1.intermediate.dense.weight')?.shape).toEqual([48, 24]);
    expect(metadata?.['']).toEqual({ version: 1 });
    expect(Object.keys(metadata ?? {})).toEqual(['', 'embeddings', 'encoder', 'pooler']);
    const heads = readTorchStateDict(golden('encoder-bert-bin', 'model', 'colbert_linear.pt'));
    expect([...heads.keys()]).toEqual(['weight', 'bias']);
    expect(heads.get('weight')?.dtype).toBe('float32');
  });

  test('float16 heads widen exactly (every value is a half)', () => {
    const heads = readTorchStateDict(golden('encoder-xlmr-safetensors', 'model', 'colbert_linear.pt'));
    const w = heads.get('weight') as HostTensor;
    expect(w.shape).toEqual([32, 32]);
    expect(w.data.every((v) => halfToFloat(floatToHalf(v)) === v)).toBe(true);
    expect(new Set(w.data).size).toBeGreaterThan(500);
  });

  test('re-writing a golden checkpoint reproduces torch.save byte for byte', () => {
    for (const [dir, file, floatDtype] of [
      ['encoder-bert-bin', 'pytorch_model.bin', 'F32'], ['encoder-bert-bin', 'colbert_linear.pt', 'F32'],
      ['encoder-bert-bin', 'sparse_linear.pt', 'F32'], ['encoder-xlmr-safetensors', 'colbert_linear.pt', 'F16'],
    ] as const) {
      const src = golden(dir, 'model', file);
      const { tensors, metadata } = readTorchCheckpoint(src);
      const out = path.join(tmp, `${dir}-${file}`);
      writeTorchStateDict(out, tensors, { metadata, floatDtype, byteorder: false, archiveName: file.replace(/\..*$/, '') });
      expect({ file, same: fs.readFileSync(out).equals(fs.readFileSync(src)) }).toEqual({ file, same: true });
    }
  });

  test('write → read round-trips float32, float16, bfloat16 and int tensors', () => {
    const t: TensorMap = new Map([['weight', f32([7, 5], 3, true)], ['bias', f32([7], 4, true)], ['scalar', f32([], 5, true)], ['empty', f32([0, 3])],
      ['ids', { dtype: 'int32', shape: [4], data: Int32Array.from([0, -1, 2 ** 31 - 1, -(2 ** 31)]) }]]);
    for (const floatDtype of ['F32', 'F16', 'BF16'] as const) {
      const file = path.join(tmp, `rt-${floatDtype}.pt`);
      writeTorchStateDict(file, t, { floatDtype });
      const back = readTorchStateDict(file);
      if (floatDtype === 'BF16') {
        const w = back.get('weight') as HostTensor;
        const want = (t.get('weight') as HostTensor).data;
        expect(w.data.every((v, i) => Math.abs(v - want[i]) <= Math.abs(want[i]) / 128)).toBe(true);
      } else {
        expectSameTensors(back, t);
      }
      expect([...back.keys()]).toEqual(['weight', 'bias', 'scalar', 'empty', 'ids']);
    }
  });

  test('strided views and storage offsets are materialised like torch', () => {
    const half = new Uint8Array(Uint16Array.from({ length: 12 }, (_, i) => floatToHalf(i / 4)).buffer);
    const file = craft('views.pt', stateDict([
      ['t', view('0', 'FloatStorage', 24, 1, [3, 2], [1, 6])], // a transposed slice
      ['bcast', view('0', 'FloatStorage', 24, 4, [2, 3], [0, 2])], // expand + step
      ['scalar', view('0', 'FloatStorage', 24, 5, [], [])],
      ['rows', view('0', 'FloatStorage', 24, 12, [2, 6], [6, 1])], // contiguous at an offset, same storage
      ['h', view('1', 'HalfStorage', 12, 0, [2, 3], [1, 4])],
      ['cube', view('0', 'FloatStorage', 24, 0, [2, 2, 3], [1, 12, 4])],
    ]), { 0: floats(24), 1: half });
    const m = readTorchStateDict(file);
    expect(Array.from(m.get('t')!.data)).toEqual([1, 7, 2, 8, 3, 9]);
    expect(Array.from(m.get('bcast')!.data)).toEqual([4, 6, 8, 4, 6, 8]);
    expect(m.get('scalar')).toEqual({ dtype: 'float32', shape: [], data: Float32Array.from([5]) });
    expect(Array.from(m.get('rows')!.data)).toEqual([12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]);
    expect(Array.from(m.get('h')!.data)).toEqual([0, 1, 2, 0.25, 1.25, 2.25]);
    expect(Array.from(m.get('cube')!.data)).toEqual([0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21]);
  });

  test('_rebuild_parameter and int64 storages', () => {
    const longs = new Uint8Array(BigInt64Array.from([5n, -7n]).buffer);
    const param: PickleNode = { t: 'reduce', func: { t: 'global', module: 'torch._utils', name: '_rebuild_parameter' }, args: tup(view('0', 'FloatStorage', 3, 0, [3], [1]), { t: 'bool', v: true }, { t: 'odict', items: [] }) };
    const m = readTorchStateDict(craft('param.pt', stateDict([['p', param], ['ids', view('1', 'LongStorage', 2, 0, [2], [1])]]), { 0: floats(3), 1: longs }));
    expect(Array.from(m.get('p')!.data)).toEqual([0, 1, 2]);
    expect(m.get('ids')).toEqual({ dtype: 'int32', shape: [2], data: Int32Array.from([5, -7]) });
  });
});

describe('refusing bad torch checkpoints', () => {
  test('a refused global names the file and the global', () => {
    const pkl = Buffer.concat([Buffer.from('\x80\x02cposix\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.', 'latin1')]);
    const file = craft('colbert_linear.pt', pkl);
    expect(message(() => readTorchStateDict(file))).toBe(`${file}: refused pickle global 'posix.system' (not in the allow-list)`);
  });
  test('views beyond their storage, size mismatches, missing records', () => {
    const f1 = craft('over.pt', stateDict([['w', view('0', 'FloatStorage', 24, 20, [2, 3], [3, 1])]]), { 0: floats(24) });
    expect(message(() => readTorchStateDict(f1))).toBe(`${f1}: tensor of size [2,3], stride [3,1], offset 20 reaches element 26 of storage '0' (24 elements)`);
    const f2 = craft('short.pt', stateDict([['w', view('0', 'FloatStorage', 24, 0, [24], [1])]]), { 0: floats(20) });
    expect(message(() => readTorchStateDict(f2))).toBe(`${f2}: storage '0' holds 80 bytes but declares 24 × F32 (96 bytes)`);
    const f3 = craft('missing.pt', stateDict([['w', view('7', 'FloatStorage', 4, 0, [4], [1])]]));
    expect(message(() => readTorchStateDict(f3))).toBe(`${f3}: storage '7' has no record missing/data/7`);
    const f4 = craft('rank.pt', stateDict([['w', view('0', 'FloatStorage', 4, 0, [4], [1, 1])]]), { 0: floats(4) });
    expect(message(() => readTorchStateDict(f4))).toBe(`${f4}: tensor size [4] and stride [1,1] differ in rank`);
  });
  test('storage types outside the allow-list and non-state-dict contents', () => {
    const f1 = craft('cplx.pt', stateDict([['w', view('0', 'ComplexFloatStorage', 1, 0, [1], [1])]]), { 0: floats(2) });
    expect(message(() => readTorchStateDict(f1))).toBe(`${f1}: refused pickle global 'torch.ComplexFloatStorage' (not in the allow-list)`);
    const f2 = craft('nested.pt', stateDict([['state_dict', { t: 'odict', items: [] }]]));
    expect(message(() => readTorchStateDict(f2))).toBe(`${f2}: entry "state_dict" is an OrderedDict; expected a state dict of tensors`);
    const f3 = craft('list.pt', pickle(tup(int(1))));
    expect(message(() => readTorchStateDict(f3))).toBe(`${f3}: holds a tuple, not a state dict`);
  });
  test('many views of one storage (a view bomb) are refused before materialising', () => {
    const items: [string, PickleNode][] = Array.from({ length: 50 }, (_, i) => [`w${i}`, view('0', 'FloatStorage', 2 ** 20, 0, [2 ** 20], [1])]);
    const file = craft('bomb.pt', stateDict(items), { 0: new Uint8Array(4 * 2 ** 20) });
    expect(message(() => readTorchStateDict(file))).toBe(`${file}: refused: its tensors view 209715200 bytes out of 4194304 stored bytes (more than 4x; a decompression bomb?)`);
  });
  test('legacy (non-zip) files and other files', () => {
    const legacy = path.join(tmp, 'legacy.bin');
    fs.writeFileSync(legacy, Buffer.from('800a8a0a6ca8f9209c46fcfc6c5019', 'hex'));
    expect(message(() => readTorchStateDict(legacy))).toBe(`${legacy}: legacy (pre-1.6, non-zip) PyTorch format is not supported; re-save it with torch >= 1.6: torch.save(torch.load(path), path)`);
    const other = path.join(tmp, 'other.bin');
    fs.writeFileSync(other, '{"not": "torch"}');
    expect(message(() => readTorchStateDict(other))).toBe(`${other}: not a PyTorch checkpoint (expected a zip archive as written by torch.save)`);
    expect(message(() => readTorchStateDict(path.join(tmp, 'absent.pt')))).toBe(`${path.join(tmp, 'absent.pt')}: cannot open (ENOENT)`);
  });
  test('a zip without <archive>/data.pkl', () => {
    const file = path.join(tmp, 'nopkl.pt');
    const fd = fs.openSync(file, 'w');
    writeZip(fd, [{ name: 'x/other', size: 1, data: () => [Buffer.from('a')] }]);
    fs.closeSync(fd);
    expect(message(() => readTorchStateDict(file))).toBe(`${file}: not a PyTorch checkpoint (no <archive>/data.pkl records)`);
  });
  test('big-endian checkpoints are refused', () => {
    const entries = torchZipEntries(new Map([['w', f32([2])]]), 'be');
    const i = entries.findIndex((e) => e.name === 'be/byteorder');
    entries[i] = { name: 'be/byteorder', size: 3, data: () => [Buffer.from('big')] };
    const file = path.join(tmp, 'be.pt');
    const fd = fs.openSync(file, 'w');
    writeZip(fd, entries);
    fs.closeSync(fd);
    expect(message(() => readTorchStateDict(file))).toBe(`${file}: byte order 'big' is not supported (only little-endian checkpoints)`);
  });
});
