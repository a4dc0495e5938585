/**
 * The RetroMAE stage runner (stage 1): packed token blocks → whole-word masked encoder input and the
 * enhanced decoder's inputs (src/pretrain/masking.ts, seeded per step and row), the RetroMAE loss
 * (src/pretrain/retromae-step.ts: src/model/retromae.ts's forward pass, src/losses/retromae.ts's loss) in the shared training loop; saves the encoder as an HF model dir with the
 * decoder and MLM head beside it.
 */
import * as tf from '@tensorflow/tfjs';
import { openDataset, PretrainBatch } from '../data';
import { stageEvaluator } from '../eval/config';
import { resolveModelSources } from '../model/hub';
import { applyFreezing, disposeModel, extendPositions, loadOrInitModel, saveModel } from '../model/m3';
import { encodeSafetensors, readSafetensors } from '../model/weights/safetensors';
import { isRestart, joinProcessGroup, manifestsOf, rank0First } from '../train/distributed';
import { countParams, planModel } from '../train/plan';
import { renameGrads, RunOptions, RunResult, runTraining, Stage } from '../train/trainer';
import { stageDatasets, stageRecord } from '../train/stage-data';
import * as fs from 'fs';
import * as path from 'path';
import { PretrainConfig } from './config';
import { RetroMaeMasking } from './masking';
import { retroMaeBatch, retroMaeObjective } from './retromae-step';
import { decoderTensors, DECODER_FILE, encoderPrefix, retroMaeParams } from '../model/retromae';

export async function runPretrain(cfg: PretrainConfig, opts: Omit<RunOptions, 'outputDir'>): Promise<RunResult> {
  const group = joinProcessGroup(cfg.train.dist_timeout_s);
  const src = await rank0First(group, 'fetching the model', () => resolveModelSources(cfg.model)); // Hub ids → cached dirs
  const model = loadOrInitModel(src, cfg.train.seed, cfg.output_dir);
  if (cfg.model.extend_positions) extendPositions(model.config, model.params, cfg.model.extend_positions);
  applyFreezing(model, { fixPositionEmbedding: cfg.train.fix_position_embedding });
  const tok = model.tokenizer!;
  const savedDecoder = src.init && fs.existsSync(path.join(src.init, DECODER_FILE)) ? readSafetensors(path.join(src.init, DECODER_FILE)) : new Map();
  const params = retroMaeParams(model.config, model.params, savedDecoder, cfg.train.seed + 11);
  const dirs = await rank0First(group, 'preparing the training data', () =>
    stageDatasets(cfg.data.train, src.tokenizer ?? src.init!, { format: 'pretrain', maxLen: cfg.data.max_len, skipInvalid: cfg.data.skip_invalid }, cfg.data.cache_dir));
  const reader = await openDataset(dirs, { seed: cfg.train.seed, batchSize: cfg.data.batch_size, tokenizer: tok, rank: group?.rank ?? 0, worldSize: group?.worldSize ?? 1 });
  const masking: RetroMaeMasking = { encoderRatio: cfg.masking.encoder_mlm_probability, decoderRatio: cfg.masking.decoder_mlm_probability, poolSize: cfg.masking.decoder_mask_pool };
  const dropout = model.config.hiddenDropout > 0 || model.config.attentionDropout > 0;
  const prefix = encoderPrefix(model.config);
  const stage: Stage<PretrainBatch> = {
    name: 'retromae',
    params,
    batchesPerEpoch: () => reader.batchesPerEpoch,
    next: async () => (await reader.next()) as PretrainBatch,
    position: () => reader.position(),
    seek: (p) => reader.seek(p),
    micro: (batch, ctx) => {
      const rowOffset = (group?.rank ?? 0) * batch.inputIds.batch;
      const inputs = retroMaeBatch(batch.inputIds, tok, masking, ctx.seed, rowOffset);
      const trainable = [...params.values()].filter((v) => v.trainable);
      let parts: Record<string, tf.Scalar> = {};
      const { value, grads } = tf.variableGrads(() => {
        const out = retroMaeObjective(model.config, params, inputs, { encoderPrefix: prefix, dropoutSeed: dropout ? ctx.seed : undefined, dropoutRowOffset: rowOffset });
        parts = { loss_encoder: tf.keep(out.encoderLoss.clone()), loss_decoder: tf.keep(out.decoderLoss.clone()) };
        return out.loss;
      }, trainable);
      let tokens = 0;
      for (const m of batch.inputIds.attentionMask) tokens += m;
      return { loss: value, grads: renameGrads(params, grads), parts, tokens };
    },
    saveFinal: (dir, trained) => saveModel(model, dir, { [DECODER_FILE]: encodeSafetensors(decoderTensors(params, model.config)) }, stageRecord({
      stage: 'retromae', init: cfg.model.init, license: cfg.model.license, dirs, trained, settings: {
        masking: cfg.masking, data: { max_len: cfg.data.max_len, batch_size: cfg.data.batch_size },
        train: { learning_rate: cfg.train.learning_rate, grad_accum: cfg.train.grad_accum, world_size: group?.worldSize ?? 1 },
      },
    })),
    evaluate: stageEvaluator(model, cfg.eval),
    identity: { config: cfg, data: manifestsOf(dirs) },
    resources: {
      kind: 'retromae', unified: false, model: planModel(model.config), ...countParams(params), finalParams: countParams(params).params,
      shapes: reader.shapes(), subBatchSize: 0, keepsBest: !!cfg.eval.data?.length,
    },
  };
  try {
    return await runTraining(stage, cfg.train, { ...opts, resume: opts.resume || isRestart(), outputDir: cfg.output_dir });
  } finally {
    await reader.close();
    for (const [k, v] of params) if (!k.startsWith(prefix)) v.dispose();
    disposeModel(model);
  }
}
