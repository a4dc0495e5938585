/**
 * The fused encoder layer (one native op each way, native/src/layer.cc) against the composite layer of
 * src/model/encoder.ts on the cpu backend: the output and the gradients of the input and of all 16
 * parameters, BERT and XLM-R settings, with and without padding, dropout off and on (the same masks); and
 * that the layer's libtorch graph never outlives its use.
 */
import * as tf from '@tensorflow/tfjs';
import { addon } from '../../../src/backend/torch/addon';
import { torchFusedOps } from '../../../src/backend/torch/fused';
import { setBf16Autocast } from '../../../src/backend';
import { ENCODER_LAYER_WEIGHTS, FLOAT32_MIN, setFusedOps } from '../../../src/backend/ops';
import { parseConfig } from '../../../src/model/config';
import { Dropout, encoderLayer } from '../../../src/model/encoder';
import { describeTorch, expectSame, rand, runOn } from './setup';

const [B, L, H, FF] = [2, 6, 12, 20];
const shapes: Record<string, number[]> = {
  'attention.self.query.weight': [H, H], 'attention.self.key.weight': [H, H], 'attention.self.value.weight': [H, H], 'attention.output.dense.weight': [H, H],
  'intermediate.dense.weight': [FF, H], 'intermediate.dense.bias': [FF], 'output.dense.weight': [H, FF],
};
const shapeOf = (n: string) => shapes[n] ?? [H];

const config = (family: 'bert' | 'xlm-roberta', dropout: boolean) => parseConfig({
  model_type: family, vocab_size: 50, hidden_size: H, num_hidden_layers: 1, num_attention_heads: 3, intermediate_size: FF,
  max_position_embeddings: 40, layer_norm_eps: family === 'bert' ? 1e-12 : 1e-5, hidden_dropout_prob: dropout ? 0.2 : 0, attention_probs_dropout_prob: dropout ? 0.3 : 0,
});

/** The second row's last two tokens padded, as encoder.ts's additiveMask. */
const paddingMask = () => tf.tensor4d([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, FLOAT32_MIN, FLOAT32_MIN], [B, 1, 1, L]);

/** Output, Σ(y·r) and its gradients for x and every parameter. */
function layerValueAndGrads(family: 'bert' | 'xlm-roberta', padded: boolean, dropout: boolean): () => tf.Tensor[] {
  return () => {
    const cfg = config(family, dropout);
    const x = rand([B, L, H], 1);
    // LayerNorm gains near 1, everything else small and varied
    const weights = ENCODER_LAYER_WEIGHTS.map((n, i) => (/LayerNorm\.weight$/.test(n) ? tf.add(rand(shapeOf(n), 10 + i, 0.2), 1) : rand(shapeOf(n), 10 + i, 0.5)));
    const mask = padded ? paddingMask() : null;
    const layer = (xx: tf.Tensor, ws: tf.Tensor[]) =>
      encoderLayer(cfg, new Map(ENCODER_LAYER_WEIGHTS.map((n, i) => [n, ws[i]])), '', [xx as tf.Tensor3D], [mask], [new Dropout(dropout ? 7 : undefined, 3)])[0];
    const r = rand([B, L, H], 99);
    const { value, grads } = tf.valueAndGrads((...args: tf.Tensor[]) => tf.sum(tf.mul(layer(args[0], args.slice(1)), r)))([x, ...weights]);
    return [layer(x, weights), value, ...grads];
  };
}

