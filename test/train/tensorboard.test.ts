/**
 * TensorBoard event files (train.report_to), read back by the tests' own decoder (test/helpers/tensorboard.ts:
 * TFRecord framing with both CRCs checked by a bitwise CRC32C, Event / Summary / SessionLog decoded by
 * protobufjs from TensorBoard's own field definitions). The same decoder reads a file
 * written by PyTorch's SummaryWriter (fixtures/README.md), whose records the writer reproduces byte for byte.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';
import { crc32c, eventFiles, readEventFile, scalars } from '../helpers/tensorboard';
import { loadStageConfig } from '../../src/recipes/stage-config';
import { encodeEvent, EVENTS_DIR, tfRecord } from '../../src/train/tensorboard';
import { renameGrads, runTraining, Stage, TrainConfig, Trained } from '../../src/train/trainer';

beforeAll(() => useBackend('wasm'));

const base: TrainConfig = {
  learning_rate: 0.1, weight_decay: 0, adam_beta1: 0.9, adam_beta2: 0.999, adam_epsilon: 1e-8, max_grad_norm: 0, schedule: 'linear',
  warmup_ratio: 0, warmup_steps: 0, max_steps: 4, epochs: 1, grad_accum: 1, save_steps: 0, save_total_limit: 0, log_steps: 1, seed: 1,
  fix_position_embedding: false, dist_timeout_s: 60, bf16: false, report_to: ['tensorboard'],
};

/** y = w·x on 8 fixed rows, 4 a batch; a loss part, an evaluation every 2 steps; `crashAt` (0-based step) throws there. */
function toyStage(crashAt?: number): Stage<number> & { saved: Trained[] } {
  const w = tf.variable(tf.zeros([2]));
  const xs = Array.from({ length: 8 }, (_, i) => [i / 8, 1]);
  let pos = { epoch: 0, batch: 0 };
  const saved: Trained[] = [];
  return {
    saved, name: 'toy', params: new Map([['w', w]]),
    batchesPerEpoch: () => 2,
    next: async () => {
      const b = pos.batch;
      pos = b === 1 ? { epoch: pos.epoch + 1, batch: 0 } : { epoch: pos.epoch, batch: 1 };
      return b;
    },
    position: () => pos,
    seek: (p) => (pos = p),
    micro: (b, ctx) => {
      if (ctx.step === crashAt) throw new Error('simulated crash');
      const rows = xs.slice(b * 4, b * 4 + 4);
      const { value, grads } = tf.variableGrads(() => {
        const pred = tf.sum(tf.mul(tf.tensor2d(rows), w), 1);
        return tf.mean(tf.square(tf.sub(pred, tf.tensor1d(rows.map(([x]) => 3 * x - 1))))) as tf.Scalar;
      }, [w]);
      return { loss: value, grads: renameGrads(new Map([['w', w]]), grads), parts: { loss_mse: tf.scalar(value.dataSync()[0] / 2) }, tokens: rows.length };
    },
    evaluate: {
      due: (step) => step % 2 === 0,
      run: async () => {
        const d = w.dataSync()[0];
        return { metrics: { 'eval/dense/ndcg@10': 1 / (1 + Math.abs(d - 3)), 'eval/all/mrr@10': 0.5 }, score: -Math.abs(d - 3) };
      },
    },
    saveFinal: async (dir, trained) => {
      saved.push(trained);
      fs.mkdirSync(dir, { recursive: true });
    },
  };
}

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'm3-tensorboard-'));
const metricRows = (out: string) => fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

test('the test decoder reads a PyTorch SummaryWriter file, and the writer encodes its scalar events byte for byte', () => {
  expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283); // the CRC32C check value
  const { events, records } = readEventFile(path.join(__dirname, 'fixtures/pytorch-summarywriter.tfevents'));
  expect(events[0].fileVersion).toBe('brain.Event:2');
  const scalarsOf = events.slice(1).map((e) => [e.step, e.summary!.value[0].tag, e.summary!.value[0].simpleValue]);
  expect(scalarsOf).toEqual([[1, 'train/loss', 0.5], [2, 'train/loss', 0.25], [3, 'train/loss', 0.125], [3, 'eval/dense/ndcg@10', 0.75]]);
  events.slice(1).forEach((e, i) => {
    const v = e.summary!.value[0];
    expect(tfRecord(encodeEvent(e.wallTime, e.step, { scalar: [v.tag, v.simpleValue] })).equals(records[i + 1])).toBe(true);
  });
});

