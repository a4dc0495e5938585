/**
 * The Sum gradient (src/backend/gradients.ts): dy broadcast to x's shape on the device, the values of TF.js's
 * stock gradient (dy · ones), without a host-built `ones` tensor being uploaded.
 */
import * as tf from '@tensorflow/tfjs';
import '../../../src/backend';
import { describeTorch, rand } from './setup';

describeTorch('Sum gradient on torch', () => {
  afterAll(() => tf.setBackend('cpu'));

  test('equals dy broadcast over the summed axes and uploads nothing of x’s size', async () => {
    await tf.setBackend('torch');
    const x = rand([16, 32, 8], 1);
    const w = rand([16, 8], 2);
    const write = jest.spyOn(tf.backend(), 'write');
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.sum(t, 1), w)))(x);
    const uploaded = write.mock.calls.map(([values]) => (values as ArrayLike<number>).length);
    write.mockRestore();
    expect(Math.max(0, ...uploaded)).toBeLessThan(16 * 32 * 8);
    const want = tf.tile(tf.reshape(w, [16, 1, 8]), [1, 32, 1]);
    expect(Array.from(g.dataSync())).toEqual(Array.from(want.dataSync()));
  });
});
