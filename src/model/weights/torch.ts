/**
 * PyTorch's zip checkpoint format (torch.save since 1.6): `<archive>/data.pkl` is a protocol-2 pickle of the
 * state dict whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls
 * and whose storages are persistent ids ('storage', torch.FloatStorage, key, location, numel) naming the raw
 * little-endian entries `<archive>/data/<key>`; `<archive>/version` holds the format version, newer torch adds
 * `<archive>/byteorder`. Read: the pickle goes through the allow-listed unpickler (never executing anything),
 * then each tensor is read by position from its storage entry (strides and offsets honoured). Write:
 * byte-identical to torch.save of an OrderedDict with `_metadata`, so `torch.load(..., weights_only=True)`
 * (FlagEmbedding's loader) reads our `colbert_linear.pt` / `sparse_linear.pt` unchanged.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../../util/errors';
import { BYTES_PER_ELEMENT, decodeTensor, encodeTensor, StoredDType, WritableDType } from './dtype';
import { openForRead, readAt, writeFileStreamAtomic } from './fileio';
import { AllowedGlobal, describePy, pickle, PickleNode, PyDict, PyValue, unpickle } from './pickle';
import { HostTensor, TensorMap } from './types';
import { checkReadable, closeZip, openZip, readZipEntry, readZipRange, writeZip, ZipEntry, ZipReader, ZipWriteEntry } from './zip';

/** torch storage classes ↔ stored dtypes. */
const STORAGE_DTYPES: Record<string, StoredDType> = {
  FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16', DoubleStorage: 'F64', LongStorage: 'I64',
  IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};
const STORAGE_CLASS: Partial<Record<StoredDType, string>> = Object.fromEntries(Object.entries(STORAGE_DTYPES).map(([k, v]) => [v, k]));

interface Storage { dtype: StoredDType; key: string; numel: number; entry: ZipEntry }
interface TensorRef { storage: Storage; offset: number; shape: number[]; stride: number[] }

/** Extra materialised bytes allowed beyond the storages (views may alias one storage, e.g. tied weights). */
const VIEW_FACTOR = 4;
const VIEW_SLACK = 16 * 1024 * 1024;
const MAX_PICKLE = 256 * 1024 * 1024;

const opaque = <T>(type: string, value: T): PyValue => ({ kind: 'opaque', type, value });
function asOpaque<T>(v: PyValue, type: string): T | undefined {
  return typeof v === 'object' && v !== null && v.kind === 'opaque' && v.type === type ? (v.value as T) : undefined;
}

export interface TorchCheckpoint {
  tensors: TensorMap;
  /** The state dict's `_metadata` ({module prefix: {version: n}}), when it has one of that shape. */
  metadata?: Record<string, Record<string, number>>;
}

/** Reads a torch zip checkpoint holding a state dict into host tensors (names as in the state dict). */
export function readTorchStateDict(file: string): TensorMap {
  return readTorchCheckpoint(file).tensors;
}

