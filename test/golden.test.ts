/**
 * Golden cases from an independent PyTorch implementation (../shared/golden, or M3_GOLDEN_DIR).
 * Every case folder found runs on every available backend, dispatched on case.json's `kind`
 * (never on the folder name); kinds without a runner yet are test.todo.
 */
import * as tf from '@tensorflow/tfjs';
import { availableBackends } from '../src/backend';
import { KindRunner, listCases } from './golden/common';

const RUNNERS: Record<string, () => KindRunner> = {
  encoder: () => require('./golden/encoder').runEncoderCase,
  m3_loss: () => require('./golden/m3_loss').runM3LossCase,
  retromae: () => require('./golden/retromae').runRetroMAECase,
  train_step: () => require('./golden/train_step').runTrainStepCase,
};

const cases = listCases();

describe('golden', () => {
  test('the golden dir has cases', () => expect(cases.length).toBeGreaterThan(0));

  for (const c of cases) {
    const runner = RUNNERS[c.spec.kind];
    if (!runner) {
      test.todo(`${c.name} (kind ${c.spec.kind}: no runner yet)`);
      continue;
    }
    test(`${c.name} (${c.spec.kind}) on every available backend`, async () => {
      const backends = await availableBackends();
      expect(backends).toContain('wasm');
      for (const backend of backends) {
        await tf.setBackend(backend);
        try {
          await runner()(c);
        } catch (e) {
          throw new Error(`[${backend}] ${(e as Error).message}`);
        }
      }
    });
  }
});
