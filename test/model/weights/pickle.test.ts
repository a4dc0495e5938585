import { AllowedGlobal, pickle, PyValue, unpickle } from '../../../src/model/weights/pickle';
import { UserError } from '../../../src/util/errors';

const b = (s: string) => Buffer.from(s, 'latin1');
const u32 = (n: number) => { const x = Buffer.alloc(4); x.writeUInt32LE(n); return x.toString('latin1'); };
const binunicode = (s: string) => 'X' + u32(Buffer.byteLength(s)) + Buffer.from(s, 'utf8').toString('latin1');
const short = (s: string) => '\x8c' + String.fromCharCode(s.length) + s;

let calls = 0;
const globals = new Map<string, AllowedGlobal>([
  ['collections.OrderedDict', { call: () => { calls++; return { kind: 'dict', ordered: true, map: new Map(), attrs: new Map() }; } }],
  ['torch.FloatStorage', {}],
]);
const run = (s: string, persistentLoad?: (pid: PyValue) => PyValue) => unpickle(b(s), { where: 'colbert_linear.pt', globals, persistentLoad });
const refusal = (s: string): string => {
  calls = 0;
  try {
    run(s);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    expect(calls).toBe(0); // refused before any call
    return (e as Error).message;
  }
  throw new Error('not refused');
};

describe('unpickler allow-list', () => {
  test('posix.system through GLOBAL', () => {
    expect(refusal('\x80\x02cposix\nsystem\nq\x00' + binunicode('echo pwned') + '\x85R.'))
      .toBe("colbert_linear.pt: refused pickle global 'posix.system' (not in the allow-list)");
  });
  test('posix.system through STACK_GLOBAL', () => {
    expect(refusal('\x80\x04' + short('posix') + short('system') + '\x93' + short('echo pwned') + '\x85R.'))
      .toBe("colbert_linear.pt: refused pickle global 'posix.system' (not in the allow-list)");
  });
  test('os.system and builtins.eval through REDUCE are refused at the global', () => {
    expect(refusal('\x80\x02cos\nsystem\n' + binunicode('id') + '\x85R.')).toBe("colbert_linear.pt: refused pickle global 'os.system' (not in the allow-list)");
    expect(refusal('\x80\x04' + short('builtins') + short('eval') + '\x93' + short('1+1') + '\x85R.'))
      .toBe("colbert_linear.pt: refused pickle global 'builtins.eval' (not in the allow-list)");
  });
  test('an allowed global that is not an allowed callable cannot be REDUCEd', () => {
    expect(refusal('\x80\x02ctorch\nFloatStorage\n)R.')).toBe("colbert_linear.pt: refused pickle REDUCE of 'torch.FloatStorage' (not an allowed callable)");
    expect(refusal('\x80\x02' + binunicode('x') + ')R.')).toBe('colbert_linear.pt: refused pickle REDUCE of a str (not an allowed callable)');
  });
  test('INST and OBJ are refused, naming the class', () => {
    expect(refusal('\x80\x02(' + binunicode('echo pwned') + 'iposix\nsystem\n.')).toBe("colbert_linear.pt: refused pickle opcode INST for 'posix.system' (not in the allow-list)");
    expect(refusal('\x80\x02(ccollections\nOrderedDict\no.')).toBe("colbert_linear.pt: refused pickle opcode OBJ for 'collections.OrderedDict' (not in the allow-list)");
  });
  test('other opcodes outside the allow-list, and unknown opcodes', () => {
    expect(refusal('\x80\x02ccollections\nOrderedDict\n)\x81.')).toBe('colbert_linear.pt: refused pickle opcode NEWOBJ at byte 28 (not in the allow-list)');
    expect(refusal('\x80\x02\x82\x01.')).toBe('colbert_linear.pt: refused pickle opcode EXT1 at byte 2 (not in the allow-list)');
    expect(refusal('\x80\x02P1\n.')).toBe('colbert_linear.pt: refused pickle opcode PERSID at byte 2 (not in the allow-list)');
    expect(refusal('\x80\x02K\x01Q.')).toBe('colbert_linear.pt: refused pickle opcode BINPERSID at byte 4 (no persistent ids expected)');
    expect(refusal('\x80\x02\xff.')).toBe('colbert_linear.pt: unknown pickle opcode 0xff at byte 2');
  });
  test('BUILD only sets dict attributes on dicts', () => {
    expect(refusal('\x80\x02' + binunicode('x') + '}b.')).toBe('colbert_linear.pt: refused pickle BUILD of a str (only dict attributes are allowed)');
    expect(refusal('\x80\x02}K\x01b.')).toBe('colbert_linear.pt: refused pickle BUILD with a number as state (only a dict of attributes is allowed)');
  });
  test('malformed and truncated streams', () => {
    expect(refusal('\x80\x02X\xff\x00\x00\x00ab')).toBe('colbert_linear.pt: truncated pickle (BINUNICODE at byte 2 runs past the end)');
    expect(refusal('\x80\x02K\x01')).toBe('colbert_linear.pt: truncated pickle (no STOP opcode)');
    expect(refusal('\x80\x02h\x05.')).toBe('colbert_linear.pt: malformed pickle (BINGET at byte 2: memo key 5 is not set)');
    expect(refusal('\x80\x02t.')).toBe('colbert_linear.pt: malformed pickle (TUPLE at byte 2: no MARK)');
    expect(refusal('\x80\x02(R.')).toBe('colbert_linear.pt: malformed pickle (REDUCE at byte 3: stack underflow)');
    expect(refusal('\x80\x06N.')).toBe('colbert_linear.pt: unsupported pickle protocol 6');
  });
});

