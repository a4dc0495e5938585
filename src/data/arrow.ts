/**
 * The on-disk layout of prepared data: Arrow IPC files whose record batches ("chunks", about 1 MiB of
 * token ids each) are built straight from typed arrays and read back one at a time through a file handle,
 * so neither writing nor reading ever holds a whole file. Chunk views are zero-copy over the read buffer.
 *
 * Pair rows (finetune, pairs): query list<int32>, pos / neg list<list<int32>>, pos_scores / neg_scores
 * list<float32> (null when the row has no teacher scores), pos_text list<utf8> (for shuffle_ratio; optional).
 * Pretrain rows: input_ids list<int32>. Every id list already carries its special tokens.
 */
import * as fs from 'fs';
import {
  AsyncRecordBatchFileReader, Data, Field, Float32, Int32, List, makeData, RecordBatch, RecordBatchFileWriter,
  RecordBatchReader, Schema, Struct, Utf8,
} from 'apache-arrow';

const int32 = () => new Int32();
const idList = () => new List(new Field('item', int32(), false));
const idListList = () => new List(new Field('item', idList(), false));
const scoreList = () => new List(new Field('item', new Float32(), false));
const textList = () => new List(new Field('item', new Utf8(), false));

export function pairSchema(withText: boolean): Schema {
  const fields: Field[] = [
    new Field('query', idList(), false),
    new Field('pos', idListList(), false),
    new Field('neg', idListList(), false),
    new Field('pos_scores', scoreList(), true),
    new Field('neg_scores', scoreList(), true),
  ];
  if (withText) fields.push(new Field('pos_text', textList(), false));
  return new Schema(fields);
}

export function pretrainSchema(): Schema {
  return new Schema([new Field('input_ids', idList(), false)]);
}

/** A growable typed array. */
class Grow<T extends Int32Array | Float32Array | Uint8Array> {
  arr: T;
  n = 0;
  constructor(private readonly make: (n: number) => T, cap = 1024) {
    this.arr = make(cap);
  }
  reserve(extra: number): void {
    if (this.n + extra <= this.arr.length) return;
    let cap = this.arr.length * 2;
    while (cap < this.n + extra) cap *= 2;
    const next = this.make(cap);
    next.set(this.arr.subarray(0, this.n));
    this.arr = next;
  }
  push(v: number): void {
    this.reserve(1);
    this.arr[this.n++] = v;
  }
  pushAll(v: ArrayLike<number>): void {
    this.reserve(v.length);
    this.arr.set(v as never, this.n);
    this.n += v.length;
  }
  take(): T {
    return this.arr.slice(0, this.n) as T;
  }
}

const newI32 = (n: number) => new Int32Array(n);
const newF32 = (n: number) => new Float32Array(n);
const newU8 = (n: number) => new Uint8Array(n);

/** list<int32> column builder. */
class IdListBuilder {
  private values = new Grow(newI32);
  private offsets = new Grow(newI32);
  constructor() {
    this.offsets.push(0);
  }
  get valueCount(): number {
    return this.values.n;
  }
  append(ids: ArrayLike<number>): void {
    this.values.pushAll(ids);
    this.offsets.push(this.values.n);
  }
  finish(): Data {
    const values = this.values.take();
    const offsets = this.offsets.take();
    return makeData({ type: idList(), length: offsets.length - 1, nullCount: 0, valueOffsets: offsets, child: makeData({ type: int32(), length: values.length, data: values }) });
  }
}

/** list<list<int32>> column builder. */
class IdListListBuilder {
  private inner = new IdListBuilder();
  private outer = new Grow(newI32);
  private innerCount = 0;
  constructor() {
    this.outer.push(0);
  }
  get valueCount(): number {
    return this.inner.valueCount;
  }
  append(lists: ArrayLike<number>[]): void {
    for (const l of lists) this.inner.append(l);
    this.innerCount += lists.length;
    this.outer.push(this.innerCount);
  }
  finish(): Data {
    const offsets = this.outer.take();
    return makeData({ type: idListList(), length: offsets.length - 1, nullCount: 0, valueOffsets: offsets, child: this.inner.finish() as Data<List<Int32>> });
  }
}

