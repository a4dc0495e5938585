'use strict';
// Specs of @tensorflow/tfjs-core's suite that are not run against torch: [substring of the spec's full
// name, reason]. Keep each reason specific; an exclusion is a known, accepted difference.
const EXCLUDED = [
  ['version version', 'checks package versions, not a backend'],
  // The gather still throws; the spec pins the cpu backend's wording, which needs the indices read back
  // to JS on every gather (libtorch reports "index out of range in self").
  ['gather test-torch {} throws when index is out of bound', 'error text differs (libtorch: "index out of range in self")'],
];
module.exports = { EXCLUDED };
