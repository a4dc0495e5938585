/**
 * Serialises a Graph as an ONNX ModelProto through onnx-proto (protobufjs-generated ONNX messages). A model
 * whose protobuf would pass the 2 GiB limit, or any model when asked, keeps its initializers of 1 KiB and
 * more in `<file>_data` beside it (ONNX external data: location, offset, length; offsets 4 KiB-aligned so
 * onnxruntime can map them) and only the graph in the .onnx file.
 */
import * as fs from 'fs';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../../util/errors';
import { writeAll } from '../weights/fileio';
import { Graph, Initializer, valueInfo } from './graph';

/** protobuf's hard limit on one message, less headroom for the graph itself. */
export const MAX_INLINE_BYTES = 2 ** 31 - 2 ** 26;
const EXTERNAL_MIN_BYTES = 1024;
const ALIGN = 4096;

export interface WriteOnnxOptions {
  opset: number;
  /** true: external data always; false: never (fails past the limit); 'auto' (default): only past MAX_INLINE_BYTES. */
  externalData?: boolean | 'auto';
  docString?: string;
  metadata?: Record<string, string>;
}

export interface WrittenOnnx {
  /** Bytes of the .onnx file. */
  bytes: number;
  /** The external data file's name (beside the .onnx file), or null when every tensor is inline. */
  dataFile: string | null;
  dataBytes: number;
}

/** IR version of the ONNX release that introduced `opset`. */
export function irVersionFor(opset: number): number {
  return opset <= 14 ? 7 : opset <= 18 ? 8 : opset <= 20 ? 9 : 10;
}

export function initializerBytes(g: Graph): number {
  return g.initializers.reduce((s, t) => s + t.bytes.byteLength, 0);
}

/** Writes `g` to `file` (and `file`_data when external), fsynced. The caller makes the write atomic. */
export function writeOnnx(file: string, g: Graph, o: WriteOnnxOptions): WrittenOnnx {
  const total = initializerBytes(g);
  const external = o.externalData === true || ((o.externalData ?? 'auto') === 'auto' && total > MAX_INLINE_BYTES);
  if (!external && total > MAX_INLINE_BYTES) {
    throw new UserError(`${path.basename(file)}: ${total} bytes of weights do not fit one protobuf (2 GB limit); export with external data (drop --no-external-data)`);
  }
  const dataFile = external ? path.basename(file) + '_data' : null;
  let dataBytes = 0;
  let fd: number | null = null;
  const tensors: onnx.ITensorProto[] = [];
  try {
    if (dataFile) fd = fs.openSync(path.join(path.dirname(file), dataFile), 'w');
    for (const t of g.initializers) {
      if (fd !== null && t.bytes.byteLength >= EXTERNAL_MIN_BYTES) {
        const offset = Math.ceil(dataBytes / ALIGN) * ALIGN;
        if (offset > dataBytes) writeAll(fd, new Uint8Array(offset - dataBytes));
        writeAll(fd, t.bytes);
        dataBytes = offset + t.bytes.byteLength;
        tensors.push(externalTensor(t, dataFile!, offset));
      } else {
        tensors.push({ name: t.name, dataType: t.dataType, dims: t.dims, rawData: t.bytes });
      }
    }
    if (fd !== null) fs.fsyncSync(fd);
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
  const model: onnx.IModelProto = {
    irVersion: irVersionFor(o.opset),
    producerName: 'm3-train',
    docString: o.docString,
    opsetImport: [{ domain: '', version: o.opset }],
    metadataProps: Object.entries(o.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: 'm3_encoder',
      node: g.nodes,
      initializer: tensors,
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
    },
  };
  const bytes = onnx.ModelProto.encode(model).finish();
  const out = fs.openSync(file, 'w');
  try {
    writeAll(out, bytes);
    fs.fsyncSync(out);
  } finally {
    fs.closeSync(out);
  }
  return { bytes: bytes.byteLength, dataFile, dataBytes };
}

function externalTensor(t: Initializer, location: string, offset: number): onnx.ITensorProto {
  return {
    name: t.name,
    dataType: t.dataType,
    dims: t.dims,
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: 'location', value: location },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(t.bytes.byteLength) },
    ],
  };
}
