/**
 * The device bundle's JavaScript, built with esbuild:
 *   lib/bundle.js           the CLI, the benchmarks, the golden runner and the TF.js conformance runner (entry.ts)
 *   lib/tokenize-worker.js  the worker thread of `m3 data prepare` (tokenize-pool starts it from beside the bundle)
 *   node-gyp                npm's node-gyp as one file, for the addon build (native/build.js finds it)
 * and the licences of every npm package that went into them.
 */
import * as esbuild from 'esbuild';
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');

// tfjs-core's package.json lists its side-effect files, and its specs are not among them: without this,
// esbuild drops `import './ops/abs_test'` from dist/tests.js and the conformance runner finds no specs.
const tfjsSpecs: esbuild.Plugin = {
  name: 'tfjs-core-specs',
  setup(build) {
    build.onResolve({ filter: /_test$/ }, (a) => {
      if (!/[\\/]@tensorflow[\\/]tfjs-core[\\/]dist[\\/]/.test(a.importer)) return undefined;
      return { path: path.resolve(path.dirname(a.importer), `${a.path}.js`), sideEffects: true };
    });
  },
};

const common: esbuild.BuildOptions = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  logLevel: 'silent',
  metafile: true,
  legalComments: 'none', // collected into THIRD-PARTY-LICENSES.txt instead
};

/** Bundles lib/bundle.js and lib/tokenize-worker.js into outDir; returns the npm package dirs they contain. */
export async function bundleProject(outDir: string): Promise<string[]> {
  const results = await Promise.all([
    esbuild.build({
      ...common,
      entryPoints: [path.join(__dirname, 'entry.ts')],
      outfile: path.join(outDir, 'bundle.js'),
      plugins: [tfjsSpecs],
      // chart.js: `m3 report` reads its UMD build through require.resolve (carried as a file);
      // onnxruntime-node: an optional devDependency of `bench encode` (native, not carried)
      external: ['chart.js', 'onnxruntime-node'],
    }),
    esbuild.build({ ...common, entryPoints: [path.join(ROOT, 'src/data/tokenize-worker.ts')], outfile: path.join(outDir, 'tokenize-worker.js') }),
  ]);
  return packagesOf(results);
}

// node-gyp loads each command with require('./' + command); esbuild bundles every file that can match,
// but keys them with their extension, so the extension-less name would not be found at run time.
const nodeGypCommands: esbuild.Plugin = {
  name: 'node-gyp-commands',
  setup(build) {
    build.onLoad({ filter: /[\\/]node-gyp[\\/]lib[\\/]node-gyp\.js$/ }, (a) => {
      const source = fs.readFileSync(a.path, 'utf8');
      const pattern = /require\('\.\/' \+ (\w+)\)/g;
      if (!pattern.test(source)) throw new Error(`${a.path}: no require('./' + command) to rewrite (node-gyp changed; see bundle-js.ts)`);
      return { contents: source.replace(pattern, "require('./' + $1 + '.js')"), loader: 'js' };
    });
  },
};

/** npm's node-gyp (bin/node-gyp.js and its dependencies) as one file at `outFile`. */
export async function bundleNodeGyp(gypBin: string, outFile: string): Promise<string[]> {
  const r = await esbuild.build({
    ...common,
    entryPoints: [gypBin],
    outfile: outFile,
    plugins: [nodeGypCommands],
    loader: { '.cs': 'empty' }, // Find-VisualStudio.cs: Windows only
  });
  return packagesOf([r]);
}

/** The package directories (node_modules/...) whose files went into the outputs. */
function packagesOf(results: esbuild.BuildResult[]): string[] {
  const dirs = new Set<string>();
  for (const r of results) {
    for (const input of Object.keys(r.metafile!.inputs)) {
      const m = /^(.*node_modules[\\/](?:@[^\\/]+[\\/])?[^\\/]+)[\\/]/.exec(path.resolve(ROOT, input));
      if (m) dirs.add(m[1]);
    }
  }
  return [...dirs].sort();
}

/** THIRD-PARTY-LICENSES.txt: name, version, licence and licence text of each package bundled. */
export function licenceText(packageDirs: string[]): string {
  const seen = new Set<string>();
  const parts: string[] = ['Third-party packages inside lib/bundle.js, lib/tokenize-worker.js and node-gyp\'s bundle, with their licences.\n'];
  for (const dir of packageDirs) {
    const pkgFile = path.join(dir, 'package.json');
    if (!fs.existsSync(pkgFile)) continue;
    const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
    const id = `${pkg.name}@${pkg.version}`;
    if (seen.has(id)) continue;
    seen.add(id);
    const file = fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
    const licence = typeof pkg.license === 'string' ? pkg.license : pkg.license?.type ?? 'see package';
    parts.push(`=== ${id} (${licence})\n${file ? fs.readFileSync(path.join(dir, file), 'utf8').trim() : '(no licence file in the package)'}\n`);
  }
  return parts.join('\n');
}
