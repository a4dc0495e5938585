/**
 * `m3 eval`: retrieval quality of a model per mode (dense, sparse, colbert, hybrids) on one or several
 * datasets, each detected by its layout (src/eval/datasets.ts): BEIR and MIRACL/MLDR-style folders,
 * XQuAD-R (mAP@20) and Tatoeba pairs (bitext accuracy). One BEIR folder keeps the single-dataset output.
 */
import * as path from 'path';
import type { CommandModule } from 'yargs';
import { check, UserError } from '../../util/errors';
import { writeFileAtomic } from '../../util/fsx';
import { hasHeads, openModel } from '../../model/m3';
import { DEFAULT_MAX_LENGTH, DEFAULT_TOP_K, formatResultsTable, parseModes, retrieveBeir, scoreRuns } from '../../eval/beir';
import { detectEvalData, isRetrievalFormat } from '../../eval/datasets';
import { evaluateDatasets, formatMultiTable, multiResultsJson } from '../../eval/multi';
import { loadHfJsonl } from '../../eval/hf-jsonl';
import { DEFAULT_MODE_WEIGHTS, MODES, Mode } from '../../model/scores';
import { formatRunTrec } from '../../eval/trec';
import { CommonArgs, handler } from '../run';

interface EvalArgs extends CommonArgs {
  model: string;
  tokenizer?: string;
  data: string[];
  split: string;
  mcls?: boolean;
  modes?: string;
  weights: string;
  maxLength: number;
  queryMaxLength?: number;
  topK: number;
  batchSize: number;
  maxQueries?: number;
  runFile?: string;
  json?: string;
}

/** The run file of one mode: FILE itself for a single mode, else FILE with ".<mode>" before its extension. */
export function runFileFor(file: string, mode: Mode, modeCount: number): string {
  if (modeCount === 1) return file;
  const ext = path.extname(file);
  return ext ? `${file.slice(0, -ext.length)}.${mode}${ext}` : `${file}.${mode}`;
}

