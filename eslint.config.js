'use strict';
// ESLint flat config: @eslint/js recommended + typescript-eslint recommended (syntax only, no type
// information, so `npm run lint` stays fast; `tsc` does the type checking).
const { defineConfig } = require('eslint/config');
const js = require('@eslint/js');
const tseslint = require('typescript-eslint');
const globals = require('globals');

module.exports = defineConfig(
  { ignores: ['dist/', 'node_modules/', 'native/build/', 'runs/', '.cache/', '.scratch/', 'coverage/', '.device-bundle/'] },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // Optional backends (torch addon, wasm) are loaded lazily with require() on purpose, and the .js files are CommonJS.
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
  {
    files: ['test/**/*.ts'],
    // Tests index TF.js ops by name and read untyped JSON fixtures; `any` there is a convenience, not an API.
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['**/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
  },
  {
    files: ['test/backend/torch/conformance/**/*.js'],
    // The TF.js conformance runner drives jasmine, which installs its `jasmine` global.
    languageOptions: { globals: globals.jasmine },
  },
);