/** Two batches of different lengths through one layer op (queries and passages), the second padded. */
function twoBatchValueAndGrads(): tf.Tensor[] {
  const cfg = config('xlm-roberta', true);
  const xs = [rand([B, L, H], 1), rand([3, 4, H], 2)];
  const weights = ENCODER_LAYER_WEIGHTS.map((n, i) => rand(shapeOf(n), 10 + i, 0.5));
  const masks = [null, tf.tensor4d([0, 0, 0, 0, 0, 0, 0, FLOAT32_MIN, 0, 0, FLOAT32_MIN, FLOAT32_MIN], [3, 1, 1, 4])];
  const layer = (ins: tf.Tensor[], ws: tf.Tensor[]) =>
    encoderLayer(cfg, new Map(ENCODER_LAYER_WEIGHTS.map((n, i) => [n, ws[i]])), '', ins as tf.Tensor3D[], masks, [new Dropout(7, 0), new Dropout(8, 2)]);
  const rs = [rand([B, L, H], 98), rand([3, 4, H], 99)];
  const { value, grads } = tf.valueAndGrads((...args: tf.Tensor[]) => {
    const ys = layer(args.slice(0, 2), args.slice(2));
    return tf.add(tf.sum(tf.mul(ys[0], rs[0])), tf.sum(tf.mul(ys[1], rs[1])));
  })([...xs, ...weights]);
  return [...layer(xs, weights), value, ...grads];
}

const tol = { atol: 5e-5, rtol: 5e-4 };

