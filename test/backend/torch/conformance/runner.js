'use strict';
// The TF.js conformance runner itself (see run.js, which loads it from source through the swc hook; the
// device bundle compiles it with esbuild instead).
require('@tensorflow/tfjs');

const args = process.argv.slice(2);
const argValue = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const grep = new RegExp(argValue('--grep') ?? '');
const budgetS = Number(argValue('--budget') ?? 240);
const device = argValue('--device') ?? 'cpu';
if (device !== 'cpu' && device !== 'cuda') {
  console.log(`torch conformance: --device must be cpu or cuda, not '${device}'`);
  process.exit(2);
}

// A literal path, so that the device bundle's esbuild can follow it.
const torch = require('../../../../src/backend/torch/index.ts');
const loaded = torch.loadTorchBackend(device);
if (!loaded.ok) {
  console.log(`torch conformance: not run: ${loaded.reason}`);
  // asking for cuda where it cannot run is a failure; a cpu run without the addon is not (see run.js)
  process.exit(process.env.M3_REQUIRE_TORCH || device === 'cuda' ? 1 : 0);
}
const exclusions = require('./exclusions');
const EXCLUDED = device === 'cuda' ? [...exclusions.EXCLUDED, ...exclusions.EXCLUDED_CUDA] : exclusions.EXCLUDED;

// tfjs-core's test utilities and specs come from its ESM dist (compiled by the hook); they share the
// engine and kernel registry with the CommonJS bundle through TF.js's globals.
require('@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops');
const jasmineUtil = require('@tensorflow/tfjs-core/dist/jasmine_util');
const Jasmine = require('jasmine');

jasmineUtil.setTestEnvs([{ name: 'test-torch', backendName: 'torch', flags: {}, isDataSync: true }]);
const runner = new Jasmine();
runner.loadConfig({ random: false });
runner.exitOnCompletion = false;
runner.clearReporters(); // the summary below replaces jasmine's dot reporter
const env = jasmine.getEnv();
require('@tensorflow/tfjs-core/dist/tests');

const excludedHits = new Map();
const specFilter = (spec) => {
  const name = spec.getFullName();
  if (!grep.test(name)) return false;
  for (const [pattern] of EXCLUDED) {
    if (name.includes(pattern)) {
      excludedHits.set(pattern, (excludedHits.get(pattern) ?? 0) + 1);
      return false;
    }
  }
  return true;
};
env.configure({ specFilter, random: false });

// Count, per spec, whether it took a cpu fallback: a spec "exercises torch natively" when it did not.
let nativeOnly = 0;
let withFallback = 0;
const fallbackKernels = new Map();
const failures = [];
env.addReporter({
  specStarted() {
    torch.resetFallbackStats();
  },
  specDone(result) {
    if (result.status === 'excluded' || result.status === 'pending') return;
    const used = Object.keys(torch.fallbackStats());
    if (used.length === 0) nativeOnly++;
    else {
      withFallback++;
      for (const k of used) fallbackKernels.set(k, (fallbackKernels.get(k) ?? 0) + 1);
    }
    if (result.status === 'failed') failures.push(`${result.fullName}: ${result.failedExpectations[0]?.message.split('\n')[0]}`);
  },
});

const started = Date.now();
const watchdog = setTimeout(() => {
  console.log(`torch conformance: exceeded its ${budgetS} s budget`);
  process.exit(1);
}, budgetS * 1000);
watchdog.unref();

runner.execute().then((result) => {
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  for (const f of failures) console.log(`FAILED ${f}`);
  const excludedCount = [...excludedHits.values()].reduce((a, b) => a + b, 0);
  console.log(`torch conformance: ${result.overallStatus}; ${nativeOnly + withFallback} specs ran in ${seconds} s: ${failures.length} failed, ` +
    `${nativeOnly} on native kernels only, ${withFallback} used a cpu fallback; ${excludedCount} excluded (exclusions.js)`);
  if (process.env.M3_CONFORMANCE_VERBOSE) console.log('fallback kernels by spec count:', Object.fromEntries([...fallbackKernels].sort((a, b) => b[1] - a[1])));
  process.exit(result.overallStatus === 'passed' ? 0 : 1);
});
