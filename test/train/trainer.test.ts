/** The training loop on a toy stage: accumulation, LR schedule, the NaN guard, SIGINT handling. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/backend';
import { listCheckpoints } from '../../src/train/checkpoint';
import { renameGrads, runTraining, Stage, TrainConfig } from '../../src/train/trainer';
import { lrAt } from '../../src/train/schedule';

beforeAll(() => useBackend('wasm'));

const base: TrainConfig = {
  learning_rate: 0.1, weight_decay: 0, adam_beta1: 0.9, adam_beta2: 0.999, adam_epsilon: 1e-8, max_grad_norm: 0, schedule: 'constant',
  warmup_ratio: 0, warmup_steps: 0, max_steps: 4, epochs: 1, grad_accum: 1, save_steps: 0, save_total_limit: 2, log_steps: 1, seed: 1, fix_position_embedding: false, dist_timeout_s: 60, bf16: false, report_to: [],
};

/** y = w·x on fixed rows; batch b is rows [b·n, (b+1)·n) of 8; `poison(step)` makes that step's loss NaN. */
function toyStage(rowsPerBatch: number, poison?: (micro: number) => boolean): Stage<number> & { w: tf.Variable } {
  const w = tf.variable(tf.zeros([2]));
  const xs = Array.from({ length: 8 }, (_, i) => [i / 8, 1]);
  const ys = xs.map(([x]) => 3 * x - 1);
  const perEpoch = 8 / rowsPerBatch;
  let pos = { epoch: 0, batch: 0 };
  let micro = 0;
  return {
    w, name: 'toy', params: new Map([['w', w]]),
    batchesPerEpoch: () => perEpoch,
    next: async () => {
      const b = pos.batch;
      pos = pos.batch + 1 >= perEpoch ? { epoch: pos.epoch + 1, batch: 0 } : { epoch: pos.epoch, batch: pos.batch + 1 };
      return b;
    },
    position: () => pos,
    seek: (p) => (pos = p),
    micro: (b) => {
      const bad = poison?.(micro++) ?? false;
      const rows = xs.slice(b * rowsPerBatch, (b + 1) * rowsPerBatch);
      const { value, grads } = tf.variableGrads(() => {
        const pred = tf.sum(tf.mul(tf.tensor2d(rows), w), 1);
        const loss = tf.mean(tf.square(tf.sub(pred, tf.tensor1d(ys.slice(b * rowsPerBatch, (b + 1) * rowsPerBatch)))));
        return (bad ? tf.mul(loss, NaN) : loss) as tf.Scalar;
      }, [w]);
      return { loss: value, grads: renameGrads(new Map([['w', w]]), grads), tokens: rows.length };
    },
    saveFinal: async (dir) => {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'w.json'), JSON.stringify(Array.from(w.dataSync())));
    },
  };
}

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'm3-trainer-'));

describe('training loop', () => {
  test('2 micro-batches of 4 rows accumulate to the gradient of one batch of 8', async () => {
    const [o1, o2] = [tmp(), tmp()];
    const whole = toyStage(8);
    await runTraining(whole, { ...base, max_steps: 3 }, { outputDir: o1 });
    const halves = toyStage(4);
    await runTraining(halves, { ...base, max_steps: 3, grad_accum: 2 }, { outputDir: o2 });
    const a = whole.w.dataSync();
    const b = halves.w.dataSync();
    for (let i = 0; i < 2; i++) expect(b[i]).toBeCloseTo(a[i], 6);
    // Adam hides a scale error; the logged pre-clip gradient norms do not
    const norms = (o: string) => fs.readFileSync(path.join(o, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).grad_norm);
    norms(o2).forEach((n: number, i: number) => expect(n).toBeCloseTo(norms(o1)[i], 5));
  });

  test('metrics follow the linear warmup/decay schedule', async () => {
    const out = tmp();
    await runTraining(toyStage(8), { ...base, schedule: 'linear', warmup_steps: 2, max_steps: 5 }, { outputDir: out });
    const lrs = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).lr);
    expect(lrs).toEqual([0, 0.05, 0.1, 0.1 * 2 / 3, 0.1 / 3].map((v) => expect.closeTo(v, 10)));
    expect(lrs).toEqual([0, 1, 2, 3, 4].map((k) => expect.closeTo(lrAt('linear', 0.1, k, 2, 5), 12)));
  });

  test('a non-finite loss stops the run, keeps the last good checkpoint and names the step', async () => {
    const out = tmp();
    const stage = toyStage(8, (m) => m === 3);
    await expect(runTraining(stage, { ...base, max_steps: 6, save_steps: 2 }, { outputDir: out }))
      .rejects.toThrow(`toy: non-finite loss at step 4; stopped without applying it. Last good checkpoint: ${path.join(out, 'checkpoints', 'step-2')} (resume with --resume)`);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2]);
    expect(Array.from(stage.w.dataSync()).every(Number.isFinite)).toBe(true);
    expect(fs.existsSync(path.join(out, 'final'))).toBe(false);
  });

  test('SIGINT finishes the step, writes a checkpoint and returns', async () => {
    const out = tmp();
    const stage = toyStage(8);
    const micro = stage.micro;
    stage.micro = (b, ctx) => {
      if (ctx.step === 1) process.emit('SIGINT', 'SIGINT');
      return micro(b, ctx);
    };
    const r = await runTraining(stage, { ...base, max_steps: 10 }, { outputDir: out });
    expect(r).toMatchObject({ steps: 2, stoppedEarly: true });
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2]);
  });
});