describeTorch('fused encoder layer vs the composite layer', () => {
  beforeAll(() => setFusedOps('torch', torchFusedOps));
  afterAll(() => tf.setBackend('cpu'));

  test.each([
    ['bert', false, false],
    ['bert', true, true],
    ['xlm-roberta', true, false],
    ['xlm-roberta', false, true],
  ] as const)('%s, padding %s, dropout %s: output and the gradients of x and all 16 parameters match', async (family, padded, dropout) => {
    const fused = await runOn('torch', layerValueAndGrads(family, padded, dropout));
    expect(fused).toHaveLength(2 + 1 + ENCODER_LAYER_WEIGHTS.length);
    expectSame(fused, await runOn('cpu', layerValueAndGrads(family, padded, dropout)), `${family} layer`, tol);
  });

  test('two batches of different lengths in one op: outputs, input gradients and the summed parameter gradients match', async () => {
    const fused = await runOn('torch', twoBatchValueAndGrads);
    expect(fused).toHaveLength(2 + 1 + 2 + ENCODER_LAYER_WEIGHTS.length);
    expectSame(fused, await runOn('cpu', twoBatchValueAndGrads), 'two batches', tol);
  });

  test('under bf16 autocast every GEMM of the layer, forward and backward, takes bf16: output and gradients near float32\'s, gradients float32', async () => {
    const gemms = new Map<boolean, { op: string; dtypes: string[] }[]>();
    const run = async (bf16: boolean) => {
      await tf.setBackend('torch');
      setBf16Autocast(bf16);
      addon().recordGemms(true);
      try {
        return await runOn('torch', layerValueAndGrads('xlm-roberta', true, false));
      } finally {
        gemms.set(bf16, addon().recordGemms(false) ?? []);
        setBf16Autocast(false);
      }
    };
    const [low, full] = [await run(true), await run(false)];
    // forward: 6 linear layers and 2 attention products; backward: 2 per linear layer and 4 for attention
    for (const bf16 of [true, false]) {
      const calls = gemms.get(bf16)!;
      expect(calls.filter(({ op }) => op === 'aten::bmm').length).toBeGreaterThanOrEqual(6);
      expect(calls.filter(({ op }) => op !== 'aten::bmm').length).toBeGreaterThanOrEqual(18);
      for (const { op, dtypes } of calls) expect([op, ...dtypes]).toEqual([op, ...dtypes.map(() => (bf16 ? 'BFloat16' : 'Float'))]);
    }
    expect(low.map((r) => r.dtype)).toEqual(full.map((r) => r.dtype));
    const relErr = (i: number) => {
      const num = low[i].values.reduce((a, v, j) => a + (v - full[i].values[j]) ** 2, 0);
      return Math.sqrt(num / full[i].values.reduce((a, v) => a + v * v, 0));
    };
    // [y, value, dx, ...weights]: the key bias's gradient is 0 up to rounding (softmax ignores a shift per row)
    const keyBias = 3 + ENCODER_LAYER_WEIGHTS.indexOf('attention.self.key.bias');
    for (let i = 0; i < full.length; i++) if (i !== keyBias) expect(relErr(i)).toBeLessThan(0.05);
    expect(relErr(0)).toBeGreaterThan(1e-5); // bf16 products round: float32 would agree to ~1e-7
  });

  test('one kernel per layer each way: no linear, attention or LayerNorm kernel runs', async () => {
    await tf.setBackend('torch');
    const spy = jest.spyOn(tf.engine(), 'runKernel');
    try {
      tf.dispose(tf.tidy(layerValueAndGrads('xlm-roberta', true, false)));
      const names = spy.mock.calls.map((c) => c[0]);
      expect(names.filter((n) => n === 'TorchEncoderLayer')).toHaveLength(2); // valueAndGrads' forward, then the output alone
      expect(names.filter((n) => n === 'TorchEncoderLayerGrad')).toHaveLength(1);
      expect(names.filter((n) => /^Torch(Linear|Attention|LayerNorm|Gelu)/.test(n))).toEqual([]);
    } finally {
      spy.mockRestore();
    }
  });

  test('the layer\'s ATen calls reach atenCalls only while setLayerAtenCounting is on: forward and backward, each operator once', async () => {
    await tf.setBackend('torch');
    const { hostCounts, setLayerAtenCounting } = await import('../../../src/backend/torch');
    const atenOf = () => {
      const before = hostCounts().atenCalls;
      tf.dispose(tf.tidy(layerValueAndGrads('bert', true, false)));
      return hostCounts().atenCalls - before;
    };
    const off = atenOf();
    setLayerAtenCounting(true);
    let on: number;
    try {
      on = atenOf();
    } finally {
      setLayerAtenCounting(false);
    }
    // two forwards and a backward of a layer of 6 linear layers, attention, 2 LayerNorms and GELU: dozens of
    // outermost operators, but not the hundreds their insides (addmm, copies, ...) would add
    expect(on - off).toBeGreaterThan(40);
    expect(on - off).toBeLessThan(400);
    expect(atenOf()).toBe(off); // off again: deterministic, and the hook is gone
  });

  test('no graph outlives its use: evaluation, a tape that never reaches the layer, and training steps leave no native handle', async () => {
    await tf.setBackend('torch');
    const cfg = config('xlm-roberta', true);
    const x = tf.variable(rand([B, L, H], 1));
    const params = new Map(ENCODER_LAYER_WEIGHTS.map((n, i) => [n, tf.variable(rand(shapeOf(n), 10 + i, 0.5))] as [string, tf.Tensor]));
    const mask = paddingMask();
    const layer = (seed?: number) => encoderLayer(cfg, params, '', [x as tf.Tensor3D], [mask], [new Dropout(seed, 0)])[0];
    const handles = () => [addon().liveHandles(), addon().encoderLayerGraphs()];
    const step = () => {
      const { value, grads } = tf.variableGrads(() => tf.sum(layer(5)) as tf.Scalar);
      tf.dispose([value, ...Object.values(grads)]);
    };
    step();
    const before = { handles: handles(), tensors: tf.memory().numTensors };
    expect(before.handles[1]).toBe(0);
    tf.dispose(tf.tidy(() => layer())); // evaluation: no tape
    expect(handles()).toEqual(before.handles);
    // on a tape, but the loss does not depend on the layer: its backward never runs
    const { value, grads } = tf.variableGrads(() => {
      layer(5);
      return tf.sum(tf.square(x)) as tf.Scalar;
    });
    tf.dispose([value, ...Object.values(grads)]);
    expect(handles()).toEqual(before.handles);
    for (let i = 0; i < 3; i++) step();
    expect(handles()).toEqual(before.handles);
    expect(tf.memory().numTensors).toBe(before.tensors);
    tf.dispose([x, mask, ...params.values()]);
  });
});
