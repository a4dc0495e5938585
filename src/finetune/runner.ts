/**
 * The fine-tuning stage runner (`pairs` and `unified`): model from a dir or from scratch, data prepared
 * on demand, the M3 micro-step (src/finetune/m3-step.ts) inside the shared training loop, evaluation on
 * a BEIR dev set when configured, the final model written in HF / FlagEmbedding layout.
 */
import * as tf from '@tensorflow/tfjs';
import { openDataset, PairBatch } from '../data';
import { BUCKETS } from '../data/manifest';
import { stageEvaluator } from '../eval/config';
import { resolveModelSources } from '../model/hub';
import { addHeads, applyFreezing, disposeModel, extendPositions, hasHeads, loadOrInitModel, M3Model, saveModel } from '../model/m3';
import { fitSparseHeadToIdf } from '../model/sparse-init';
import { allGatherConst, allGatherRows, Group } from '../backend/dist';
import { CrossDevice } from '../losses/m3-loss';
import { isRestart, joinProcessGroup, manifestsOf, rank0First } from '../train/distributed';
import { countParams, planModel } from '../train/plan';
import { RunOptions, RunResult, runTraining, Stage } from '../train/trainer';
import { stageDatasets, stageRecord } from '../train/stage-data';
import { check } from '../util/errors';
import { FinetuneConfig } from './config';
import { m3Step } from './m3-step';

/** The M3 heads this stage adds to a model without them (`addHeads`): their ColBERT width and seed. */
export function unifiedHeadSpec(cfg: FinetuneConfig): { colbertDim: number; seed: number } {
  return { colbertDim: cfg.model.colbert_dim, seed: cfg.train.seed + 7 };
}

/** Passages the `idf` sparse init fits on: the first batches of the stage's data, as rank 0 of 1 reads them. */
export const SPARSE_INIT_PASSAGES = 1024;

/** FlagEmbedding zeroes CLS, EOS, PAD and UNK in the sparse vectors (not MASK). */
const sparseSpecialIds = (m: M3Model) => [m.tokenizer!.clsId, m.tokenizer!.sepId, m.tokenizer!.padId, m.tokenizer!.unkId];

/** The stage's training data as dataset dirs (raw JSONL prepared into the cache, or reused); `src`: the model's resolved dirs (Hub ids fetched). */
export function stageData(cfg: FinetuneConfig, src: { init?: string; tokenizer?: string } = cfg.model): Promise<string[]> {
  return stageDatasets(cfg.data.train, src.tokenizer ?? src.init!, {
    format: cfg.stage === 'pairs' ? 'pairs' : 'finetune',
    queryMaxLen: cfg.data.query_max_len, passageMaxLen: cfg.data.passage_max_len, skipInvalid: cfg.data.skip_invalid,
    smallThreshold: cfg.data.small_threshold, dropThreshold: cfg.data.drop_threshold,
  }, cfg.data.cache_dir);
}

function openStageReader(model: M3Model, cfg: FinetuneConfig, dirs: string[], rank: number, worldSize: number) {
  const batchSize = Object.fromEntries(BUCKETS.map((b) => [b, cfg.data.batch_size_by_bucket[b] ?? cfg.data.batch_size]));
  return openDataset(dirs, {
    seed: cfg.train.seed, batchSize, trainGroupSize: cfg.data.train_group_size, shuffleRatio: cfg.data.shuffle_ratio,
    padToMultipleOf: cfg.data.pad_to_multiple_of || undefined, tokenizer: model.tokenizer!, rank, worldSize,
  });
}

/**
 * The heads this stage starts with when the model has none (`addHeads`), the sparse one fitted to IDF with
 * `model.sparse_init: idf` (src/model/sparse-init.ts). Every data-parallel rank reads the same sample (rank
 * 0 of 1), so all start alike. `dirs`: the stage's data (default: prepared here).
 */
export async function addStageHeads(model: M3Model, cfg: FinetuneConfig, dirs?: string[]): Promise<void> {
  if (hasHeads(model)) return;
  const heads = unifiedHeadSpec(cfg);
  addHeads(model, heads.colbertDim, heads.seed);
  if (cfg.model.sparse_init !== 'idf') return;
  const reader = await openStageReader(model, cfg, dirs ?? await stageData(cfg, await resolveModelSources(cfg.model)), 0, 1);
  try {
    const sample = [];
    for (let n = 0; n < SPARSE_INIT_PASSAGES && sample.length < reader.batchesPerEpoch; n += sample[sample.length - 1].batch) {
      sample.push(((await reader.next()) as PairBatch).passages);
    }
    const fit = fitSparseHeadToIdf(model, sample, sparseSpecialIds(model));
    process.stderr.write(`${cfg.stage}: sparse head fitted to IDF over ${fit.tokens} tokens of ${sample.reduce((a, b) => a + b.batch, 0)} passages (R² ${fit.r2.toFixed(2)})\n`);
  } finally {
    await reader.close();
  }
}