/** Nullable list<float32> column builder. */
class ScoreListBuilder {
  private values = new Grow(newF32);
  private offsets = new Grow(newI32);
  private valid = new Grow(newU8);
  private rows = 0;
  private nulls = 0;
  constructor() {
    this.offsets.push(0);
  }
  append(scores: number[] | null): void {
    if (this.rows % 8 === 0) this.valid.push(0);
    if (scores === null) this.nulls++;
    else {
      this.valid.arr[this.valid.n - 1] |= 1 << (this.rows % 8);
      this.values.pushAll(scores);
    }
    this.offsets.push(this.values.n);
    this.rows++;
  }
  finish(): Data {
    const values = this.values.take();
    return makeData({
      type: scoreList(), length: this.rows, nullCount: this.nulls, nullBitmap: this.nulls ? this.valid.take() : undefined,
      valueOffsets: this.offsets.take(), child: makeData({ type: new Float32(), length: values.length, data: values }),
    });
  }
}

/** list<utf8> column builder. */
class TextListBuilder {
  private bytes = new Grow(newU8);
  private strOffsets = new Grow(newI32);
  private outer = new Grow(newI32);
  private count = 0;
  private readonly enc = new TextEncoder();
  constructor() {
    this.strOffsets.push(0);
    this.outer.push(0);
  }
  append(texts: string[]): void {
    for (const t of texts) {
      this.bytes.reserve(t.length * 3);
      const { written } = this.enc.encodeInto(t, this.bytes.arr.subarray(this.bytes.n));
      this.bytes.n += written;
      this.strOffsets.push(this.bytes.n);
    }
    this.count += texts.length;
    this.outer.push(this.count);
  }
  finish(): Data {
    const strOffsets = this.strOffsets.take();
    const inner = makeData({ type: new Utf8(), length: strOffsets.length - 1, nullCount: 0, valueOffsets: strOffsets, data: this.bytes.take() });
    const offsets = this.outer.take();
    return makeData({ type: textList(), length: offsets.length - 1, nullCount: 0, valueOffsets: offsets, child: inner });
  }
}

export interface PairRow {
  query: ArrayLike<number>;
  pos: ArrayLike<number>[];
  neg: ArrayLike<number>[];
  posScores: number[] | null;
  negScores: number[] | null;
  posText?: string[];
}

/** Accumulates rows of one kind until a chunk is full, then yields it as a RecordBatch. */
export interface ChunkBuilder<R> {
  append(row: R): void;
  readonly rows: number;
  /** Token ids held (the chunk-size measure). */
  readonly ids: number;
  finish(): RecordBatch;
}

export function pairChunkBuilder(withText: boolean): ChunkBuilder<PairRow> {
  const schema = pairSchema(withText);
  const q = new IdListBuilder();
  const pos = new IdListListBuilder();
  const neg = new IdListListBuilder();
  const ps = new ScoreListBuilder();
  const ns = new ScoreListBuilder();
  const txt = withText ? new TextListBuilder() : null;
  let rows = 0;
  return {
    append(r) {
      q.append(r.query);
      pos.append(r.pos);
      neg.append(r.neg);
      ps.append(r.posScores);
      ns.append(r.negScores);
      txt?.append(r.posText ?? []);
      rows++;
    },
    get rows() {
      return rows;
    },
    get ids() {
      return q.valueCount + pos.valueCount + neg.valueCount;
    },
    finish() {
      const children = [q.finish(), pos.finish(), neg.finish(), ps.finish(), ns.finish(), ...(txt ? [txt.finish()] : [])];
      return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows, nullCount: 0, children }));
    },
  };
}

export function pretrainChunkBuilder(): ChunkBuilder<ArrayLike<number>> {
  const schema = pretrainSchema();
  const ids = new IdListBuilder();
  let rows = 0;
  return {
    append(r) {
      ids.append(r);
      rows++;
    },
    get rows() {
      return rows;
    },
    get ids() {
      return ids.valueCount;
    },
    finish() {
      return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows, nullCount: 0, children: [ids.finish()] }));
    },
  };
}

/** An Arrow IPC file written chunk by chunk through a stream. */
export interface ArrowFileWriter {
  write(batch: RecordBatch): void;
  /** Row counts of the chunks written so far. */
  readonly chunks: number[];
  close(): Promise<void>;
}

export function openArrowWriter(file: string): ArrowFileWriter {
  const writer = new RecordBatchFileWriter();
  const out = fs.createWriteStream(file);
  let failure: Error | null = null;
  const done = new Promise<void>((resolve) => {
    out.on('finish', () => resolve());
    out.on('error', (e) => {
      failure = e;
      resolve();
    });
  });
  writer.toNodeStream().pipe(out);
  const chunks: number[] = [];
  return {
    write(batch) {
      if (failure) throw failure;
      writer.write(batch);
      chunks.push(batch.numRows);
    },
    chunks,
    async close() {
      writer.finish();
      await done;
      if (failure) throw failure;
    },
  };
}