test('report_to tensorboard: every scalar of metrics.jsonl under HF Trainer tags, evaluations per mode, as the run goes', async () => {
  const out = tmp();
  const stage = toyStage();
  await runTraining(stage, base, { outputDir: out });
  const files = eventFiles(out);
  expect(files.map((f) => path.basename(f))).toEqual([expect.stringMatching(new RegExp(`^events\\.out\\.tfevents\\.\\d{10}\\.${os.hostname().replace(/\./g, '\\.')}\\.${process.pid}\\.\\d+$`))]);
  const first = readEventFile(files[0]).events[0];
  expect(first).toMatchObject({ fileVersion: 'brain.Event:2', sourceMetadata: { writer: 'm3-train' } });
  expect(Math.abs(first.wallTime - Date.now() / 1000)).toBeLessThan(600);
  const { steps, values } = scalars(out);
  const rows = metricRows(out);
  const tag = (k: string) => (k.includes('/') ? k : `train/${k === 'lr' ? 'learning_rate' : k}`);
  let count = 0;
  for (const row of rows) {
    for (const [k, v] of Object.entries(row)) {
      if (k === 'step' || typeof v !== 'number') continue;
      expect(values.get(`${tag(k)}@${row.step}`)).toBe(Math.fround(v));
      count++;
    }
  }
  expect([...values.keys()].length).toBe(count); // nothing but the rows' numbers
  expect([...steps.keys()].sort()).toEqual(['eval/all/mrr@10', 'eval/dense/ndcg@10', 'train/epoch', 'train/grad_norm', 'train/learning_rate', 'train/loss', 'train/loss_mse', 'train/step_s', 'train/tokens_per_s']);
  expect(steps.get('train/loss')).toEqual([1, 2, 3, 4]);
  expect(steps.get('eval/dense/ndcg@10')).toEqual([2, 4]);
  // the final model's card gets the last evaluation; the best model's, its own
  const lastEval = rows.filter((row) => row.step === 4 && 'eval/dense/ndcg@10' in row).pop()!;
  expect(stage.saved[stage.saved.length - 1]).toEqual({ steps: 4, eval: { 'eval/dense/ndcg@10': lastEval['eval/dense/ndcg@10'], 'eval/all/mrr@10': 0.5 } });

  // default off: no runs/ dir
  const off = tmp();
  await runTraining(toyStage(), { ...base, report_to: ['none'] }, { outputDir: off });
  expect(fs.existsSync(path.join(off, EVENTS_DIR))).toBe(false);
});

test('resume after a crash (a record cut mid-write included) shows every step once; a finished run stays finished', async () => {
  const out = tmp();
  const cfg = { ...base, max_steps: 7, save_steps: 3 };
  await expect(runTraining(toyStage(5), cfg, { outputDir: out })).rejects.toThrow('simulated crash');
  expect(scalars(out).steps.get('train/loss')).toEqual([1, 2, 3, 4, 5]); // written as the run went
  // a kill -9 in the middle of a write leaves a cut record behind
  const [crashed] = eventFiles(out);
  const whole = tfRecord(encodeEvent(1, 6, { scalar: ['train/loss', 1] }));
  fs.appendFileSync(crashed, whole.subarray(0, 20));

  const resumed = toyStage();
  const r = await runTraining(resumed, cfg, { outputDir: out, resume: true });
  expect(r).toMatchObject({ steps: 7, stoppedEarly: false });
  const files = eventFiles(out);
  expect(files.length).toBe(2);
  expect(files[0]).toBe(crashed); // rewritten in place: its steps up to the checkpoint, no cut record
  const { events: after } = readEventFile(files[1]);
  expect(after[0].fileVersion).toBe('brain.Event:2');
  expect(after[1]).toMatchObject({ step: 4, sessionLog: { status: 'START' } }); // purges 4.. in a TensorBoard that read them
  const { steps } = scalars(out);
  for (const [t, s] of steps) {
    if (t.startsWith('train/')) expect(s).toEqual([1, 2, 3, 4, 5, 6, 7]);
    else expect(s).toEqual([2, 4, 6]);
  }
  expect(metricRows(out).filter((row) => 'loss' in row).map((row) => row.step)).toEqual([1, 2, 3, 4, 5, 6, 7]);

  const before = files.map((f) => fs.readFileSync(f));
  const again = await runTraining(toyStage(), cfg, { outputDir: out, resume: true });
  expect(again.alreadyFinished).toBe(true);
  expect(eventFiles(out).map((f) => fs.readFileSync(f))).toEqual(before);

  // a fresh run (no --resume) starts the event files anew, as metrics.jsonl
  fs.rmSync(path.join(out, 'finished.json'));
  await runTraining(toyStage(), { ...cfg, max_steps: 2 }, { outputDir: out });
  expect(eventFiles(out).length).toBe(1);
  expect(scalars(out).steps.get('train/loss')).toEqual([1, 2]);
});

test('a resume without report_to still drops the events after the checkpoint, as metrics.jsonl drops its rows', async () => {
  const out = tmp();
  const cfg = { ...base, max_steps: 6, save_steps: 3 };
  await expect(runTraining(toyStage(4), cfg, { outputDir: out })).rejects.toThrow('simulated crash');
  expect(scalars(out).steps.get('train/loss')).toEqual([1, 2, 3, 4]);
  await runTraining(toyStage(), { ...cfg, report_to: [] }, { outputDir: out, resume: true });
  expect(eventFiles(out)).toHaveLength(1);
  expect(scalars(out).steps.get('train/loss')).toEqual([1, 2, 3]);
});

test('train.report_to: a list, its one-word form, none, and what is refused', () => {
  const config = path.resolve(__dirname, '../../configs/tiny/unified.yaml');
  const load = (v: string) => loadStageConfig(config, [`train.report_to=${v}`]).train.report_to;
  expect(loadStageConfig(config).train.report_to).toEqual(['none']);
  expect(load('tensorboard')).toEqual(['tensorboard']);
  expect(load('[tensorboard]')).toEqual(['tensorboard']);
  expect(load('none')).toEqual(['none']);
  expect(load('all')).toEqual(['all']);
  expect(() => load('[none, tensorboard]')).toThrow("key 'train.report_to' lists 'none' beside tensorboard; write one or the other");
  expect(() => load('wandb')).toThrow("key 'train.report_to' must be one of tensorboard, all, none, got \"wandb\"");
  expect(() => load('tensorbord')).toThrow("(did you mean 'tensorboard'?)");
});
