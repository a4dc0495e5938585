import * as fs from 'fs';
import * as path from 'path';
import { encodeTensor, floatToBFloat16, floatToHalf, halfToFloat } from '../../../src/model/weights/dtype';
import { encodeSafetensors, readSafetensors, readSafetensorsHeader, writeSafetensors } from '../../../src/model/weights/safetensors';
import { HostTensor, TensorMap } from '../../../src/model/weights/types';
import { UserError } from '../../../src/util/errors';
import { sharedDir } from '../../helpers/shared';
import { expectSameTensors, f32, tempDir, rawSafetensors } from './helpers';

const tmp = tempDir('st');
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

const raw = (name: string, header: unknown, data: Buffer | number = 0, lengthOverride?: bigint) => rawSafetensors(path.join(tmp, name), header, data, lengthOverride);

describe('half and bfloat16 conversion', () => {
  test('every half survives half → float → half; rounding is to nearest even', () => {
    for (let h = 0; h < 0x10000; h++) {
      const f = halfToFloat(h);
      if (Number.isNaN(f)) expect(Number.isNaN(halfToFloat(floatToHalf(f)))).toBe(true);
      else if (floatToHalf(f) !== h) throw new Error(`half 0x${h.toString(16)} → ${f} → 0x${floatToHalf(f).toString(16)}`);
    }
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(floatToHalf(65520)).toBe(0x7c00); // rounds past the largest half → Inf
    expect(floatToHalf(2 ** -25)).toBe(0); // tie between 0 and the smallest subnormal → 0
    expect(floatToHalf(1.5 * 2 ** -25)).toBe(1);
    expect(floatToHalf(-0)).toBe(0x8000);
  });
  test('bfloat16 keeps the top 16 bits, rounding to nearest even', () => {
    expect(floatToBFloat16(1)).toBe(0x3f80);
    expect(floatToBFloat16(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(floatToBFloat16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(floatToBFloat16(-2)).toBe(0xc000);
    expect(floatToBFloat16(Infinity)).toBe(0x7f80);
    expect(floatToBFloat16(NaN) & 0x7fc0).toBe(0x7fc0);
  });
  test('encodeTensor writes little-endian bytes', () => {
    const t: HostTensor = { dtype: 'float32', shape: [2], data: Float32Array.from([1, -2]) };
    expect(Buffer.from(encodeTensor(t, 'F16')).toString('hex')).toBe('003c00c0');
    expect(Buffer.from(encodeTensor(t, 'BF16')).toString('hex')).toBe('803f00c0');
    expect(Buffer.from(encodeTensor({ dtype: 'int32', shape: [1], data: Int32Array.from([-2]) }, 'I64')).toString('hex')).toBe('feffffffffffffff');
  });
});

describe('safetensors', () => {
  const tensorsAll: TensorMap = new Map([['b', f32([3, 4], 1, true)], ['a', f32([5], 2, true)], ['ids', { dtype: 'int32', shape: [2], data: Int32Array.from([3, -4]) }]]);

  test('F32, F16 and BF16 files round-trip (streamed writer = in-memory encoder)', () => {
    // multiples of 1/64 in [-2, 2] are exact in bfloat16 (8 significant bits); of 1/256, in half
    const bf16: TensorMap = new Map([...tensorsAll].map(([k, t]) => [k, t.dtype === 'float32' ? { ...t, data: t.data.map((v) => Math.round(v * 64) / 64) } : t]));
    for (const floatDtype of ['F32', 'F16', 'BF16'] as const) {
      const tensors = floatDtype === 'BF16' ? bf16 : tensorsAll;
      const file = path.join(tmp, `rt-${floatDtype}.safetensors`);
      writeSafetensors(file, tensors, { floatDtype });
      expect(fs.readFileSync(file).equals(encodeSafetensors(tensors, { format: 'pt' }, floatDtype))).toBe(true);
      const { entries, metadata } = readSafetensorsHeader(file);
      expect(entries.map((e) => [e.name, e.dtype])).toEqual([['a', floatDtype], ['b', floatDtype], ['ids', 'I32']]);
      expect(metadata).toEqual({ format: 'pt' });
      const back = readSafetensors(file);
      expectSameTensors(back, tensors);
    }
  });

  test('F16 / BF16 / I64 / U8 written by hand are decoded', () => {
    const data = Buffer.concat([Buffer.from('003c00c0', 'hex'), Buffer.from('803f00c0', 'hex'), Buffer.from('feffffffffffffff', 'hex'), Buffer.from([7])]);
    const file = raw('hand.safetensors', {
      h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] }, b: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] },
      l: { dtype: 'I64', shape: [1], data_offsets: [8, 16] }, u: { dtype: 'U8', shape: [1, 1], data_offsets: [16, 17] },
    }, data);
    const m = readSafetensors(file);
    expect(Array.from(m.get('h')!.data)).toEqual([1, -2]);
    expect(Array.from(m.get('b')!.data)).toEqual([1, -2]);
    expect(m.get('l')).toEqual({ dtype: 'int32', shape: [1], data: Int32Array.from([-2]) });
    expect(m.get('u')).toEqual({ dtype: 'int32', shape: [1, 1], data: Int32Array.from([7]) });
  });

  test('the golden retromae.safetensors', () => {
    const m = readSafetensors(sharedDir('golden', 'retromae', 'retromae.safetensors'));
    expect(m.size).toBe(60);
    expect(m.get('roberta.embeddings.word_embeddings.weight')?.dtype).toBe('float32');
    expect([...m.keys()].filter((k) => k.startsWith('lm_head.')).sort()).toEqual(['lm_head.bias', 'lm_head.dense.bias', 'lm_head.dense.weight', 'lm_head.layer_norm.bias', 'lm_head.layer_norm.weight']);
  });

  test('hostile headers and data', () => {
    const ok = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
    let f = raw('huge.safetensors', ok, 8, 2n ** 40n);
    expect(message(() => readSafetensors(f))).toBe(`${f}: safetensors header length 1099511627776 is out of range (0..104857600)`);
    f = raw('neg.safetensors', ok, 8, -1n);
    expect(message(() => readSafetensors(f))).toBe(`${f}: safetensors header length -1 is out of range (0..104857600)`);
    f = raw('longhdr.safetensors', ok, 8, 5000n);
    expect(message(() => readSafetensors(f))).toMatch(new RegExp(`^${f}: truncated: header length 5000 exceeds the file size \\d+$`));
    f = raw('trunc.safetensors', ok, 5);
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensor 'w': data_offsets [0, 8] run past the end of the data (5 bytes; file truncated?)`);
    f = raw('range.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [100, 108] } }, 8);
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensor 'w': data_offsets [100, 108] run past the end of the data (8 bytes; file truncated?)`);
    f = raw('overlap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12);
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensors 'a' and 'b' overlap`);
    f = raw('dtype.safetensors', { w: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, 2);
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensor 'w': unknown dtype "F8_E4M3"`);
    f = raw('span.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8);
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensor 'w': data_offsets span 8 bytes but shape [3] of F32 needs 12`);
    f = raw('shape.safetensors', { w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, 8);
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensor 'w': invalid shape [-2]`);
    f = raw('offs.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, 8);
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensor 'w': invalid data_offsets [8,0]`);
    f = path.join(tmp, 'json.safetensors');
    fs.writeFileSync(f, Buffer.concat([Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{x]')]));
    expect(message(() => readSafetensors(f))).toBe(`${f}: safetensors header is not valid JSON`);
    f = path.join(tmp, 'tiny.safetensors');
    fs.writeFileSync(f, Buffer.from([1, 2]));
    expect(message(() => readSafetensors(f))).toBe(`${f}: not a safetensors file (2 bytes, shorter than the 8-byte header length)`);
    f = raw('i64.safetensors', { w: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, Buffer.from('0000000001000000', 'hex'));
    expect(message(() => readSafetensors(f))).toBe(`${f}: tensor 'w': int64 value 4294967296 does not fit in int32`);
  });
});