export function parseWeights(spec: string): [number, number, number] {
  const w = spec.split(',').map((s) => Number(s.trim()));
  check(w.length === 3 && w.every((x) => Number.isFinite(x)), `--weights must be three comma-separated numbers (dense,sparse,colbert), got '${spec}'`);
  return w as [number, number, number];
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'Evaluate retrieval on BEIR / MIRACL / MLDR folders (nDCG@10, Recall@100, MRR@10 as trec_eval computes them), XQuAD-R (mAP@20) and Tatoeba (bitext accuracy)',
  builder: (y) => y
    .option('model', { type: 'string', demandOption: true, describe: 'model dir (HF / FlagEmbedding / m3 layout) or Hub id org/name[@revision]' })
    .option('tokenizer', { type: 'string', describe: 'tokenizer dir or Hub id (default: the model dir)' })
    .option('data', {
      type: 'string', array: true, demandOption: true,
      describe: 'dataset(s), each detected by layout: a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv); ' +
        'a MIRACL/MLDR Hugging Face folder (corpus.jsonl[.gz] of {docid,title,text}, <split>.jsonl of {query_id,query,positive_passages}, or qrels/<split>.tsv); ' +
        'an XQuAD-R <lang>.json (that language\'s pool) or a folder of them (all languages\' pool); a Tatoeba pair tatoeba.<xxx>-eng.<xxx> with its .eng beside it. Repeat for several',
    })
    .option('split', { type: 'string', default: 'dev', describe: 'split of BEIR (qrels/<split>.tsv) and Hugging Face (<split>.jsonl) folders' })
    .option('modes', { type: 'string', describe: `comma list of ${MODES.join(',')} (FlagEmbedding's sparse+dense and colbert+sparse+dense are accepted; default: all five when the model has M3 heads, else dense)` })
    .option('weights', { type: 'string', default: DEFAULT_MODE_WEIGHTS.join(','), describe: 'dense,sparse,colbert weights of the hybrid modes' })
    .option('max-length', { type: 'number', default: DEFAULT_MAX_LENGTH, describe: 'document truncation in tokens (capped by the model)' })
    .option('query-max-length', { type: 'number', describe: 'query truncation in tokens (default: --max-length)' })
    .option('top-k', { type: 'number', default: DEFAULT_TOP_K, describe: 'documents per query in each run, and the depth of each retriever that hybrids combine' })
    .option('batch-size', { type: 'number', default: 32, describe: 'texts per encoder batch' })
    .option('max-queries', { type: 'number', describe: 'evaluate only the first N judged queries (qrels / file order; XQuAD-R: per language; Tatoeba: the first N pairs)' })
    .option('mcls', { type: 'boolean', describe: 'dense scoring through multiple CLS as m3 encode --mcls (a CLS every 256 tokens; inputs still cut at --max-length): long documents, as the paper\'s MLDR table; dense only' })
    .option('run-file', { type: 'string', describe: 'write TREC runs (full-precision scores, tag m3-<mode>) of one BEIR or Hugging Face folder; with several modes one file per mode, named FILE with .<mode> before the extension' })
    .option('json', { type: 'string', describe: 'write the metrics to this file: {"<mode>": {"ndcg@10", "recall@100", "mrr@10"}} for one BEIR folder, else {"datasets": [{name, format, language, metrics}], "macro": {...}}' })
    .example('$0 eval --model ./bge-m3 --data ./nfcorpus --split dev', 'all modes; a table on stdout')
    .example('$0 eval --model BAAI/bge-m3@main --data ./nfcorpus', 'a Hub model at a revision (branch, tag or commit)')
    .example('$0 eval --model ./m --data ./nfcorpus --modes dense,all --weights 1,0.3,1 --json metrics.json', 'dense and the three-way hybrid')
    .example('$0 eval --model ./m --data ./nfcorpus --modes dense,sparse --run-file runs/nf.trec', 'writes runs/nf.dense.trec and runs/nf.sparse.trec')
    .example('$0 eval --model ./m --data ./nfcorpus --max-queries 50 --max-length 128', 'a quick look')
    .example('$0 eval --model ./bge-m3 --data miracl/sw --data miracl/te --split dev', 'MIRACL per language (Hugging Face layout), with the macro average')
    .example('$0 eval --model ./bge-m3 --data mldr/zh --split test --modes dense --mcls --max-length 8192', 'MLDR long documents through multiple CLS')
    .example('$0 eval --model ./bge-m3 --data xquad-r/ --data tatoeba.deu-eng.deu --json multi.json', 'XQuAD-R mAP@20 (all languages\' pool) and Tatoeba accuracy') as never,
  handler: handler<EvalArgs>(async (args) => {
    const weights = parseWeights(args.weights);
    const specs = args.data.map((d) => detectEvalData(d));
    const model = await openModel(args.model, { tokenizer: args.tokenizer, requireTokenizer: true });
    const onlyDense = args.mcls || specs.some((s) => !isRetrievalFormat(s.format));
    const modes = args.modes !== undefined ? parseModes(args.modes) : hasHeads(model) && !onlyDense ? [...MODES] : (['dense'] as Mode[]);
    const opts = {
      split: args.split, modes, weights, maxLength: args.maxLength, queryMaxLength: args.queryMaxLength, topK: args.topK,
      batchSize: args.batchSize, maxQueries: args.maxQueries, mcls: args.mcls,
    };
    if (args.runFile && (specs.length !== 1 || !isRetrievalFormat(specs[0].format))) {
      throw new UserError('--run-file writes the runs of one BEIR or Hugging Face folder; give a single such --data');
    }
    if (specs.length === 1 && isRetrievalFormat(specs[0].format)) {
      const spec = specs[0];
      const data = spec.format === 'beir' ? spec.path : loadHfJsonl(spec.path, args.split, { maxQueries: args.maxQueries });
      const { dataset, runs, seconds } = await retrieveBeir(model, data, opts);
      const results = scoreRuns(dataset, runs);
      process.stderr.write(`${args.data[0]} (${args.split}): ${dataset.queryIds.length} queries, ${dataset.corpus.ids.length} documents; ` +
        `encoding ${(seconds.encodeQueries + seconds.encodeCorpus).toFixed(1)} s, search ${seconds.search.toFixed(2)} s\n`);
      if (args.runFile) {
        for (const mode of modes) writeFileAtomic(path.resolve(runFileFor(args.runFile, mode, modes.length)), formatRunTrec(runs[mode]!, `m3-${mode}`));
      }
      if (spec.format === 'beir') {
        if (args.json) writeFileAtomic(path.resolve(args.json), JSON.stringify(results, null, 2) + '\n');
        process.stdout.write(formatResultsTable(results));
        return;
      }
      const multi = { datasets: [{ name: spec.name, format: spec.format, language: spec.language, metrics: results }], macro: results };
      if (args.json) writeFileAtomic(path.resolve(args.json), JSON.stringify(multiResultsJson(multi), null, 2) + '\n');
      process.stdout.write(formatMultiTable(multi));
      return;
    }
    const multi = await evaluateDatasets(model, specs, opts);
    if (args.json) writeFileAtomic(path.resolve(args.json), JSON.stringify(multiResultsJson(multi), null, 2) + '\n');
    process.stdout.write(formatMultiTable(multi));
  }, { backend: true }),
};
