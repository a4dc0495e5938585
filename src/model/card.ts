/**
 * The model card (`README.md`) in every saved model dir and `m3 export` dir, in the Hugging Face Hub's
 * format: YAML front matter (library_name, pipeline_tag, tags, base_model, datasets, license) and a body
 * with what was trained (stages, steps, data files with their sha256, loss settings), the evaluation table,
 * and how to load the model in m3-train, FlagEmbedding, sentence-transformers and transformers.js.
 *
 * The card is rendered from the dir's training record (`m3_training.json`, beside it): a stage started from
 * a dir that has one carries its stages on, so a pipeline's last model describes the whole pipeline.
 *
 * library_name: `sentence-transformers` for model dirs (they carry modules.json and load there unchanged,
 * and it is a library the Hub indexes: a "Use this model" snippet and the sentence-similarity widget; as
 * BAAI/bge-m3's own card), `transformers.js` for ONNX exports (what Xenova's ONNX repos declare).
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';

export const CARD_FILE = 'README.md';
export const RECORD_FILE = 'm3_training.json';

export interface StageRecord {
  /** retromae | pairs | unified. */
  stage: string;
  steps: number;
  /** The model it started from, as named (a Hub id, else a folder name), or null when from scratch. */
  from: string | null;
  data: { file: string; sha256: string; rows: number }[];
  /** The settings that define the stage's objective (loss or masking, lengths, batch, learning rate). */
  settings: Record<string, unknown>;
  /** `eval/<mode>/<metric>` of the saved model, when the stage evaluated. */
  eval: Record<string, number> | null;
}

export interface TrainingRecord {
  base_model: string | null;
  license: string | null;
  datasets: string[];
  stages: StageRecord[];
}

/**
 * The Hub id a model reference names: `org/name` (an `@revision` dropped), or the repo of a Hugging Face
 * cache snapshot path (…/models--org--name/snapshots/<commit>); null for any other local path.
 */
export function hubIdOf(ref: string, kind: 'models' | 'datasets' = 'models'): string | null {
  const cached = new RegExp(`(?:^|[\\\\/])${kind}--([^\\\\/]+?)--([^\\\\/]+)[\\\\/]snapshots(?:[\\\\/]|$)`).exec(ref);
  if (cached) return `${cached[1]}/${cached[2]}`;
  const id = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(?:@\S+)?$/.exec(ref);
  return id && !path.isAbsolute(ref) && !fs.existsSync(ref) && !ref.startsWith('.') ? id[1] : null;
}

/** The training record of a model dir, or null when it has none (or an unreadable one: the card then starts anew). */
export function readTrainingRecord(dir: string | undefined): TrainingRecord | null {
  if (!dir) return null;
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, RECORD_FILE), 'utf8')) as TrainingRecord;
    return Array.isArray(r?.stages) ? r : null;
  } catch {
    return null;
  }
}

/** The record of a model trained by `stage` from `init` (a dir, a Hub id, or nothing), carrying `init`'s own record on. */
export function extendRecord(init: string | undefined, stage: Omit<StageRecord, 'from'>, opts: { license?: string; datasets?: string[] }): TrainingRecord {
  const prior = readTrainingRecord(init);
  const base = prior?.base_model ?? (init ? hubIdOf(init) : null);
  const last = prior?.stages[prior.stages.length - 1];
  const from = !init ? null : last ? `stage ${prior!.stages.length} (${last.stage})` : hubIdOf(init) ?? path.basename(init);
  const datasets = [...new Set([...(prior?.datasets ?? []), ...(opts.datasets ?? [])])];
  return { base_model: base, license: opts.license ?? prior?.license ?? null, datasets, stages: [...(prior?.stages ?? []), { ...stage, from }] };
}

export interface CardModel {
  /** config.json of the model. */
  config: Record<string, unknown>;
  /** ColBERT width when the model has the M3 heads, else null. */
  colbertDim: number | null;
}

/** The card's text: front matter, then the body. `onnx` is an `m3 export` dir (its `files` named in the body). */
export function modelCard(rec: TrainingRecord, model: CardModel, onnx?: { files: string[] }): string {
  const heads = model.colbertDim !== null;
  const contrastive = rec.stages.some((s) => s.stage !== 'retromae');
  const front: Record<string, unknown> = {
    library_name: onnx ? 'transformers.js' : 'sentence-transformers',
    pipeline_tag: onnx || !contrastive ? 'feature-extraction' : 'sentence-similarity',
    tags: ['m3-train', ...(onnx ? ['onnx'] : ['sentence-transformers', 'safetensors']), 'feature-extraction', ...(contrastive ? ['sentence-similarity'] : []), ...(heads ? ['bge-m3', 'colbert', 'sparse'] : [])],
    ...(rec.base_model ? { base_model: rec.base_model } : {}),
    ...(rec.datasets.length ? { datasets: rec.datasets } : {}),
    ...(rec.license ? { license: rec.license } : {}),
  };
  return `---\n${YAML.stringify(front)}---\n\n${[
    title(rec, model, heads, onnx),
    training(rec),
    evaluation(rec),
    usage(heads, onnx),
  ].filter(Boolean).join('\n\n')}\n`;
}

