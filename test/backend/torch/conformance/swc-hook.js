'use strict';
// A require hook that compiles with @swc/core on the fly: TypeScript sources of this project, and
// @tensorflow/tfjs-core's dist/*.js, which are ES modules with extension-less imports that Node cannot
// load as they are (the conformance specs live there). Both become CommonJS.
const fs = require('fs');
const Module = require('module');
const swc = require('@swc/core');

const options = (syntax) => ({
  jsc: { target: 'es2022', parser: { syntax } },
  module: { type: 'commonjs' },
  sourceMaps: 'inline',
});

function compile(module, filename, syntax) {
  const source = fs.readFileSync(filename, 'utf8');
  const { code } = swc.transformSync(source, { ...options(syntax), filename });
  module._compile(code, filename);
}

const tfjsCoreDist = /[\\/]@tensorflow[\\/]tfjs-core[\\/]dist[\\/](?!.*\.(node|es2017|fesm|min)\.js$).*\.js$/;
const plainJs = Module._extensions['.js'];
Module._extensions['.js'] = function (module, filename) {
  if (tfjsCoreDist.test(filename) && !/tf-core/.test(filename)) return compile(module, filename, 'ecmascript');
  return plainJs(module, filename);
};
Module._extensions['.ts'] = (module, filename) => compile(module, filename, 'typescript');
