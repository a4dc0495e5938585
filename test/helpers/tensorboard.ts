/**
 * An event-file decoder independent of src/train/tensorboard.ts: TFRecord framing as the spec gives it
 * (uint64 length, masked CRC32C of the length, data, masked CRC32C of the data), both CRCs checked by a
 * bitwise CRC32C, and the Event / Summary / SessionLog messages decoded by protobufjs from TensorBoard's
 * event.proto / summary.proto field definitions (PROTO below).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as protobuf from 'protobufjs';
import { EVENTS_DIR } from '../../src/train/tensorboard';

// tensorboard/compat/proto/event.proto and summary.proto: every field with its number and type (messages
// this test never reads inside are kept as bytes)
const PROTO = `
syntax = "proto3";
package tensorboard;
message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    bytes graph_def = 4;
    Summary summary = 5;
    bytes log_message = 6;
    SessionLog session_log = 7;
    bytes tagged_run_metadata = 8;
    bytes meta_graph_def = 9;
  }
  SourceMetadata source_metadata = 10;
}
message SourceMetadata { string writer = 1; }
message SessionLog {
  enum SessionStatus { STATUS_UNSPECIFIED = 0; START = 1; STOP = 2; CHECKPOINT = 3; }
  SessionStatus status = 1;
  string checkpoint_path = 2;
  string msg = 3;
}
message Summary {
  message Value {
    string node_name = 7;
    string tag = 1;
    bytes metadata = 9;
    oneof value {
      float simple_value = 2;
      bytes obsolete_old_style_histogram = 3;
      bytes image = 4;
      bytes histo = 5;
      bytes audio = 6;
      bytes tensor = 8;
    }
  }
  repeated Value value = 1;
}`;
const Event = protobuf.parse(PROTO).root.lookupType('tensorboard.Event');

/** CRC32C (Castagnoli, reflected 0x82F63B78), one bit at a time. */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
  }
  return (c ^ 0xffffffff) >>> 0;
}
const masked = (crc: number) => ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;

export interface Decoded { wallTime: number; step: number; fileVersion?: string; sessionLog?: { status: string }; summary?: { value: { tag: string; simpleValue: number }[] }; sourceMetadata?: { writer: string } }

/** Every record of an event file, CRCs checked; a damaged or cut record fails the test. */
export function readEventFile(file: string): { events: Decoded[]; records: Buffer[] } {
  const buf = fs.readFileSync(file);
  const events: Decoded[] = [];
  const records: Buffer[] = [];
  for (let at = 0; at < buf.length;) {
    expect(at + 12).toBeLessThanOrEqual(buf.length);
    const len = Number(buf.readBigUInt64LE(at));
    expect(buf.readUInt32LE(at + 8)).toBe(masked(crc32c(buf.subarray(at, at + 8))));
    const data = buf.subarray(at + 12, at + 12 + len);
    expect(data.length).toBe(len);
    expect(buf.readUInt32LE(at + 12 + len)).toBe(masked(crc32c(data)));
    records.push(buf.subarray(at, at + 16 + len));
    events.push(Event.toObject(Event.decode(data), { longs: Number, enums: String }) as Decoded);
    at += 16 + len;
  }
  return { events, records };
}

/** The run's event files in name order (the order TensorBoard reads them). */
export const eventFiles = (out: string) => fs.readdirSync(path.join(out, EVENTS_DIR)).sort().map((n) => path.join(out, EVENTS_DIR, n));

/** tag → steps (in file order) over all files, and tag@step → value. */
export function scalars(out: string): { steps: Map<string, number[]>; values: Map<string, number> } {
  const steps = new Map<string, number[]>();
  const values = new Map<string, number>();
  for (const f of eventFiles(out)) {
    for (const e of readEventFile(f).events) {
      for (const v of e.summary?.value ?? []) {
        steps.set(v.tag, [...(steps.get(v.tag) ?? []), e.step]);
        values.set(`${v.tag}@${e.step}`, v.simpleValue);
      }
    }
  }
  return { steps, values };
}