function title(rec: TrainingRecord, model: CardModel, heads: boolean, onnx?: { files: string[] }): string {
  const hidden = Number(model.config.hidden_size);
  const from = rec.base_model ? ` from [${rec.base_model}](https://huggingface.co/${rec.base_model})` : '';
  const outputs = heads
    ? `three retrieval outputs: a dense CLS vector (${hidden} dims, L2-normalised), sparse lexical weights per token, and multi-vector ColBERT vectors (${model.colbertDim} dims)`
    : `a dense CLS vector (${hidden} dims, L2-normalised)`;
  const lines = [
    `# ${rec.base_model ? `${rec.base_model.split('/').pop()} (m3-train)` : 'M3 embedding model (m3-train)'}`,
    '',
    `A ${model.config.model_type ?? 'transformer'} text encoder (${model.config.num_hidden_layers} layers, hidden size ${hidden}, up to ${model.config.max_position_embeddings} positions) trained with m3-train through the BGE-M3 recipe${from}, with ${outputs}.`,
  ];
  if (onnx) lines.push('', `ONNX export (\`m3 export\`): ${onnx.files.map((f) => `\`${f}\``).join(', ')}; the PyTorch-format weights are in the model dir it was exported from.`);
  return lines.join('\n');
}

function training(rec: TrainingRecord): string {
  if (!rec.stages.length) return '';
  const out = ['## Training', '', '| # | stage | steps | started from |', '|---|---|---|---|'];
  rec.stages.forEach((s, i) => out.push(`| ${i + 1} | ${s.stage} | ${s.steps} | ${s.from ?? 'random initialisation'} |`));
  rec.stages.forEach((s, i) => {
    out.push('', `### ${i + 1}. ${s.stage}`, '', '| data file | rows | sha256 |', '|---|---|---|');
    for (const d of s.data) out.push(`| ${d.file} | ${d.rows} | \`${d.sha256}\` |`);
    out.push('', '```yaml', YAML.stringify(s.settings).trimEnd(), '```');
  });
  return out.join('\n');
}

function evaluation(rec: TrainingRecord): string {
  const last = [...rec.stages].reverse().find((s) => s.eval && Object.keys(s.eval).length);
  if (!last?.eval) return '';
  const rows = new Map<string, Map<string, number>>();
  for (const [k, v] of Object.entries(last.eval)) {
    const [, mode, metric] = k.split('/');
    if (!metric) continue;
    if (!rows.has(mode)) rows.set(mode, new Map());
    rows.get(mode)!.set(metric, v);
  }
  const metrics = [...new Set([...rows.values()].flatMap((m) => [...m.keys()]))];
  return ['## Evaluation', '', `After stage ${rec.stages.indexOf(last) + 1} (${last.stage}), on its evaluation set:`, '',
    `| mode | ${metrics.join(' | ')} |`, `|---|${metrics.map(() => '---|').join('')}`,
    ...[...rows].map(([mode, m]) => `| ${mode} | ${metrics.map((x) => (m.has(x) ? m.get(x)!.toFixed(4) : '')).join(' | ')} |`)].join('\n');
}

function usage(heads: boolean, onnx?: { files: string[] }): string {
  const dir = onnx ? 'path/to/onnx-export' : 'path/to/model';
  // the PyTorch-format weights: this dir, or for an export the model dir it came from
  const weights = 'path/to/model';
  const flag = heads
    ? ['from FlagEmbedding import BGEM3FlagModel', '', `model = BGEM3FlagModel("${weights}", use_fp16=True)`,
      'out = model.encode(["what is BGE M3?"], return_dense=True, return_sparse=True, return_colbert_vecs=True)',
      'out["dense_vecs"], out["lexical_weights"], out["colbert_vecs"]']
    : ['from FlagEmbedding import FlagModel', '', `model = FlagModel("${weights}", pooling_method="cls")`, 'vecs = model.encode(["what is BGE M3?"])'];
  return [
    '## Usage',
    '',
    onnx ? '`path/to/onnx-export` is this folder (or the Hub id it is uploaded to); `path/to/model` is the model dir it was exported from.'
      : '`path/to/model` is this folder, or the Hub id it is uploaded to.',
    '',
    '### m3-train',
    '',
    '```sh',
    `npx m3 encode --model ${weights} --input texts.jsonl --output vecs.jsonl --return ${heads ? 'dense,sparse,colbert' : 'dense'}`,
    `npx m3 export --model ${weights} --output path/to/onnx-export   # ONNX for transformers.js`,
    '```',
    '',
    '### FlagEmbedding',
    '',
    '```python',
    ...flag,
    '```',
    '',
    '### sentence-transformers',
    '',
    '```python',
    'from sentence_transformers import SentenceTransformer',
    '',
    `model = SentenceTransformer("${dir}"${onnx ? ', backend="onnx"' : ''})`,
    'vecs = model.encode(["what is BGE M3?"])  # CLS pooling, L2-normalised (modules.json)',
    '```',
    '',
    '### transformers.js',
    '',
    ...(onnx ? [] : ['From the ONNX export of this model (`m3 export`, above):', '']),
    '```js',
    "import { pipeline } from '@huggingface/transformers';",
    '',
    "const extractor = await pipeline('feature-extraction', 'path/to/onnx-export');",
    "const vecs = await extractor(['what is BGE M3?'], { pooling: 'cls', normalize: true });",
    '```',
  ].join('\n');
}
