/**
 * Python pickles, safely. The unpickler interprets the binary opcodes (protocols 2-5) against an explicit
 * allow-list: only data-building opcodes run, a global is resolved only if the caller allowed it, and only
 * allowed globals with a `call` may be REDUCE'd. Everything else (posix.system, builtins.eval, INST, OBJ,
 * NEWOBJ, EXT*, ...) is refused before anything is called, with one line naming the file and what was
 * refused. Nothing is ever executed: allowed callables are pure data constructors supplied by the caller.
 * The pickler writes the protocol-2 stream torch.save produces for a state dict, byte for byte
 * (Python's memo/BINPUT numbering, SETITEM batching, tuple opcodes).
 */
import { UserError } from '../../util/errors';

export interface PyTuple { kind: 'tuple'; items: PyValue[] }
export interface PyList { kind: 'list'; items: PyValue[] }
export interface PyDict { kind: 'dict'; ordered: boolean; map: Map<PyKey, PyValue>; attrs: Map<string, PyValue> }
export interface PyBytes { kind: 'bytes'; data: Uint8Array }
export interface PyGlobal { kind: 'global'; module: string; name: string }
/** Objects produced by the caller's allowed callables / persistent loads (storages, tensors, ...). */
export interface PyOpaque { kind: 'opaque'; type: string; value: unknown }
export type PyKey = string | number | bigint | boolean | null;
export type PyValue = PyKey | PyTuple | PyList | PyDict | PyBytes | PyGlobal | PyOpaque;

export interface AllowedGlobal {
  /** Present for callables REDUCE may apply; receives the argument tuple's items. */
  call?: (args: PyValue[]) => PyValue;
}

export interface UnpickleOptions {
  /** Names the data in errors (the file). */
  where: string;
  /** Allowed globals by 'module.name'. */
  globals: Map<string, AllowedGlobal>;
  /** Resolves BINPERSID ids; without it BINPERSID is refused. */
  persistentLoad?: (pid: PyValue) => PyValue;
}

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

type Slot = PyValue;

/** A short description of a value for error messages. */
export function describePy(v: PyValue): string {
  if (v === null) return 'None';
  if (typeof v === 'string') return 'a str';
  if (typeof v === 'number' || typeof v === 'bigint') return 'a number';
  if (typeof v === 'boolean') return 'a bool';
  if (v.kind === 'global') return `'${v.module}.${v.name}'`;
  if (v.kind === 'opaque') return `a ${v.type}`;
  if (v.kind === 'dict') return v.ordered ? 'an OrderedDict' : 'a dict';
  return `a ${v.kind}`;
}

const isKey = (v: PyValue): v is PyKey => v === null || typeof v !== 'object';

