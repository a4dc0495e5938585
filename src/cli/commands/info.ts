/** `m3 info`: which backends load and pass their self-check here, and which `auto` would take. */
import type { CommandModule } from 'yargs';
import * as tf from '@tensorflow/tfjs';
import { BACKENDS, probeAll, useBackend } from '../../backend';
import { distributedSupport } from '../../backend/dist';
import { CommonArgs, handler, printJson } from '../run';

interface InfoArgs extends CommonArgs { json?: boolean }

export const infoCommand: CommandModule<object, InfoArgs> = {
  command: 'info',
  describe: 'Show the compute backends available here and the one selected',
  builder: (y) => y
    .option('json', { type: 'boolean', describe: 'print exactly one JSON object on stdout' })
    .example('$0 info', 'table of backends')
    .example('$0 info --json', '{"backends": {...}, "selected": "wasm"}') as never,
  handler: handler<InfoArgs>(async (args) => {
    const device = (args.device ?? 'cpu') as 'cpu' | 'cuda';
    const backends = await probeAll(device);
    const selected = await useBackend(args.backend ?? process.env.M3_BACKEND ?? 'auto', device);
    const support = distributedSupport();
    // on a GPU the collectives are NCCL's; on the CPU, Gloo's
    const available = device === 'cuda' ? support.nccl : support.gloo;
    const reason = available ? undefined : device === 'cuda' && !support.nccl ? 'the torch addon was built without NCCL (a CUDA libtorch and nccl.h are needed)' : support.reason;
    const distributed = { available, gloo: support.gloo, nccl: support.nccl, ...(reason ? { reason } : {}) };
    if (args.json) return printJson({ backends, selected, tfjs: tf.version.tfjs, distributed });
    for (const b of BACKENDS) {
      const s = backends[b];
      const mark = b === selected ? '*' : ' ';
      process.stdout.write(`${mark} ${b.padEnd(11)} ${s.available ? 'available' : 'unavailable'}${s.experimental ? ' (experimental)' : ''}${s.reason ? ` — ${s.reason}` : ''}\n`);
    }
    const engines = [support.gloo && 'Gloo (CPU)', support.nccl && 'NCCL (CUDA)'].filter(Boolean).join(', ');
    process.stdout.write(`data parallel: ${available ? `available — c10d ${engines} on the torch backend` : `unavailable — ${reason}`}\n`);
  }),
};
