/**
 * Encoding throughput (sentences/s, tokens/s) per available backend, for the tiny BERT of
 * ../shared/data and a 4-layer, hidden-256 XLM-R-shaped model (random weights; speed does not depend on them).
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { availableBackends } from '../src/backend';
import { parseConfig } from '../src/model/config';
import { encodeIds } from '../src/model/inference';
import { disposeModel, initModel, loadModel, M3Model } from '../src/model/m3';

const SHARED = process.env.M3_SHARED_DIR ?? path.resolve(__dirname, '..', '..', 'shared');

function xlmrSmall(): M3Model {
  const config = parseConfig({
    model_type: 'xlm-roberta', vocab_size: 8000, hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4,
    intermediate_size: 1024, max_position_embeddings: 514, type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1,
  });
  return initModel(config, { seed: 0, heads: true });
}

function randomSeqs(n: number, len: number, vocab: number): number[][] {
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  return Array.from({ length: n }, () => [0, ...Array.from({ length: len - 2 }, () => 5 + Math.floor(rnd() * (vocab - 5))), 2]);
}

export async function run(args: { json?: boolean; backend?: string }): Promise<void> {
  const backends = args.backend ? [args.backend] : await availableBackends();
  const rows: Record<string, unknown>[] = [];
  for (const backend of backends) {
    await tf.setBackend(backend);
    const cases: [string, () => M3Model, number, number][] = [
      ['tiny-bert', () => loadModel(path.join(SHARED, 'data/models/lightning-ir-tiny-bert')), 512, 32],
      ['xlmr-4x256', xlmrSmall, 128, 128],
    ];
    for (const [name, make, n, len] of cases) {
      const model = make();
      const seqs = randomSeqs(n, len, Math.min(model.config.vocabSize, 8000)).map((q) => (model.config.family === 'bert' ? q.map((t, i) => (i === 0 ? 2 : i === q.length - 1 ? 3 : t % model.config.vocabSize)) : q));
      await encodeIds(model, seqs.slice(0, 32), { batchSize: 32 }); // warm-up
      const t0 = performance.now();
      await encodeIds(model, seqs, { batchSize: 32, outputs: ['dense'] });
      const secs = (performance.now() - t0) / 1000;
      const row = { bench: 'encode', backend, model: name, seq_len: len, sentences_per_s: n / secs, tokens_per_s: (n * len) / secs };
      rows.push(row);
      if (args.json) process.stdout.write(JSON.stringify(row) + '\n');
      disposeModel(model);
    }
  }
  if (!args.json) {
    process.stdout.write('backend     model        seq_len  sentences/s   tokens/s\n');
    for (const r of rows) {
      process.stdout.write(`${String(r.backend).padEnd(11)} ${String(r.model).padEnd(12)} ${String(r.seq_len).padStart(7)} ${(r.sentences_per_s as number).toFixed(1).padStart(12)} ${(r.tokens_per_s as number).toFixed(0).padStart(10)}\n`);
    }
  }
}
