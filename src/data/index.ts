/** Datasets: JSONL → tokenized Arrow (prepare), and bounded-memory batch reading (reader). */
export { prepareDataset, prepareOrReuse, encodeTruncated, PrepareOptions } from './prepare';
export { openDataset, DatasetReader, ReaderOptions, DataBatch, PairBatch, PretrainBatch, Position, BatchShape } from './reader';
export {
  readManifest, checkTokenizer, Manifest, DatasetEntry, BUCKETS, bucketOf, FINETUNE_BATCH_SIZES, UNSUPERVISED_BATCH_SIZES,
} from './manifest';
export { DataFormat, DATA_FORMATS } from './records';
export { sampleNegatives, maybeShuffleText, groupSizeFor } from './sampling';
