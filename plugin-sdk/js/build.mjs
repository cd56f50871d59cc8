// Builds a JavaScript or TypeScript stage into a `wasmpipe:stage`
// component. `wasmpipe build` writes this file into the stage's
// `.wasmpipe/` folder and runs it with node, in the stage's folder:
//
//   node build.mjs SOURCE OUT WIT_DIR NAME COMPONENTIZE_JS ROLLDOWN
//
// SOURCE is the stage module (stage.js or stage.ts), OUT the component to
// write, COMPONENTIZE_JS and ROLLDOWN the entry files of the packages
// wasmpipe found (it installs nothing itself).
import { mkdir, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [source, out, witDir, name, componentizeJs, rolldownJs] = process.argv.slice(2);
const work = dirname(out);
await mkdir(work, { recursive: true });

// The stage is bundled into one module first: its helpers (relative
// imports, TypeScript or JavaScript) and the npm packages it imports from
// node_modules. componentize-js then snapshots that module alone, and a
// TypeScript stage's types are erased on the way (checking them is
// `tsc`'s job). Rolldown reports a syntax error or an import it cannot
// resolve with its file, line and column.
const { rolldown } = await import(pathToFileURL(rolldownJs).href);
const module = join(work, 'bundle.js');
const unresolved = [];
let output;
try {
  const bundle = await rolldown({
    input: source,
    cwd: dirname(source),
    // A component has the web's APIs (TextEncoder, URL, structuredClone),
    // not Node's: packages are resolved as for a browser.
    platform: 'browser',
    // `./util.js` names `util.ts` when there is one, as TypeScript
    // resolves it.
    resolve: { extensionAlias: { '.js': ['.ts', '.js'] } },
    transform: { define: { 'process.env.NODE_ENV': '"production"' } },
    onLog(level, log) {
      if (log.code === 'UNRESOLVED_IMPORT') unresolved.push(log);
      else if (level === 'warn') console.error(log.message);
    },
  });
  // One file, even if a package imports a module dynamically.
  ({ output } = await bundle.write({ file: module, format: 'esm', codeSplitting: false }));
  await bundle.close();
} catch (e) {
  for (const log of e.errors ?? [e]) report(log);
  process.exit(1);
}
// Rolldown leaves a package it cannot find as an import of the bundle,
// which the snapshot would then fail to load without saying whose it was.
if (unresolved.length) {
  for (const log of unresolved) report(log);
  process.exit(1);
}

// The exports are checked here, in seconds, rather than from inside the
// snapshot (the runtime checks the same again).
const exports = new Set(output[0].exports);
const kinds = ['map', 'filter', 'flatMap', 'reduce'].filter((k) => exports.has(k));
if (kinds.length !== 1) {
  console.error(
    `${source}: error: ${kinds.length === 0 ? 'a stage module exports one function named map, filter, flatMap or reduce' : `a stage module exports one stage function, not ${kinds.join(' and ')}`}`,
  );
  process.exit(1);
}
if (kinds[0] === 'reduce' && (!exports.has('initial') || !exports.has('combine'))) {
  console.error(`${source}: error: a reduce stage also exports \`initial\` (the empty accumulator, or a function returning it) and \`combine(a, b)\``);
  process.exit(1);
}

const entry = join(work, 'entry.js');
await writeFile(
  entry,
  `import * as user from './bundle.js';\nimport { makeStage } from './runtime.js';\nexport const stage = makeStage(user, ${JSON.stringify(name)});\n`,
);

const { componentize } = await import(pathToFileURL(componentizeJs).href);
const { component } = await componentize({
  sourcePath: entry,
  witPath: witDir,
  worldName: 'plugin',
  // Stages reach nothing but stdout and stderr (the host's log) and the
  // clocks and randomness the host may freeze; no `fetch`.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);

// Prints one of rolldown's errors (its message has the file, line and
// column, and the line itself), with what to do about an import.
function report(log) {
  let hint = '';
  const spec = log.code === 'UNRESOLVED_IMPORT' ? log.message.match(/resolve '([^']+)'/)?.[1] : undefined;
  if (spec !== undefined) {
    const builtin = spec.startsWith('node:') || builtinModules.includes(spec.split('/')[0]);
    if (spec.startsWith('.') || spec.startsWith('/')) {
      hint = 'no such file: an import names the file, e.g. "./util.ts" or "./util.js"';
    } else if (builtin) {
      hint = `\`${spec}\` is one of Node's own modules, which a component does not have (it has the web's: TextEncoder, URL, structuredClone)`;
    } else {
      const pkg = spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');
      hint = `the npm package \`${pkg}\` is not installed: run \`npm install ${pkg}\` in the stage's folder`;
    }
  }
  console.error(`error: ${(log.message ?? String(log)).replace(', treating it as an external dependency', '').trimEnd()}${hint ? `\n  = hint: ${hint}` : ''}`);
}
