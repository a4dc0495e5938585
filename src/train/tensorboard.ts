/**
 * TensorBoard event files (`train.report_to: [tensorboard]`), beside metrics.jsonl: every row logged there
 * also goes to OUT/runs/events.out.tfevents.<time>.<host>.<pid>.<n>, in the format TensorFlow and PyTorch's
 * SummaryWriter write — TFRecord framing (uint64 length, masked CRC32C of it, the bytes, masked CRC32C of
 * them) around `Event` protobufs (tensorboard/compat/proto/event.proto): first one with file_version
 * "brain.Event:2", then one scalar `Summary.Value` (simple_value) per metric with the row's step and wall
 * time, under the tags of HF Trainer (`train/loss`, `train/learning_rate`, `eval/<mode>/<metric>`).
 *
 * A row reaches the OS as it is logged (a kill -9 loses nothing written) and the file is fsynced at each
 * checkpoint. Resume: events after the checkpoint's step are dropped from the earlier files (as metrics.jsonl
 * drops its rows, so a fresh TensorBoard sees every step once) and the new file opens with SessionLog START at
 * the next step, which makes a TensorBoard that already read the dropped steps purge them.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { writeFileAtomic } from '../util/fsx';

export const EVENTS_DIR = 'runs';
const EVENT_FILE = /^events\.out\.tfevents\.(\d+)\./;
/** metrics.jsonl names that HF Trainer logs under another tag. */
const HF_NAMES: Record<string, string> = { lr: 'learning_rate' };

/** The TensorBoard tag of a metrics.jsonl key: eval metrics keep their `eval/<mode>/<metric>` name, the rest go under train/. */
export function tensorboardTag(key: string): string {
  return key.includes('/') ? key : `train/${HF_NAMES[key] ?? key}`;
}

export interface EventLog {
  /** Writes a metrics row's numbers (everything but `step`) as scalars at its `step`. */
  log(row: Record<string, unknown>): void;
  /** fsync (at each checkpoint). */
  sync(): void;
  close(): void;
}

/**
 * The event files a run starts from, kept in step with metrics.jsonl whether or not this run writes any: a
 * fresh run (`step` null) removes them; a resumed one keeps their events up to the checkpoint's `step`.
 */
export function resetEventFiles(outputDir: string, step: number | null): void {
  for (const file of eventFilesOf(outputDir)) {
    if (step === null) fs.rmSync(file, { force: true });
    else truncateEvents(file, step);
  }
}

/** The run's event files, in the order TensorBoard reads them (by name). */
function eventFilesOf(outputDir: string): string[] {
  const dir = path.join(outputDir, EVENTS_DIR);
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => EVENT_FILE.test(n)).sort().map((n) => path.join(dir, n)) : [];
}

/**
 * Opens a new event file after the run's others (`resetEventFiles` has dealt with them); a resumed run
 * (`resumeStep` set) starts it with SessionLog START at the step after the checkpoint.
 */
export function openEventLog(outputDir: string, resumeStep: number | null): EventLog {
  const dir = path.join(outputDir, EVENTS_DIR);
  fs.mkdirSync(dir, { recursive: true });
  // a name after every earlier one: TensorBoard reads a run's files in name order
  const newest = Math.max(0, ...eventFilesOf(outputDir).map((f) => Number(EVENT_FILE.exec(path.basename(f))![1])));
  const time = Math.max(Math.floor(Date.now() / 1000), newest + 1);
  const file = path.join(dir, `events.out.tfevents.${String(time).padStart(10, '0')}.${os.hostname()}.${process.pid}.${fileCount++}`);
  const fd = fs.openSync(file, 'a');
  const now = () => Date.now() / 1000;
  const write = (events: Buffer[]) => {
    const buf = Buffer.concat(events.map(tfRecord));
    for (let done = 0; done < buf.length;) done += fs.writeSync(fd, buf, done, buf.length - done);
  };
  write([encodeEvent(now(), 0, { fileVersion: 'brain.Event:2' })]);
  if (resumeStep !== null) write([encodeEvent(now(), resumeStep + 1, { sessionStart: true })]);
  let open = true;
  return {
    log: (row) => {
      const step = Number(row.step ?? 0);
      const t = now();
      const scalars = Object.entries(row).filter((e): e is [string, number] => e[0] !== 'step' && typeof e[1] === 'number' && Number.isFinite(e[1]));
      write(scalars.map(([k, v]) => encodeEvent(t, step, { scalar: [tensorboardTag(k), v] })));
    },
    sync: () => fs.fsyncSync(fd),
    close: () => {
      if (!open) return;
      open = false;
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    },
  };
}
let fileCount = 0;

