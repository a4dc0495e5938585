'use strict';
// Runs TF.js's own op tests (the jasmine specs shipped in @tensorflow/tfjs-core/dist/**/*_test.js, as
// tfjs-node's run_tests does) against the `torch` backend. Kernels torch does not implement natively run
// through the counted cpu fallback, so the whole op suite applies; the summary says how many specs ran
// native kernels only. Exclusions (with reasons) are in exclusions.js.
//
//   npm run test:conformance [-- --grep REGEX] [--budget SECONDS] [--device cpu|cuda]
// Without the addon it prints why and exits 0 (M3_REQUIRE_TORCH=1 makes that an error; so does --device cuda).
require('./swc-hook');
require('./runner');
