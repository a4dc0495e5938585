#!/usr/bin/env node
// `npm run bench -- <encode|train|data> [options]`: runs bench/<name>.ts from source.
require('./register');
require('../bench/index.ts').main(process.argv.slice(2));
