/** `m3 export`: a model dir → ONNX graphs (fp32 / fp16 / int8) in the layout transformers.js loads offline. */
import type { CommandModule } from 'yargs';
import { check } from '../../util/errors';
import { DEFAULT_OPSET, EXPORT_DTYPES, ExportDtype, exportOnnx, MAX_OPSET, MIN_OPSET } from '../../model/export';
import { resolveModelDir } from '../../model/hub';
import { CommonArgs, handler, printJson } from '../run';

interface ExportArgs extends CommonArgs {
  model: string;
  format: string;
  output: string;
  dtype: string;
  opset: number;
  externalData?: boolean;
  json?: boolean;
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

export const exportCommand: CommandModule<object, ExportArgs> = {
  command: 'export',
  describe: 'Export a model (encoder + dense, sparse, ColBERT heads) to ONNX for transformers.js / onnxruntime',
  builder: (y) => y
    .option('model', { type: 'string', demandOption: true, describe: 'model dir (HF / FlagEmbedding / m3 layout) or Hub id org/name[@revision]' })
    .option('format', { type: 'string', default: 'onnx', describe: 'output format (onnx)' })
    .option('output', { type: 'string', demandOption: true, describe: 'dir to write (replaced as a whole if it is an earlier export)' })
    .option('dtype', { type: 'string', default: 'fp32', describe: `comma list of ${EXPORT_DTYPES.join(', ')}: onnx/model.onnx, model_fp16.onnx, model_quantized.onnx` })
    .option('opset', { type: 'number', default: DEFAULT_OPSET, describe: `ONNX opset (${MIN_OPSET}..${MAX_OPSET})` })
    .option('external-data', { type: 'boolean', describe: 'keep the weights in onnx/<file>_data (default: only past the 2 GB protobuf limit)' })
    .option('json', { type: 'boolean', describe: 'print exactly one JSON object on stdout' })
    .example('$0 export --model runs/u/final --format onnx --output runs/u/onnx', 'fp32 graph: onnx/model.onnx')
    .example('$0 export --model BAAI/bge-m3 --output ./bge-m3-onnx --dtype fp32,fp16,int8', 'all three, from the Hub (bge-m3 fp32 goes to external data)') as never,
  handler: handler<ExportArgs>(async (args) => {
    check(args.format === 'onnx', `--format: unknown format '${args.format}' (supported: onnx)`);
    const dtypes = args.dtype.split(',').map((s) => s.trim()).filter(Boolean) as ExportDtype[];
    const r = await exportOnnx(await resolveModelDir(args.model), args.output, {
      dtypes,
      opset: args.opset,
      externalData: args.externalData === undefined ? 'auto' : args.externalData,
    });
    if (args.json) return printJson(r);
    process.stdout.write(`${r.output}: ${r.family} encoder, opset ${r.opset}\n`);
    process.stdout.write(`  inputs  ${r.inputs.join(', ')} (int64 [batch, sequence])\n  outputs ${r.outputs.join(', ')} (float32)\n`);
    for (const f of r.files) {
      process.stdout.write(`  ${f.dtype.padEnd(5)} ${f.file} ${mb(f.bytes)}${f.dataFile ? ` + ${f.dataFile} ${mb(f.dataBytes)}` : ''}\n`);
    }
  }),
};