describe('unpickler values', () => {
  test('containers, ints of every width, floats, strings, bytes, memo', () => {
    const s = '\x80\x02]q\x00(K\x07M\x00\x01J\xff\xff\xff\xff\x8a\x05\x00\x00\x00\x00\x01\x8a\x01\x80G?\xf8\x00\x00\x00\x00\x00\x00'
      + binunicode('é') + 'U\x02ab' + 'C\x02\x01\x02' + 'N\x88\x89' + 'h\x00' + 'e.';
    const v = run(s) as { kind: 'list'; items: PyValue[] };
    expect(v.kind).toBe('list');
    expect(v.items.slice(0, 11)).toEqual([7, 256, -1, 2 ** 32, -128, 1.5, 'é', 'ab', { kind: 'bytes', data: new Uint8Array([1, 2]) }, null, true]);
    expect(v.items[11]).toBe(false);
    expect(v.items[12]).toBe(v); // memo returns the same object
  });
  test('an OrderedDict with _metadata through BUILD', () => {
    const s = '\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01' + binunicode('a') + 'K\x01s}' + binunicode('_metadata') + 'K\x02sb.';
    const v = run(s) as { kind: 'dict'; ordered: boolean; map: Map<unknown, unknown>; attrs: Map<string, unknown> };
    expect(v.ordered).toBe(true);
    expect([...v.map]).toEqual([['a', 1]]);
    expect([...v.attrs]).toEqual([['_metadata', 2]]);
  });
});

describe('pickler', () => {
  test('writes what CPython writes for an OrderedDict with _metadata (protocol 2)', () => {
    // python3 -c "import pickle,collections; d=collections.OrderedDict(a=(1,2),b=(1,2,3,4)); d._metadata={'':{'version':1}}; print(pickle.dumps(d,2).hex())"
    const want = '80026363 6f6c6c65 6374696f 6e730a4f 72646572 65644469 63740a71 00295271 01285801 00000061 71024b01 4b028671 03580100 00006271 04284b01 4b024b03 4b047471 0575 7d7106 58090000 005f6d65 74616461 74617107 7d710858 00000000 71097d71 0a580700 00007665 7273696f 6e710b4b 01737373 622e'.replace(/ /g, '');
    const got = pickle({
      t: 'odict',
      items: [
        [{ t: 'str', v: 'a' }, { t: 'tuple', items: [{ t: 'int', v: 1 }, { t: 'int', v: 2 }] }],
        [{ t: 'str', v: 'b' }, { t: 'tuple', items: [1, 2, 3, 4].map((v) => ({ t: 'int' as const, v })) }],
      ],
      attrs: [['_metadata', { t: 'dict', items: [[{ t: 'str', v: '' }, { t: 'dict', items: [[{ t: 'str', v: 'version' }, { t: 'int', v: 1 }]] }]] }]],
    });
    expect(got.toString('hex')).toBe(want);
  });
  test('ints use the smallest opcode and LONG1 beyond 32 bits; memo indices grow past 255', () => {
    const ints = [0, 255, 256, 65535, 65536, -1, 2 ** 31, -(2 ** 31) - 1, 2 ** 40];
    const back = run(pickle({ t: 'tuple', items: ints.map((v) => ({ t: 'int' as const, v })) }).toString('latin1')) as { items: PyValue[] };
    expect(back.items).toEqual(ints);
    const many = pickle({ t: 'tuple', items: Array.from({ length: 300 }, (_, i) => ({ t: 'str' as const, v: `s${i % 280}` })) });
    expect(many.includes(Buffer.from([0x72, 0x00, 0x01, 0x00, 0x00]))).toBe(true); // LONG_BINPUT 256
    const strs = (run(many.toString('latin1')) as { items: PyValue[] }).items;
    expect(strs).toEqual(Array.from({ length: 300 }, (_, i) => `s${i % 280}`));
  });
});
