/**
 * The device bundle's one JavaScript entry: the bundle's bin/<mode>.js shims call run(mode). One bundle for
 * every tool keeps the copies of TF.js and the project to one (the bundle must fit in 50 MiB with Node.js);
 * esbuild evaluates each module on its first require, so a tool loads only what it uses.
 */
export async function run(mode: string, argv: string[] = process.argv.slice(2)): Promise<void> {
  if (mode === 'm3') return require('../../src/cli/main').main(argv);
  if (mode === 'bench') return require('../../bench/index').main(argv);
  if (mode === 'golden') return require('../golden-run').main(argv);
  if (mode === 'conformance') return void require('../../test/backend/torch/conformance/runner');
  throw new Error(`unknown tool '${mode}' (m3, bench, golden or conformance)`);
}
