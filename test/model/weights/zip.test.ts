import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { crc32, crc32Portable, openForRead } from '../../../src/model/weights/fileio';
import { readTorchStateDict, torchZipEntries, writeTorchStateDict } from '../../../src/model/weights/torch';
import { TensorMap } from '../../../src/model/weights/types';
import { openZip, readZipEntry, readZipRange, writeZip, ZipReader } from '../../../src/model/weights/zip';
import { UserError } from '../../../src/util/errors';
import { expectSameTensors, f32, RawEntry, rawZip, tempDir } from './helpers';

const tmp = tempDir('zip');
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

function withZip<T>(file: string, fn: (z: ZipReader) => T): T {
  const { fd, size } = openForRead(file);
  try {
    return fn(openZip(file, fd, size));
  } finally {
    fs.closeSync(fd);
  }
}

const tensors: TensorMap = new Map([['weight', f32([16, 8], 7)], ['bias', f32([16], 8)]]);

test('CRC-32: the portable table matches zlib', () => {
  const data = Buffer.from(Array.from({ length: 10000 }, (_, i) => (i * 7919) & 0xff));
  expect(crc32Portable(Buffer.from('123456789'), 0)).toBe(0xcbf43926);
  expect(crc32Portable(data, 0)).toBe(crc32(data));
  expect(crc32Portable(data.subarray(5000), crc32Portable(data.subarray(0, 5000), 0))).toBe(crc32(data));
  expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
});

test('torch-layout zip: every entry 64-byte aligned, readable by range', () => {
  const file = path.join(tmp, 'aligned.pt');
  writeTorchStateDict(file, tensors);
  withZip(file, (z) => {
    expect([...z.entries.keys()]).toEqual(['aligned/data.pkl', 'aligned/byteorder', 'aligned/data/0', 'aligned/data/1', 'aligned/version']);
    const raw = fs.readFileSync(file);
    for (const e of z.entries.values()) {
      const nameLen = raw.readUInt16LE(e.headerOffset + 26);
      const extraLen = raw.readUInt16LE(e.headerOffset + 28);
      expect((e.headerOffset + 30 + nameLen + extraLen) % 64).toBe(0);
    }
    expect(readZipEntry(z, z.entries.get('aligned/version')!).toString()).toBe('3\n');
    const w = tensors.get('weight')!.data;
    const part = readZipRange(z, z.entries.get('aligned/data/0')!, 40, 8);
    expect(Array.from(new Float32Array(part.buffer.slice(part.byteOffset, part.byteOffset + 8)))).toEqual([w[10], w[11]]);
  });
});

test('zip64 fields (forced) read back identically', () => {
  const file = path.join(tmp, 'z64.pt');
  writeTorchStateDict(file, tensors, { forceZip64: true });
  withZip(file, (z) => expect(z.entries.get('z64/data/0')?.size).toBe(512));
  expectSameTensors(readTorchStateDict(file), tensors);
});

test('deflated entries (a re-zipped checkpoint) are inflated and CRC-checked', () => {
  const src = path.join(tmp, 'src.pt');
  writeTorchStateDict(src, tensors, { archiveName: 'archive' });
  const entries = withZip(src, (z) => [...z.entries.values()].map((e) => ({ name: e.name, data: readZipEntry(z, e), deflate: true })));
  const file = path.join(tmp, 'deflated.pt');
  fs.writeFileSync(file, rawZip(entries));
  expectSameTensors(readTorchStateDict(file), tensors);
});

test('truncated archives', () => {
  const file = path.join(tmp, 'full.pt');
  writeTorchStateDict(file, tensors);
  const bytes = fs.readFileSync(file);
  for (const keep of [bytes.length - 10, Math.floor(bytes.length / 2), 100]) {
    const cut = path.join(tmp, `cut-${keep}.pt`);
    fs.writeFileSync(cut, bytes.subarray(0, keep));
    expect(message(() => readTorchStateDict(cut))).toBe(`${cut}: truncated or not a zip archive (no end-of-central-directory record)`);
  }
  // end records intact, data section cut out: the end records point past the bytes that remain
  const hole = path.join(tmp, 'hole.pt');
  const cdStart = withZip(file, (z) => z.cdOffset);
  const kept = Buffer.concat([bytes.subarray(0, 1000), bytes.subarray(cdStart)]);
  fs.writeFileSync(hole, kept);
  const z64 = cdStart + (bytes.length - 22 - 20 - 56 - cdStart);
  expect(message(() => readTorchStateDict(hole))).toBe(`${hole}: truncated or corrupt: the zip64 end record's offset ${z64} lies beyond its locator (${kept.length - 42})`);
  const plain = rawZip([{ name: 'a/data.pkl', data: Buffer.alloc(300) }]);
  const plainCut = path.join(tmp, 'plain-cut.pt');
  fs.writeFileSync(plainCut, Buffer.concat([plain.subarray(0, 100), plain.subarray(plain.length - 22 - 56)]));
  expect(message(() => readTorchStateDict(plainCut))).toBe(`${plainCut}: truncated: the central directory (56 bytes at 340) runs past its end record (156)`);
});