export async function runFinetune(cfg: FinetuneConfig, opts: Omit<RunOptions, 'outputDir'>): Promise<RunResult> {
  const unified = cfg.loss.unified_finetuning;
  check(!cfg.loss.use_self_distill || unified, `${cfg.output_dir}: loss.use_self_distill needs loss.unified_finetuning (the ensemble is the teacher)`);
  check(unified || cfg.loss.negatives_cross_device_modes.every((m) => m === 'dense'), `${cfg.output_dir}: loss.negatives_cross_device_modes lists sparse or colbert, which need loss.unified_finetuning`);
  const group = joinProcessGroup(cfg.train.dist_timeout_s);
  check(!cfg.loss.negatives_cross_device || group !== null, `${cfg.output_dir}: loss.negatives_cross_device needs data-parallel training (torchrun, Slurm or m3 train --nproc-per-node N), as in FlagEmbedding`);
  const src = await rank0First(group, 'fetching the model', () => resolveModelSources(cfg.model)); // Hub ids → cached dirs
  const model = loadOrInitModel(src, cfg.train.seed, cfg.output_dir);
  if (cfg.model.extend_positions) extendPositions(model.config, model.params, cfg.model.extend_positions);
  const dirs = await rank0First(group, 'preparing the training data', () => stageData(cfg, src));
  if (unified) await addStageHeads(model, cfg, dirs);
  applyFreezing(model, { fixEncoder: cfg.train.fix_encoder, fixPositionEmbedding: cfg.train.fix_position_embedding });
  const reader = await openStageReader(model, cfg, dirs, group?.rank ?? 0, group?.worldSize ?? 1);
  const crossDevice = cfg.loss.negatives_cross_device && group ? crossDeviceOf(group, cfg.loss.negatives_cross_device_modes) : undefined;
  const specialTokenIds = sparseSpecialIds(model);
  const dropout = model.config.hiddenDropout > 0 || model.config.attentionDropout > 0;
  const stage: Stage<PairBatch> = {
    name: cfg.stage,
    params: model.params as Map<string, tf.Variable>,
    batchesPerEpoch: () => reader.batchesPerEpoch,
    next: async () => (await reader.next()) as PairBatch,
    position: () => reader.position(),
    seek: (p) => reader.seek(p),
    micro: (batch, ctx) => {
      const r = m3Step(model, {
        queries: batch.queries, passages: batch.passages,
        teacherScores: cfg.data.knowledge_distillation ? batch.teacherScores ?? undefined : undefined,
      }, {
        loss: {
          temperature: cfg.loss.temperature,
          groupSize: batch.groupSize,
          unified,
          inBatchNegatives: !batch.noInBatchNeg,
          // counted in optimizer steps, 1-based: on when step > self_distill_start_step
          selfDistill: unified && cfg.loss.use_self_distill && ctx.step + 1 > cfg.loss.self_distill_start_step,
          kdLossType: cfg.loss.kd_loss_type,
          specialTokenIds,
          ensembleWeights: cfg.loss.ensemble_weights,
          lossWeights: cfg.loss.loss_weights,
          crossDevice,
        },
        subBatchSize: cfg.train.sub_batch_size,
        seed: dropout ? ctx.seed : undefined,
        rowOffset: { queries: (group?.rank ?? 0) * batch.queries.batch, passages: (group?.rank ?? 0) * batch.passages.batch },
      });
      const tokens = count(batch.queries.attentionMask) + count(batch.passages.attentionMask);
      return { loss: r.loss, grads: r.grads, parts: r.parts, tokens };
    },
    saveFinal: (dir, trained) => saveModel(model, dir, undefined, stageRecord({
      stage: cfg.stage, init: cfg.model.init, license: cfg.model.license, dirs, trained, settings: {
        loss: unified ? cfg.loss : { temperature: cfg.loss.temperature, unified_finetuning: false, negatives_cross_device: cfg.loss.negatives_cross_device },
        data: { query_max_len: cfg.data.query_max_len, passage_max_len: cfg.data.passage_max_len, train_group_size: cfg.data.train_group_size, batch_size: cfg.data.batch_size, knowledge_distillation: cfg.data.knowledge_distillation },
        train: { learning_rate: cfg.train.learning_rate, grad_accum: cfg.train.grad_accum, world_size: group?.worldSize ?? 1 },
      },
    })),
    evaluate: stageEvaluator(model, cfg.eval),
    identity: { config: cfg, data: manifestsOf(dirs) },
    resources: {
      kind: 'finetune', unified, model: planModel(model.config), ...countParams(model.params as Map<string, tf.Variable>),
      finalParams: countParams(model.params as Map<string, tf.Variable>).params, shapes: reader.shapes(),
      subBatchSize: cfg.train.sub_batch_size, keepsBest: !!cfg.eval.data?.length,
    },
  };
  try {
    return await runTraining(stage, cfg.train, { ...opts, resume: opts.resume || isRestart(), outputDir: cfg.output_dir });
  } finally {
    await reader.close();
    disposeModel(model);
  }
}

function crossDeviceOf(group: Group, modes: CrossDevice['modes']): CrossDevice {
  return {
    modes, rank: group.rank, worldSize: group.worldSize,
    gatherRows: (x) => allGatherRows(x, 'the cross-device all_gather'),
    gatherConst: (x) => allGatherConst(x, 'the cross-device all_gather').gathered,
  };
}

function count(mask: Int32Array): number {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i];
  return n;
}
