'use strict';
/**
 * Jest's node environment runs each test file in its own realm, so a Float32Array made by a native addon
 * (onnxruntime-node's outputs) fails `instanceof Float32Array` inside the test (onnxruntime-common then
 * throws "A float32 tensor's data must be type of function Float32Array()"). Tests that run onnxruntime-node
 * or transformers.js use this environment (`@jest-environment ./test/helpers/onnx-environment.js`): the
 * node environment with the typed-array constructors of the outer realm, which is what a plain Node process has.
 */
const { TestEnvironment } = require('jest-environment-node');

const SHARED = [
  'ArrayBuffer', 'SharedArrayBuffer', 'DataView',
  'Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array',
  'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array',
];

class OnnxEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED) if (globalThis[name]) this.global[name] = globalThis[name];
  }
}

module.exports = OnnxEnvironment;