/** Random access to the chunks of one Arrow file through an open file handle. */
export interface ArrowFileReader {
  readonly numChunks: number;
  readChunk(index: number): Promise<RecordBatch>;
  close(): Promise<void>;
}

export async function openArrowReader(file: string): Promise<ArrowFileReader> {
  const fh = await fs.promises.open(file, 'r');
  let reader: AsyncRecordBatchFileReader;
  try {
    reader = (await RecordBatchReader.from(fh)) as unknown as AsyncRecordBatchFileReader;
    await reader.open();
    if (!reader.isFile()) throw new Error(`${file}: not an Arrow IPC file`);
  } catch (e) {
    await fh.close();
    throw e;
  }
  return {
    numChunks: reader.numRecordBatches,
    async readChunk(index) {
      const b = await reader.readRecordBatch(index);
      if (!b) throw new Error(`${file}: record batch ${index} missing`);
      return b;
    },
    async close() {
      await fh.close().catch(() => undefined);
    },
  };
}

/** list<int32> over a read chunk: row i's ids as a zero-copy view. */
export interface IdLists {
  length: number;
  get(i: number): Int32Array;
}

function idLists(d: Data): IdLists {
  const off = d.valueOffsets as Int32Array;
  const child = d.children[0];
  const values = child.values as Int32Array;
  const base = d.offset;
  const cbase = child.offset;
  return {
    length: d.length,
    get: (i) => values.subarray(cbase + off[base + i], cbase + off[base + i + 1]),
  };
}

/** list<list<int32>>: row i, item k. */
export interface IdListLists {
  count(i: number): number;
  get(i: number, k: number): Int32Array;
}

function idListLists(d: Data): IdListLists {
  const off = d.valueOffsets as Int32Array;
  const inner = idLists(d.children[0]);
  const base = d.offset;
  return {
    count: (i) => off[base + i + 1] - off[base + i],
    get: (i, k) => inner.get(off[base + i] + k),
  };
}

/** Nullable list<float32>: row i's scores, or null. */
function scoreLists(d: Data): (i: number) => Float32Array | null {
  const off = d.valueOffsets as Int32Array;
  const child = d.children[0];
  const values = child.values as Float32Array;
  const bitmap = d.nullCount > 0 ? d.nullBitmap : null;
  const base = d.offset;
  return (i) => {
    const j = base + i;
    if (bitmap && !(bitmap[j >> 3] & (1 << (j & 7)))) return null;
    return values.subarray(child.offset + off[j], child.offset + off[j + 1]);
  };
}

function textLists(d: Data): (i: number, k: number) => string {
  const off = d.valueOffsets as Int32Array;
  const inner = d.children[0];
  const soff = inner.valueOffsets as Int32Array;
  const bytes = inner.values as Uint8Array;
  const dec = new TextDecoder();
  return (i, k) => {
    const s = inner.offset + off[d.offset + i] + k;
    return dec.decode(bytes.subarray(soff[s], soff[s + 1]));
  };
}

export interface PairChunk {
  rows: number;
  query: IdLists;
  pos: IdListLists;
  neg: IdListLists;
  posScores: (i: number) => Float32Array | null;
  negScores: (i: number) => Float32Array | null;
  /** null when the data was prepared without texts. */
  posText: ((i: number, k: number) => string) | null;
}

function column(batch: RecordBatch, name: string): Data {
  const v = batch.getChild(name);
  if (!v) throw new Error(`prepared chunk has no column '${name}'`);
  return v.data[0];
}

export function pairChunk(batch: RecordBatch): PairChunk {
  const hasText = !!batch.getChild('pos_text');
  return {
    rows: batch.numRows,
    query: idLists(column(batch, 'query')),
    pos: idListLists(column(batch, 'pos')),
    neg: idListLists(column(batch, 'neg')),
    posScores: scoreLists(column(batch, 'pos_scores')),
    negScores: scoreLists(column(batch, 'neg_scores')),
    posText: hasText ? textLists(column(batch, 'pos_text')) : null,
  };
}

export function pretrainChunk(batch: RecordBatch): IdLists {
  return idLists(column(batch, 'input_ids'));
}
