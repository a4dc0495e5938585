/**
 * The library entry point (`require('m3-train')`): what the CLI does, as functions. Models load and save
 * in the HF / FlagEmbedding layout; `encode` and `computeScore` take BGEM3FlagModel's option names.
 *
 *   const { useBackend, openModel, encode } = require('m3-train');
 *   await useBackend();                          // torch when built, else wasm
 *   const model = await openModel('BAAI/bge-m3');  // a model dir, or a Hub id through the HF cache
 *   const { dense_vecs } = await encode(model, ['What is BGE M3?'], { max_length: 64 });
 */
// compute backends
export { availableBackends, BACKENDS, useBackend } from './backend';
export type { BackendName, Device } from './backend';
// models, tokenizers, inference
export { addHeads, disposeModel, hasHeads, initModel, loadModel, openModel, saveModel } from './model/m3';
export { parseHubId, resolveModelDir } from './model/hub';
export type { HubFiles, HubId } from './model/hub';
export type { LoadOptions, M3Model } from './model/m3';
export { parseConfig, readConfig } from './model/config';
export type { EncoderConfig } from './model/config';
export { loadTokenizer } from './model/tokenizer';
export type { Tokenizer } from './model/tokenizer';
export type { TokenBatch } from './util/token-batch';
export { computeScore, encode } from './model/flag';
export type { FlagEncodeOptions, FlagEncodeOutput, FlagScoreOptions } from './model/flag';
export { encodeIds, encodeTexts } from './model/inference';
export type { Embedding, EncodeOptions, OutputKind } from './model/inference';
export { colbertScore, denseScore, fuseScores, lexicalScore, MODE_ALIASES, modeNamed, MODES } from './model/scores';
export type { Mode, ModeScores, SparseVec } from './model/scores';
export { loadReranker, openReranker } from './model/reranker';
export type { Reranker } from './model/reranker';
export { exportOnnx } from './model/export';
export type { ExportOptions, ExportResult } from './model/export';
// data
export { prepareDataset } from './data/prepare';
export type { PrepareOptions } from './data/prepare';
export { openDataset } from './data/reader';
export { checkTrainingData, normalizeText } from './data/check';
export type { CheckOptions, DataCheck } from './data/check';
export type { DatasetReader, ReaderOptions } from './data/reader';
// training: stage configs, one stage, a pipeline, the demo
export { loadStageConfig, STAGES } from './recipes/stage-config';
export type { StageConfig, StageKind } from './recipes/stage-config';
export { pipelineStages, runPipeline, runStage } from './recipes/pipeline';
export type { StageRun } from './recipes/pipeline';
export { runDemo } from './recipes/demo';
export type { DemoOptions, DemoResults } from './recipes/demo';
export type { RunResult } from './train/trainer';
export { planStage } from './recipes/plan';
export type { Plan } from './train/plan';
// evaluation, hard-negative mining, reranker teacher scores
export { evaluateBeir, formatResultsTable, retrieveBeir } from './eval/beir';
export type { BeirEvalOptions, EvalResults } from './eval/beir';
export { loadBeir, loadBeirQueries } from './eval/data';
export type { BeirDataset } from './eval/data';
export { detectEvalData } from './eval/datasets';
export type { EvalDataSpec, EvalFormat } from './eval/datasets';
export { evaluateDatasets, formatMultiTable } from './eval/multi';
export type { DatasetResult, MultiEvalOptions, MultiResults } from './eval/multi';
export { loadHfJsonl } from './eval/hf-jsonl';
export { loadXquadR } from './eval/xquad';
export { evaluateTatoeba } from './eval/bitext';
export { mineHardNegatives, readCandidatePool, readTrainingJsonl } from './eval/mine';
export type { MineOptions, TrainingExample } from './eval/mine';
export { scorePairs, scoreTrainingFile } from './eval/score';
export type { ScoreFileStats, ScoreOptions } from './eval/score';
// errors meant for the user (bad input): one line, no stack
export { UserError } from './util/errors';