/** readTorchStateDict, plus the state dict's `_metadata`. */
export function readTorchCheckpoint(file: string): TorchCheckpoint {
  const { fd, size } = openForRead(file);
  try {
    const head = readAt(fd, 0, Math.min(size, 512), file);
    if (head.length < 4 || head.readUInt32LE(0) !== 0x04034b50) {
      const legacy = head[0] === 0x80 || head.toString('latin1', 257, 262) === 'ustar';
      throw new UserError(legacy
        ? `${file}: legacy (pre-1.6, non-zip) PyTorch format is not supported; re-save it with torch >= 1.6: torch.save(torch.load(path), path)`
        : `${file}: not a PyTorch checkpoint (expected a zip archive as written by torch.save)`);
    }
    const z = openZip(file, fd, size);
    try {
      return readFromZip(file, z);
    } finally {
      closeZip(z);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function readFromZip(file: string, z: ZipReader): TorchCheckpoint {
  const { prefix, pkl } = findPickle(file, z);
  const storages = new Map<string, Storage>();
  const persistentLoad = (pid: PyValue): PyValue => loadStorage(file, z, prefix, storages, pid);
  const globals = torchGlobals(file);
  const root = unpickle(readZipEntry(z, pkl), { where: file, globals, persistentLoad });
  if (typeof root !== 'object' || root === null || root.kind !== 'dict') throw new UserError(`${file}: holds ${describePy(root)}, not a state dict`);
  const refs = tensorRefs(file, root);
  refuseViewBomb(file, storages, refs);
  const tensors: TensorMap = new Map();
  for (const [name, t] of refs) tensors.set(name, materialize(file, z, name, t));
  return { tensors, metadata: metadataOf(root.attrs.get('_metadata')) };
}

/**
 * The archive's one `<archive>/data.pkl` record and its folder prefix, after checking what must hold
 * before unpickling: a little-endian byte order (when recorded), a readable entry, a sane size.
 */
function findPickle(file: string, z: ZipReader): { prefix: string; pkl: ZipEntry } {
  const pkls = [...z.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) throw new UserError(`${file}: not a PyTorch checkpoint (${pkls.length ? 'several' : 'no'} <archive>/data.pkl records)`);
  const prefix = pkls[0].slice(0, -'data.pkl'.length);
  const order = z.entries.get(prefix + 'byteorder');
  if (order) {
    const bo = readZipEntry(z, order).toString('latin1');
    if (bo !== 'little') throw new UserError(`${file}: byte order '${bo}' is not supported (only little-endian checkpoints)`);
  }
  const pkl = z.entries.get(pkls[0]) as ZipEntry;
  checkReadable(z, pkl);
  if (pkl.size > MAX_PICKLE) throw new UserError(`${file}: data.pkl of ${pkl.size} bytes is too large`);
  return { prefix, pkl };
}

/**
 * The unpickler's persistent_load: a ('storage', torch.<T>Storage, key, location, numel) id becomes its
 * `data/<key>` record, checked against the declared size. Tensors sharing a storage get the same one;
 * a key declared twice must agree.
 */
function loadStorage(file: string, z: ZipReader, prefix: string, storages: Map<string, Storage>, pid: PyValue): PyValue {
  const items = typeof pid === 'object' && pid !== null && pid.kind === 'tuple' ? pid.items : null;
  if (!items || items.length !== 5 || items[0] !== 'storage') throw new UserError(`${file}: unsupported persistent id ${describePy(pid)} (expected ('storage', type, key, location, numel))`);
  const [, cls, key, , numel] = items;
  const dtype = typeof cls === 'object' && cls !== null && cls.kind === 'global' && cls.module === 'torch' ? STORAGE_DTYPES[cls.name] : undefined;
  if (!dtype) throw new UserError(`${file}: unsupported storage type ${describePy(cls)}`);
  if (typeof key !== 'string' || typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) {
    throw new UserError(`${file}: malformed storage id (key ${describePy(key)}, numel ${describePy(numel)})`);
  }
  const known = storages.get(key);
  if (known) {
    if (known.dtype !== dtype || known.numel !== numel) throw new UserError(`${file}: storage '${key}' is declared twice with different types or sizes`);
    return opaque('storage', known);
  }
  const entry = z.entries.get(`${prefix}data/${key}`);
  if (!entry) throw new UserError(`${file}: storage '${key}' has no record ${prefix}data/${key}`);
  if (entry.size !== numel * BYTES_PER_ELEMENT[dtype]) {
    throw new UserError(`${file}: storage '${key}' holds ${entry.size} bytes but declares ${numel} × ${dtype} (${numel * BYTES_PER_ELEMENT[dtype]} bytes)`);
  }
  const s: Storage = { dtype, key, numel, entry };
  storages.set(key, s);
  return opaque('storage', s);
}

/** The only globals a state dict may name; the unpickler refuses every other one, so loading runs no code. */
function torchGlobals(file: string): Map<string, AllowedGlobal> {
  const parameter: AllowedGlobal = { call: (args) => rebuildParameter(file, args) };
  return new Map<string, AllowedGlobal>([
    ['collections.OrderedDict', { call: (args) => orderedDict(file, args) }],
    ['torch._utils._rebuild_tensor_v2', { call: (args) => rebuildTensor(file, args) }],
    ['torch._utils._rebuild_parameter', parameter],
    ['torch._utils._rebuild_parameter_with_state', parameter],
    ...Object.keys(STORAGE_DTYPES).map((c) => [`torch.${c}`, {}] as [string, AllowedGlobal]),
  ]);
}

/** A tensor size or stride: a tuple of non-negative integers. */
function intTuple(file: string, v: PyValue, what: string): number[] {
  const items = typeof v === 'object' && v !== null && v.kind === 'tuple' ? v.items : null;
  if (!items || !items.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
    throw new UserError(`${file}: tensor ${what} must be a tuple of non-negative integers, got ${describePy(v)}`);
  }
  return items as number[];
}

/** _rebuild_tensor_v2(storage, offset, size, stride, ...) → a reference, read later; every element it views must lie inside its storage. */
function rebuildTensor(file: string, args: PyValue[]): PyValue {
  if (args.length < 6 || args.length > 7) throw new UserError(`${file}: _rebuild_tensor_v2 takes 6 or 7 arguments, got ${args.length}`);
  const storage = asOpaque<Storage>(args[0], 'storage');
  if (!storage) throw new UserError(`${file}: _rebuild_tensor_v2 of ${describePy(args[0])} (expected a storage)`);
  const offset = args[1];
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) throw new UserError(`${file}: invalid storage offset ${String(offset)}`);
  const shape = intTuple(file, args[2], 'size');
  const stride = intTuple(file, args[3], 'stride');
  if (shape.length !== stride.length) throw new UserError(`${file}: tensor size [${shape}] and stride [${stride}] differ in rank`);
  const numel = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(numel)) throw new UserError(`${file}: tensor size [${shape}] is too large`);
  const extent = numel === 0 ? 0 : offset + shape.reduce((a, d, i) => a + (d - 1) * stride[i], 0) + 1;
  if (extent > storage.numel) {
    throw new UserError(`${file}: tensor of size [${shape}], stride [${stride}], offset ${offset} reaches element ${extent} of storage '${storage.key}' (${storage.numel} elements)`);
  }
  return opaque<TensorRef>('tensor', { storage, offset, shape, stride });
}

/** nn.Parameter pickles as _rebuild_parameter(tensor, requires_grad, hooks[, state]): the tensor is all we keep. */
function rebuildParameter(file: string, args: PyValue[]): PyValue {
  if (args.length < 3 || !asOpaque(args[0], 'tensor')) throw new UserError(`${file}: _rebuild_parameter of ${args.length ? describePy(args[0]) : 'nothing'} (expected a tensor)`);
  return args[0];
}

/** OrderedDict() or OrderedDict([(key, value), ...]); state dicts usually fill theirs by SETITEMS instead. */
function orderedDict(file: string, args: PyValue[]): PyValue {
  const d: PyDict = { kind: 'dict', ordered: true, map: new Map(), attrs: new Map() };
  if (args.length === 1 && typeof args[0] === 'object' && args[0] !== null && args[0].kind === 'list') {
    for (const pair of args[0].items) {
      const kv = typeof pair === 'object' && pair !== null && pair.kind === 'tuple' && pair.items.length === 2 ? pair.items : null;
      if (!kv || (typeof kv[0] === 'object' && kv[0] !== null)) throw new UserError(`${file}: OrderedDict items must be (key, value) pairs`);
      d.map.set(kv[0] as string, kv[1]);
    }
  } else if (args.length !== 0) {
    throw new UserError(`${file}: OrderedDict called with unsupported arguments`);
  }
  return d;
}

/** The state dict's (name, tensor reference) pairs in order; anything but string → tensor is refused. */
function tensorRefs(file: string, root: PyDict): [string, TensorRef][] {
  const refs: [string, TensorRef][] = [];
  for (const [k, v] of root.map) {
    const t = asOpaque<TensorRef>(v, 'tensor');
    if (typeof k !== 'string' || !t) throw new UserError(`${file}: entry ${JSON.stringify(String(k))} is ${describePy(v)}; expected a state dict of tensors`);
    refs.push([k, t]);
  }
  return refs;
}

/** Views can alias one storage many times over; refuse before materialising far more bytes than the file holds. */
function refuseViewBomb(file: string, storages: Map<string, Storage>, refs: [string, TensorRef][]): void {
  let stored = 0;
  for (const s of storages.values()) stored += s.entry.size;
  let wanted = 0;
  for (const [, t] of refs) wanted += t.shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[t.storage.dtype];
  if (wanted > VIEW_FACTOR * stored + VIEW_SLACK) {
    throw new UserError(`${file}: refused: its tensors view ${wanted} bytes out of ${stored} stored bytes (more than ${VIEW_FACTOR}x; a decompression bomb?)`);
  }
}

function metadataOf(v: PyValue | undefined): Record<string, Record<string, number>> | undefined {
  if (typeof v !== 'object' || v === null || v.kind !== 'dict') return undefined;
  const out: Record<string, Record<string, number>> = {};
  for (const [prefix, m] of v.map) {
    if (typeof prefix !== 'string' || typeof m !== 'object' || m === null || m.kind !== 'dict') return undefined;
    const entry: Record<string, number> = {};
    for (const [k, x] of m.map) {
      if (typeof k !== 'string' || typeof x !== 'number') return undefined;
      entry[k] = x;
    }
    out[prefix] = entry;
  }
  return out;
}

/** Reads one tensor's elements from its storage: one positional read, then a gather for strided views. */
function materialize(file: string, z: ZipReader, name: string, t: TensorRef): HostTensor {
  const { storage: s, offset, shape, stride } = t;
  const es = BYTES_PER_ELEMENT[s.dtype];
  const numel = shape.reduce((a, b) => a * b, 1);
  const where = `${file}: tensor '${name}'`;
  if (numel === 0) return decodeTensor(new Uint8Array(0), s.dtype, shape, where);
  let expect = 1;
  let contiguous = true;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) contiguous = false;
    expect *= shape[i];
  }
  if (contiguous) return decodeTensor(readZipRange(z, s.entry, offset * es, numel * es), s.dtype, shape, where);
  const span = shape.reduce((a, d, i) => a + (d - 1) * stride[i], 0) + 1;
  const src = readZipRange(z, s.entry, offset * es, span * es);
  const dst = Buffer.allocUnsafe(numel * es);
  const nd = shape.length;
  const inner = shape[nd - 1];
  const innerStride = stride[nd - 1];
  const idx = new Array<number>(nd).fill(0);
  let d = 0;
  for (;;) {
    let base = 0;
    for (let i = 0; i < nd - 1; i++) base += idx[i] * stride[i];
    if (innerStride === 1) {
      src.copy(dst, d, base * es, (base + inner) * es);
      d += inner * es;
    } else {
      for (let j = 0; j < inner; j++, d += es) src.copy(dst, d, (base + j * innerStride) * es, (base + j * innerStride + 1) * es);
    }
    let i = nd - 2;
    while (i >= 0 && ++idx[i] === shape[i]) idx[i--] = 0;
    if (i < 0) break;
  }
  return decodeTensor(dst, s.dtype, shape, where);
}