/** Keeps a file's events of steps ≤ `step` (and drops a record cut by a crash); rewritten only when that changes it. */
function truncateEvents(file: string, step: number): void {
  const buf = fs.readFileSync(file);
  const { records, end } = readRecords(buf);
  const keep = records.filter((r) => eventStep(buf.subarray(r.start, r.end)) <= step);
  if (keep.length === records.length && end === buf.length) return;
  writeFileAtomic(file, Buffer.concat(keep.map((r) => buf.subarray(r.start - 12, r.end + 4))));
}

// --- TFRecord framing -------------------------------------------------------------------------------------

/** One TFRecord: length, masked CRC32C of the length's 8 bytes, data, masked CRC32C of the data. */
export function tfRecord(data: Buffer): Buffer {
  const out = Buffer.alloc(data.length + 16);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc(out.subarray(0, 8)), 8);
  data.copy(out, 12);
  out.writeUInt32LE(maskedCrc(data), 12 + data.length);
  return out;
}

/** The data spans of whole, CRC-checked records, up to the first that is cut or damaged (`end`: where that is). */
function readRecords(buf: Buffer): { records: { start: number; end: number }[]; end: number } {
  const records: { start: number; end: number }[] = [];
  let at = 0;
  while (at + 12 <= buf.length) {
    const len = Number(buf.readBigUInt64LE(at));
    if (buf.readUInt32LE(at + 8) !== maskedCrc(buf.subarray(at, at + 8)) || at + 16 + len > buf.length) break;
    const start = at + 12;
    if (buf.readUInt32LE(start + len) !== maskedCrc(buf.subarray(start, start + len))) break;
    records.push({ start, end: start + len });
    at = start + len + 4;
  }
  return { records, end: at };
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC32C (Castagnoli), masked as TFRecord does: rotate right by 15, add 0xa282ead8. */
function maskedCrc(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  c = (c ^ 0xffffffff) >>> 0;
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

// --- the few protobuf fields of Event, Summary and SessionLog --------------------------------------------

function varint(n: number): number[] {
  const out: number[] = [];
  for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
  out.push(n);
  return out;
}

const key = (field: number, wire: number) => varint(field * 8 + wire);
const bytesField = (field: number, data: Buffer) => Buffer.concat([Buffer.from([...key(field, 2), ...varint(data.length)]), data]);

/**
 * Event { double wall_time = 1; int64 step = 2; oneof what { string file_version = 3; Summary summary = 5;
 * SessionLog session_log = 7; } SourceMetadata source_metadata = 10; }, Summary { repeated Value value = 1; },
 * Value { string tag = 1; float simple_value = 2; }, SessionLog { SessionStatus status = 1; } (START = 1),
 * SourceMetadata { string writer = 1; }. Fields in number order, defaults left out, as protobuf writes them.
 */
export function encodeEvent(wallTime: number, step: number, what: { fileVersion?: string; scalar?: [string, number]; sessionStart?: boolean }): Buffer {
  const time = Buffer.alloc(8);
  time.writeDoubleLE(wallTime);
  const parts = [Buffer.from(key(1, 1)), time];
  if (step > 0) parts.push(Buffer.from([...key(2, 0), ...varint(step)]));
  if (what.fileVersion) parts.push(bytesField(3, Buffer.from(what.fileVersion, 'utf8')));
  if (what.scalar) {
    const v = Buffer.alloc(4);
    v.writeFloatLE(what.scalar[1]);
    const value = Buffer.concat([bytesField(1, Buffer.from(what.scalar[0], 'utf8')), Buffer.from(key(2, 5)), v]);
    parts.push(bytesField(5, bytesField(1, value)));
  }
  if (what.sessionStart) parts.push(bytesField(7, Buffer.from([...key(1, 0), 1])));
  if (what.fileVersion) parts.push(bytesField(10, bytesField(1, Buffer.from('m3-train', 'utf8'))));
  return Buffer.concat(parts);
}

/** An Event's step (field 2; 0 when absent), read by skipping the other top-level fields. */
function eventStep(msg: Buffer): number {
  let at = 0;
  const readVarint = () => {
    let n = 0;
    for (let mul = 1; ; mul *= 128) {
      const b = msg[at++];
      n += (b & 0x7f) * mul;
      if (b < 0x80 || at >= msg.length) return n;
    }
  };
  while (at < msg.length) {
    const k = readVarint();
    const wire = k % 8;
    if (k >>> 3 === 2 && wire === 0) return readVarint();
    if (wire === 0) readVarint();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) at += readVarint();
    else break;
  }
  return 0;
}