test('an entry claiming data beyond the archive is refused', () => {
  const zip = rawZip([{ name: 'a/data.pkl', data: Buffer.from('\x80\x02}.', 'latin1') }]);
  zip.writeUInt32LE(0x7fffffff, zip.length - 22 - 46 - 10 + 20); // central compressed size
  zip.writeUInt32LE(0x7fffffff, zip.length - 22 - 46 - 10 + 24);
  const file = path.join(tmp, 'beyond.pt');
  fs.writeFileSync(file, zip);
  expect(message(() => readTorchStateDict(file))).toBe(`${file}: zip entry 'a/data.pkl': 2147483647 bytes at offset 0 run past the end of the entries (44; truncated or corrupt)`);
});

test('zip bomb: a deflated entry claiming a huge size is refused before inflating', () => {
  const kernel = Buffer.alloc(1 << 20); // 1 MiB of zeros deflates to ~1 KiB
  const file = path.join(tmp, 'bomb.pt');
  fs.writeFileSync(file, rawZip([{ name: 'a/data.pkl', data: kernel, deflate: true, size: 0xfffffff0 }]));
  const deflated = zlib.deflateRawSync(kernel).length;
  expect(message(() => readTorchStateDict(file))).toBe(`${file}: zip entry 'a/data.pkl': refused: ${deflated} deflated bytes claim to hold 4294967280 (beyond what deflate can reach; a zip bomb?)`);
  // a size within deflate's reach that is still a lie: inflation stops at the declared size
  const lie = path.join(tmp, 'lie.pt');
  fs.writeFileSync(lie, rawZip([{ name: 'a/data.pkl', data: kernel, deflate: true, size: 1000 }]));
  expect(message(() => readTorchStateDict(lie))).toMatch(new RegExp(`^${lie}: zip entry 'a/data.pkl': deflate data is corrupt or larger than its declared 1000 bytes \\(.*\\)$`));
});

test('CRC mismatch, encryption, unsupported methods, duplicate names', () => {
  const pkl = Buffer.from('\x80\x02}.', 'latin1');
  const cases: [string, RawEntry[], string][] = [
    ['crc.pt', [{ name: 'a/data.pkl', data: pkl, crc: 1234 }], "zip entry 'a/data.pkl': CRC mismatch (corrupt)"],
    ['enc.pt', [{ name: 'a/data.pkl', data: pkl, flags: 1 }], "zip entry 'a/data.pkl': encrypted entries are not supported"],
    ['dup.pt', [{ name: 'a/data.pkl', data: pkl }, { name: 'a/data.pkl', data: pkl }], "zip entry 'a/data.pkl': appears twice in the archive"],
  ];
  for (const [name, entries, msg] of cases) {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, rawZip(entries));
    expect(message(() => readTorchStateDict(file))).toBe(`${file}: ${msg}`);
  }
  const bz = rawZip([{ name: 'a/data.pkl', data: pkl }]);
  bz.writeUInt16LE(12, bz.length - 22 - 56 + 10); // central method → bzip2
  const file = path.join(tmp, 'bz.pt');
  fs.writeFileSync(file, bz);
  expect(message(() => readTorchStateDict(file))).toBe(`${file}: zip entry 'a/data.pkl': unsupported compression method 12`);
});

test('writer streams several chunks per entry and checks the byte count', () => {
  const file = path.join(tmp, 'chunks.zip');
  const fd = fs.openSync(file, 'w');
  writeZip(fd, [{ name: 'x/a', size: 6, data: () => [Buffer.from('abc'), Buffer.from('def')] }]);
  expect(() => writeZip(fd, [{ name: 'x/b', size: 5, data: () => [Buffer.from('abc')] }])).toThrow("zip entry 'x/b': wrote 3 bytes, expected 5");
  fs.closeSync(fd);
  const good = path.join(tmp, 'chunks2.zip');
  const fd2 = fs.openSync(good, 'w');
  writeZip(fd2, [{ name: 'x/a', size: 6, data: () => [Buffer.from('abc'), Buffer.from('def')] }]);
  fs.closeSync(fd2);
  withZip(good, (z) => expect(readZipEntry(z, z.entries.get('x/a')!).toString()).toBe('abcdef'));
  expect(torchZipEntries(new Map(), 'e').map((e) => e.name)).toEqual(['e/data.pkl', 'e/byteorder', 'e/version']);
});
