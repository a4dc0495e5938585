/**
 * A small ONNX graph builder: nodes, initializers (raw little-endian bytes), graph inputs and outputs,
 * collected as plain objects in onnx-proto's message shapes (`onnx.INodeProto`, ...). It knows nothing about
 * encoders; `encoder-graph.ts` writes the model with it and `writer.ts` serialises it.
 */
import { onnx } from 'onnx-proto';
import { floatToHalf } from '../weights/dtype';

export const DT = onnx.TensorProto.DataType;
export type DataType = onnx.TensorProto.DataType;

const BYTES: Partial<Record<DataType, number>> = {
  [DT.FLOAT]: 4, [DT.FLOAT16]: 2, [DT.INT64]: 8, [DT.INT32]: 4, [DT.INT8]: 1, [DT.UINT8]: 1, [DT.BOOL]: 1,
};

/** An attribute value: an int, a float (tagged, since JS numbers do not say which), ints, or a tensor. */
export type Attr = { i: number } | { f: number } | { ints: number[] } | { s: string };

/** A constant tensor: its name in the graph, type, shape and bytes. */
export interface Initializer {
  name: string;
  dataType: DataType;
  dims: number[];
  bytes: Uint8Array;
}

/** A graph input or output: name, element type, and dims (a number, a symbolic name, or null for unknown). */
export interface ValueInfo {
  name: string;
  dataType: DataType;
  dims: (number | string | null)[];
}

function attribute(name: string, a: Attr): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if ('i' in a) return { name, type: T.INT, i: a.i };
  if ('f' in a) return { name, type: T.FLOAT, f: a.f };
  if ('ints' in a) return { name, type: T.INTS, ints: a.ints };
  return { name, type: T.STRING, s: new TextEncoder().encode(a.s) };
}

export function valueInfo(v: ValueInfo): onnx.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: v.dataType,
        shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : typeof d === 'string' ? { dimParam: d } : {})) },
      },
    },
  };
}

export function bytesPerElement(t: DataType): number {
  const n = BYTES[t];
  if (!n) throw new Error(`no byte size for ONNX data type ${t}`);
  return n;
}

export class Graph {
  readonly nodes: onnx.INodeProto[] = [];
  readonly initializers: Initializer[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  private readonly used = new Set<string>();
  private readonly consts = new Map<string, string>();
  private counter = 0;

  /** A fresh value name starting with `hint`. */
  fresh(hint: string): string {
    let name = hint;
    while (this.used.has(name)) name = `${hint}_${++this.counter}`;
    this.used.add(name);
    return name;
  }

  input(v: ValueInfo): string {
    this.used.add(v.name);
    this.inputs.push(v);
    return v.name;
  }

  /** Declares `value` a graph output under `name` (an Identity node renames it when the names differ). */
  output(value: string, v: ValueInfo): void {
    if (value !== v.name) {
      if (this.used.has(v.name)) throw new Error(`graph output name '${v.name}' is already taken`);
      this.used.add(v.name);
      this.nodes.push({ opType: 'Identity', input: [value], output: [v.name], name: `output_${v.name}` });
    }
    this.outputs.push(v);
  }

  /** Adds an initializer; the byte length must match type × shape. */
  initializer(hint: string, dataType: DataType, dims: number[], bytes: Uint8Array): string {
    const want = dims.reduce((a, b) => a * b, 1) * bytesPerElement(dataType);
    if (bytes.byteLength !== want) throw new Error(`initializer '${hint}': ${bytes.byteLength} bytes for [${dims}] of type ${dataType} (want ${want})`);
    const name = this.fresh(hint);
    this.initializers.push({ name, dataType, dims, bytes });
    return name;
  }

  /** A small constant, shared between uses with the same type, shape and values. */
  constant(dataType: DataType, dims: number[], values: number[]): string {
    const key = `${dataType}|${dims}|${values}`;
    const known = this.consts.get(key);
    if (known) return known;
    const name = this.initializer(`const_${this.consts.size}`, dataType, dims, encodeValues(dataType, values));
    this.consts.set(key, name);
    return name;
  }

  /** Adds one node with a single output and returns that output's name. */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, hint?: string): string {
    return this.opN(opType, inputs, 1, attrs, hint)[0];
  }

  /** Adds one node with `n` outputs; returns their names. */
  opN(opType: string, inputs: string[], n: number, attrs: Record<string, Attr> = {}, hint?: string): string[] {
    const base = this.fresh(hint ?? opType.toLowerCase());
    const outputs = Array.from({ length: n }, (_, i) => (i === 0 ? base : this.fresh(`${base}_${i}`)));
    this.nodes.push({
      opType,
      input: inputs,
      output: outputs,
      name: `${opType}_${this.nodes.length}`,
      attribute: Object.entries(attrs).map(([k, a]) => attribute(k, a)),
    });
    return outputs;
  }
}

/** Little-endian bytes of `values` as `dataType` (FLOAT16: rounded to the nearest half). */
export function encodeValues(dataType: DataType, values: number[]): Uint8Array {
  switch (dataType) {
    case DT.FLOAT: return new Uint8Array(Float32Array.from(values).buffer);
    case DT.INT64: return new Uint8Array(BigInt64Array.from(values.map((v) => BigInt(v))).buffer);
    case DT.INT32: return new Uint8Array(Int32Array.from(values).buffer);
    case DT.INT8: return new Uint8Array(Int8Array.from(values).buffer);
    case DT.UINT8: return Uint8Array.from(values);
    case DT.BOOL: return Uint8Array.from(values.map((v) => (v ? 1 : 0)));
    case DT.FLOAT16: return new Uint8Array(Uint16Array.from(values.map(floatToHalf)).buffer);
    default: throw new Error(`cannot encode constants of ONNX data type ${dataType}`);
  }
}