export interface TorchWriteOptions {
  /** Stored type of float32 tensors (default F32). */
  floatDtype?: 'F32' | 'F16' | 'BF16';
  /** Stored type of int32 tensors (default I64, torch's index type). */
  intDtype?: 'I32' | 'I64';
  /** The state dict's `_metadata` (default {'': {version: 1}}, as a bare nn.Linear's state_dict()). */
  metadata?: Record<string, Record<string, number>>;
  /** Write the `byteorder` record torch >= 2.1 writes (default true). */
  byteorder?: boolean;
  /** The archive's folder name (default: the file name without extension, as torch.save uses). */
  archiveName?: string;
  forceZip64?: boolean;
}

/** Builds the zip entries torch.save writes for `tensors` (a state dict in map order). */
export function torchZipEntries(tensors: TensorMap, archive: string, o: TorchWriteOptions = {}): ZipWriteEntry[] {
  const items: [PickleNode, PickleNode][] = [];
  const records: ZipWriteEntry[] = [];
  let key = 0;
  for (const [name, t] of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== numel) throw new Error(`tensor '${name}': ${t.data.length} values for shape [${t.shape}]`);
    const dtype: WritableDType = t.dtype === 'float32' ? o.floatDtype ?? 'F32' : o.intDtype ?? 'I64';
    const stride = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    const k = String(key++);
    const int = (v: number): PickleNode => ({ t: 'int', v });
    const pid: PickleNode = {
      t: 'tuple',
      items: [{ t: 'str', v: 'storage' }, { t: 'global', module: 'torch', name: STORAGE_CLASS[dtype] as string }, { t: 'str', v: k }, { t: 'str', v: 'cpu' }, int(numel)],
    };
    items.push([{ t: 'str', v: name }, {
      t: 'reduce',
      func: { t: 'global', module: 'torch._utils', name: '_rebuild_tensor_v2' },
      args: { t: 'tuple', items: [{ t: 'persid', pid }, int(0), { t: 'tuple', items: t.shape.map(int) }, { t: 'tuple', items: stride.map(int) }, { t: 'bool', v: false }, { t: 'odict', items: [] }] },
    }]);
    records.push({ name: `${archive}/data/${k}`, size: numel * BYTES_PER_ELEMENT[dtype], data: () => [encodeTensor(t, dtype)] });
  }
  const metadata = o.metadata ?? { '': { version: 1 } };
  const meta: PickleNode = {
    t: 'odict',
    items: Object.entries(metadata).map(([prefix, m]) => [{ t: 'str', v: prefix }, { t: 'dict', items: Object.entries(m).map(([k, v]) => [{ t: 'str', v: k }, { t: 'int', v }] as [PickleNode, PickleNode]) }]),
  };
  const pkl = pickle({ t: 'odict', items, attrs: [['_metadata', meta]] });
  const bytes = (name: string, b: Buffer): ZipWriteEntry => ({ name, size: b.length, data: () => [b] });
  records.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)); // torch writes data/<key> in sorted key order
  return [
    bytes(`${archive}/data.pkl`, pkl),
    ...(o.byteorder === false ? [] : [bytes(`${archive}/byteorder`, Buffer.from('little'))]),
    ...records,
    bytes(`${archive}/version`, Buffer.from('3\n')),
  ];
}

/** Writes `tensors` as torch.save(OrderedDict) would, atomically (temp file + rename). */
export function writeTorchStateDict(file: string, tensors: TensorMap, o: TorchWriteOptions = {}): void {
  const archive = o.archiveName ?? path.basename(file).replace(/\.[^.]*$/, '');
  const entries = torchZipEntries(tensors, archive, o);
  writeFileStreamAtomic(file, (fd) => writeZip(fd, entries, { forceZip64: o.forceZip64 }));
}
