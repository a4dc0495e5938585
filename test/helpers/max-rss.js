// Preloaded (node -r) by the hostile-input tests: writes the process's peak RSS (KiB) to $M3_TEST_RSS_FILE at exit.
process.on('exit', () => {
  if (process.env.M3_TEST_RSS_FILE) require('fs').writeFileSync(process.env.M3_TEST_RSS_FILE, String(process.resourceUsage().maxRSS));
});