/** Interprets a pickle against the allow-list; returns the unpickled value. */
export function unpickle(data: Uint8Array, o: UnpickleOptions): PyValue {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: Slot[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let p = 0;
  let at = 0;
  let name = '';
  const fail = (msg: string): never => { throw new UserError(`${o.where}: ${msg}`); };
  const malformed = (why: string): never => fail(`malformed pickle (${name} at byte ${at}: ${why})`);
  const need = (n: number): number => {
    if (n < 0 || p + n > buf.length) fail(`truncated pickle (${name} at byte ${at} runs past the end)`);
    const s = p;
    p += n;
    return s;
  };
  const line = (): string => {
    const e = buf.indexOf(0x0a, p);
    if (e < 0) fail(`truncated pickle (${name} at byte ${at} runs past the end)`);
    const s = buf.toString('utf8', p, e);
    p = e + 1;
    return s;
  };
  const pop = (): PyValue => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) malformed('stack underflow');
    return stack.pop() as PyValue;
  };
  const top = (): PyValue => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) malformed('stack underflow');
    return stack[stack.length - 1] as PyValue;
  };
  const popMark = (): PyValue[] => {
    if (!marks.length) malformed('no MARK');
    const m = marks.pop() as number;
    return stack.splice(m) as PyValue[];
  };
  const resolve = (module: string, gname: string): PyGlobal => {
    const full = `${module}.${gname}`;
    if (!o.globals.has(full)) fail(`refused pickle global '${full}' (not in the allow-list)`);
    return { kind: 'global', module, name: gname };
  };
  const text = (n: number, enc: BufferEncoding): string => {
    const s = need(n);
    return buf.toString(enc, s, s + n);
  };
  const setItems = (d: PyValue, kv: PyValue[]) => {
    if (typeof d !== 'object' || d === null || d.kind !== 'dict') malformed(`cannot set items on ${describePy(d)}`);
    if (kv.length % 2) malformed('odd number of items');
    for (let i = 0; i < kv.length; i += 2) {
      const k = kv[i];
      if (!isKey(k)) malformed(`unsupported dict key ${describePy(k)}`);
      (d as PyDict).map.set(k as PyKey, kv[i + 1]);
    }
  };
  const u64 = (s: number): number => {
    const v = buf.readBigUInt64LE(s);
    if (v > BigInt(buf.length)) fail(`truncated pickle (${name} at byte ${at} runs past the end)`);
    return Number(v);
  };

  for (;;) {
    if (p >= buf.length) fail('truncated pickle (no STOP opcode)');
    at = p;
    const op = buf[p++];
    name = OPNAMES[op] ?? '';
    switch (op) {
      case 0x80: { // PROTO
        const v = buf[need(1)];
        if (v > 5) fail(`unsupported pickle protocol ${v}`);
        break;
      }
      case 0x95: need(8); break; // FRAME: a hint only
      case 0x2e: { // STOP
        const v = pop();
        return v;
      }
      case 0x28: marks.push(stack.length); break;
      case 0x30: pop(); break;
      case 0x31: popMark(); break;
      case 0x32: stack.push(top()); break;
      case 0x4e: stack.push(null); break;
      case 0x88: stack.push(true); break;
      case 0x89: stack.push(false); break;
      case 0x4a: stack.push(buf.readInt32LE(need(4))); break;
      case 0x4b: stack.push(buf[need(1)]); break;
      case 0x4d: stack.push(buf.readUInt16LE(need(2))); break;
      case 0x8a: case 0x8b: { // LONG1, LONG4: little-endian two's complement
        const n = op === 0x8a ? buf[need(1)] : buf.readInt32LE(need(4));
        if (n > 64) fail(`pickle integer of ${n} bytes at byte ${at} is out of range`);
        const s = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[s + i]);
        if (n && buf[s + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: stack.push(buf.readDoubleBE(need(8))); break;
      case 0x58: { const n = buf.readUInt32LE(need(4)); stack.push(text(n, 'utf8')); break; }
      case 0x8c: { const n = buf[need(1)]; stack.push(text(n, 'utf8')); break; }
      case 0x8d: { const n = u64(need(8)); stack.push(text(n, 'utf8')); break; }
      case 0x54: { const n = buf.readInt32LE(need(4)); stack.push(text(n, 'latin1')); break; }
      case 0x55: { const n = buf[need(1)]; stack.push(text(n, 'latin1')); break; }
      case 0x42: case 0x43: case 0x8e: {
        const n = op === 0x42 ? buf.readUInt32LE(need(4)) : op === 0x43 ? buf[need(1)] : u64(need(8));
        const s = need(n);
        stack.push({ kind: 'bytes', data: Uint8Array.prototype.slice.call(buf, s, s + n) });
        break;
      }
      case 0x29: stack.push({ kind: 'tuple', items: [] }); break;
      case 0x74: stack.push({ kind: 'tuple', items: popMark() }); break;
      case 0x85: case 0x86: case 0x87: {
        const n = op - 0x84;
        const items: PyValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push({ kind: 'tuple', items });
        break;
      }
      case 0x5d: stack.push({ kind: 'list', items: [] }); break;
      case 0x6c: stack.push({ kind: 'list', items: popMark() }); break;
      case 0x61: case 0x65: {
        const items = op === 0x61 ? [pop()] : popMark();
        const l = top();
        if (typeof l !== 'object' || l === null || l.kind !== 'list') malformed(`cannot append to ${describePy(l)}`);
        (l as PyList).items.push(...items);
        break;
      }
      case 0x7d: stack.push({ kind: 'dict', ordered: false, map: new Map(), attrs: new Map() }); break;
      case 0x64: {
        const d: PyDict = { kind: 'dict', ordered: false, map: new Map(), attrs: new Map() };
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; }
      case 0x75: { const kv = popMark(); setItems(top(), kv); break; }
      case 0x71: memo.set(buf[need(1)], top()); break;
      case 0x72: memo.set(buf.readUInt32LE(need(4)), top()); break;
      case 0x94: memo.set(memo.size, top()); break;
      case 0x68: case 0x6a: {
        const i = op === 0x68 ? buf[need(1)] : buf.readUInt32LE(need(4));
        if (!memo.has(i)) malformed(`memo key ${i} is not set`);
        stack.push(memo.get(i) as PyValue);
        break;
      }
      case 0x63: { // GLOBAL: "module\nname\n"
        const module = line();
        const gname = line();
        stack.push(resolve(module, gname));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const gname = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof gname !== 'string') malformed('module and name must be strings');
        stack.push(resolve(module as string, gname as string));
        break;
      }
      case 0x52: { // REDUCE: callable(*args), only for allowed callables
        const args = pop();
        const fn = pop();
        const g = typeof fn === 'object' && fn !== null && fn.kind === 'global' ? o.globals.get(`${fn.module}.${fn.name}`) : undefined;
        if (!g?.call) fail(`refused pickle REDUCE of ${describePy(fn)} (not an allowed callable)`);
        if (typeof args !== 'object' || args === null || args.kind !== 'tuple') malformed('REDUCE arguments are not a tuple');
        stack.push((g as AllowedGlobal).call!((args as PyTuple).items));
        break;
      }
      case 0x62: { // BUILD: only attribute dicts onto dicts (OrderedDict._metadata)
        const state = pop();
        const obj = top();
        if (typeof obj !== 'object' || obj === null || obj.kind !== 'dict') fail(`refused pickle BUILD of ${describePy(obj)} (only dict attributes are allowed)`);
        if (typeof state !== 'object' || state === null || state.kind !== 'dict') fail(`refused pickle BUILD with ${describePy(state)} as state (only a dict of attributes is allowed)`);
        for (const [k, v] of (state as PyDict).map) {
          if (typeof k !== 'string') malformed('attribute names must be strings');
          (obj as PyDict).attrs.set(k as string, v);
        }
        break;
      }
      case 0x51: { // BINPERSID
        if (!o.persistentLoad) fail(`refused pickle opcode BINPERSID at byte ${at} (no persistent ids expected)`);
        stack.push(o.persistentLoad!(pop()));
        break;
      }
      case 0x69: { // INST "module\nname\n": instantiates a class; refused, naming it
        const module = line();
        const gname = line();
        fail(`refused pickle opcode INST for '${module}.${gname}' (not in the allow-list)`);
        break;
      }
      case 0x6f: { // OBJ: class is the first item after the mark
        const m = marks.length ? marks[marks.length - 1] : -1;
        const cls = m >= 0 && m < stack.length ? stack[m] : undefined;
        const named = typeof cls === 'object' && cls !== null && cls.kind === 'global' ? ` for '${cls.module}.${cls.name}'` : '';
        fail(`refused pickle opcode OBJ${named} (not in the allow-list)`);
        break;
      }
      default:
        if (name) fail(`refused pickle opcode ${name} at byte ${at} (not in the allow-list)`);
        fail(`unknown pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pickler: the state-dict subset, emitting exactly what CPython's protocol-2 Pickler emits.

/** A value to pickle: a tree of these writes the same bytes as the equivalent Python object. */
export type PickleNode =
  | { t: 'int'; v: number }
  | { t: 'bool'; v: boolean }
  | { t: 'none' }
  | { t: 'str'; v: string }
  | { t: 'tuple'; items: PickleNode[] }
  | { t: 'dict'; items: [PickleNode, PickleNode][] }
  /** collections.OrderedDict; `attrs` (e.g. _metadata) are written with BUILD, as vars(od) would be. */
  | { t: 'odict'; items: [PickleNode, PickleNode][]; attrs?: [string, PickleNode][] }
  | { t: 'global'; module: string; name: string }
  /** func(*args) through REDUCE; the result is memoized as a new object. */
  | { t: 'reduce'; func: PickleNode; args: PickleNode }
  /** A persistent id (BINPERSID) whose tuple is `pid`. */
  | { t: 'persid'; pid: PickleNode };

/** Pickles `root` with protocol 2. Strings and globals are memoized by value (as interned Python objects are). */
export function pickle(root: PickleNode): Buffer {
  const out: Buffer[] = [Buffer.from([0x80, 2])];
  const memo = new Map<string, number>();
  let next = 0;
  const bytes = (...b: number[]) => out.push(Buffer.from(b));
  const memoize = () => {
    const i = next++;
    if (i < 256) bytes(0x71, i);
    else { const b = Buffer.alloc(5); b[0] = 0x72; b.writeUInt32LE(i, 1); out.push(b); }
  };
  const get = (i: number) => {
    if (i < 256) bytes(0x68, i);
    else { const b = Buffer.alloc(5); b[0] = 0x6a; b.writeUInt32LE(i, 1); out.push(b); }
  };
  const once = (key: string, write: () => void) => {
    const i = memo.get(key);
    if (i !== undefined) return get(i);
    write();
    memo.set(key, next);
    memoize();
  };
  const int = (v: number) => {
    if (!Number.isSafeInteger(v)) throw new Error(`cannot pickle ${v} as an int`);
    if (v >= 0 && v <= 0xff) bytes(0x4b, v);
    else if (v >= 0 && v <= 0xffff) { const b = Buffer.alloc(3); b[0] = 0x4d; b.writeUInt16LE(v, 1); out.push(b); }
    else if (v >= -0x80000000 && v <= 0x7fffffff) { const b = Buffer.alloc(5); b[0] = 0x4a; b.writeInt32LE(v, 1); out.push(b); }
    else { // LONG1: minimal little-endian two's complement
      let x = BigInt(v);
      const le: number[] = [];
      for (;;) {
        le.push(Number(x & 0xffn));
        x >>= 8n;
        const sign = le[le.length - 1] & 0x80;
        if ((x === 0n && !sign) || (x === -1n && sign)) break;
      }
      bytes(0x8a, le.length, ...le);
    }
  };
  const setItems = (items: [PickleNode, PickleNode][]) => {
    for (let i = 0; i < items.length || i === 0; i += 1000) {
      const batch = items.slice(i, i + 1000);
      if (batch.length > 1) {
        bytes(0x28);
        for (const [k, v] of batch) { save(k); save(v); }
        bytes(0x75);
      } else if (batch.length === 1) {
        save(batch[0][0]);
        save(batch[0][1]);
        bytes(0x73);
      }
      if (batch.length < 1000) break;
    }
  };
  const save = (n: PickleNode): void => {
    switch (n.t) {
      case 'int': return int(n.v);
      case 'bool': return void bytes(n.v ? 0x88 : 0x89);
      case 'none': return void bytes(0x4e);
      case 'str': return once(`s:${n.v}`, () => {
        const b = Buffer.from(n.v, 'utf8');
        const h = Buffer.alloc(5);
        h[0] = 0x58;
        h.writeUInt32LE(b.length, 1);
        out.push(h, b);
      });
      case 'global': return once(`g:${n.module}.${n.name}`, () => void out.push(Buffer.from(`c${n.module}\n${n.name}\n`, 'utf8')));
      case 'tuple':
        if (n.items.length === 0) return void bytes(0x29);
        if (n.items.length <= 3) { n.items.forEach(save); bytes(0x84 + n.items.length); } else { bytes(0x28); n.items.forEach(save); bytes(0x74); }
        return memoize();
      case 'dict':
        bytes(0x7d);
        memoize();
        return setItems(n.items);
      case 'odict':
        save({ t: 'reduce', func: { t: 'global', module: 'collections', name: 'OrderedDict' }, args: { t: 'tuple', items: [] } });
        setItems(n.items);
        if (n.attrs?.length) {
          save({ t: 'dict', items: n.attrs.map(([k, v]) => [{ t: 'str', v: k }, v] as [PickleNode, PickleNode]) });
          bytes(0x62);
        }
        return;
      case 'reduce':
        save(n.func);
        save(n.args);
        bytes(0x52);
        return memoize();
      case 'persid':
        save(n.pid);
        return void bytes(0x51);
    }
  };
  save(root);
  bytes(0x2e);
  return Buffer.concat(out);
}
