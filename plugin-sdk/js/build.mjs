// Builds a JavaScript or TypeScript stage into a `wasmpipe:stage`
// component. `wasmpipe build` writes this file into the stage's
// `.wasmpipe/` folder and runs it with node:
//
//   node build.mjs SOURCE OUT WIT_DIR NAME COMPONENTIZE_JS [TYPESCRIPT]
//
// SOURCE is the stage module (stage.js or stage.ts), OUT the component to
// write, COMPONENTIZE_JS and TYPESCRIPT the entry files of the packages
// wasmpipe found (it installs nothing itself).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';

const [source, out, witDir, name, componentizeJs, typescript] = process.argv.slice(2);
const work = dirname(out);
await mkdir(work, { recursive: true });

let module = source;
if (source.endsWith('.ts')) {
  // Types are for the author's editor and `tsc`; the component runs the
  // JavaScript that TypeScript emits for the same module.
  const ts = (await import(pathToFileURL(typescript))).default;
  const text = await readFile(source, 'utf8');
  const js = ts.transpileModule(text, {
    fileName: source,
    reportDiagnostics: true,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, sourceMap: false },
  });
  const errors = (js.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length) {
    for (const d of errors) {
      const at = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : null;
      const where = at ? `${source}:${at.line + 1}:${at.character + 1}` : source;
      console.error(`${where}: error: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
    }
    process.exit(1);
  }
  module = join(work, basename(source).replace(/\.ts$/, '.js'));
  await writeFile(module, js.outputText);
}

// Load the module natively first: a syntax error or a missing stage
// function is reported in seconds, with node's file:line:column, rather
// than from inside the snapshot.
const user = await import(pathToFileURL(module).href);
const kinds = ['map', 'filter', 'flatMap', 'reduce'].filter((k) => typeof user[k] === 'function');
if (kinds.length !== 1) {
  console.error(
    `${source}: error: ${kinds.length === 0 ? 'a stage module exports one function named map, filter, flatMap or reduce' : `a stage module exports one stage function, not ${kinds.join(' and ')}`}`,
  );
  process.exit(1);
}
if (kinds[0] === 'reduce' && (!('initial' in user) || typeof user.combine !== 'function')) {
  console.error(`${source}: error: a reduce stage also exports \`initial\` (the empty accumulator, or a function returning it) and \`combine(a, b)\``);
  process.exit(1);
}

let rel = relative(work, module).split('\\').join('/');
if (!rel.startsWith('.')) rel = './' + rel;
const entry = join(work, 'entry.js');
await writeFile(
  entry,
  `import * as user from ${JSON.stringify(rel)};\nimport { makeStage } from './runtime.js';\nexport const stage = makeStage(user, ${JSON.stringify(name)});\n`,
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
