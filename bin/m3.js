#!/usr/bin/env node
// The `m3` command. Uses the compiled dist/ when present; M3_FROM_SRC=1 (or no dist/) runs src/ through swc.
const fs = require('fs');
const path = require('path');
const dist = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
if (process.env.M3_FROM_SRC === '1' || !fs.existsSync(dist)) {
  require('./register');
  require('../src/cli/main.ts').main();
} else {
  require(dist).main();
}
