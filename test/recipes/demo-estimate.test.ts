import * as path from 'path';
import { EVAL_TEXTS, estimateLine, estimateSeconds, MEASURED_TIMES } from '../../src/recipes/demo-estimate';
import { pipelineStages } from '../../src/recipes/pipeline';

const PIPELINE = path.resolve(__dirname, '../../configs/demo/pipeline.yaml');

describe('the demo time estimate', () => {
  test('is the stages\' steps times the measured seconds per step of their kind, plus the evaluations', () => {
    const stages = pipelineStages(PIPELINE, ['train.max_steps=10', 'unified:train.max_steps=4']);
    const t = MEASURED_TIMES['torch/cpu'];
    const work = { stages, evaluations: 4, evalTexts: EVAL_TEXTS };
    expect(estimateSeconds('torch/cpu', work)).toBeCloseTo(10 * t.perStep.retromae + 10 * t.perStep.pairs + 4 * t.perStep.unified + 4 * t.perEval, 9);
    // a smaller evaluation set costs proportionally less
    expect(estimateSeconds('torch/cpu', { ...work, evalTexts: EVAL_TEXTS / 4 })).toBeCloseTo(10 * t.perStep.retromae + 10 * t.perStep.pairs + 4 * t.perStep.unified + t.perEval, 9);
    expect(estimateSeconds('wasm/cpu', work)!).toBeGreaterThan(estimateSeconds('torch/cpu', work)!);
    expect(estimateSeconds('torch/cuda', work)).toBeNull();
  });

  test('names the backend; off torch it also gives the torch figure and points to the libtorch install line', () => {
    const w = { stages: pipelineStages(PIPELINE, []), evaluations: 4, evalTexts: EVAL_TEXTS };
    const torch = estimateLine('torch/cpu', w);
    expect(torch).toMatch(/^demo: backend torch\/cpu; about \d+ min on 2 cores \(measured step and evaluation times/);
    expect(torch).not.toContain('npm install');
    const wasm = estimateLine('wasm/cpu', w);
    expect(wasm).toMatch(/^demo: backend wasm\/cpu; about \d+ min on 2 cores .*; torch on the same cores: about \d+ min — see npm install's line on libtorch\n$/);
    expect(estimateLine('torch/cuda', w)).toMatch(/^demo: backend torch\/cuda; no measured demo time for it \(torch on 2 CPU cores: about \d+ min\)\n$/);
  });
});
