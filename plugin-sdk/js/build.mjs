// Builds a JavaScript or TypeScript stage into a `wasmpipe:stage`
// component. `wasmpipe build` writes this file into the stage's
// `.wasmpipe/` folder and runs it with node:
//
//   node build.mjs SOURCE OUT WIT_DIR NAME COMPONENTIZE_JS [TYPESCRIPT]
//
// SOURCE is the stage module (stage.js or stage.ts), OUT the component to
// write, COMPONENTIZE_JS and TYPESCRIPT the entry files of the packages
// wasmpipe found (it installs nothing itself).
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [source, out, witDir, name, componentizeJs, typescript] = process.argv.slice(2);
const work = dirname(out);
await mkdir(work, { recursive: true });

let module = source;
if (source.endsWith('.ts')) {
  module = await transpile(source);
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

// TypeScript: types are for the author's editor and `tsc`; the component
// runs the JavaScript that TypeScript emits. Every module the stage
// reaches by a relative import is emitted into `.wasmpipe/src/` at its
// path below the stage's folder (TypeScript modules as `.js`, with their
// `./x.ts` specifiers rewritten to `./x.js`; JavaScript modules copied),
// so the relative paths between them hold. Returns the emitted stage.
async function transpile(entry) {
  const ts = (await import(pathToFileURL(typescript))).default;
  const root = dirname(entry);
  const src = join(work, 'src');
  const seen = new Set([entry]);
  const queue = [entry];
  let failed = false;
  const fail = (where, message) => {
    console.error(`${where}: error: ${message}`);
    failed = true;
  };
  while (queue.length) {
    const file = queue.shift();
    const text = await readFile(file, 'utf8');
    let js = text;
    if (file.endsWith('.ts')) {
      const out = ts.transpileModule(text, {
        fileName: file,
        reportDiagnostics: true,
        compilerOptions: {
          target: ts.ScriptTarget.ES2022,
          module: ts.ModuleKind.ESNext,
          rewriteRelativeImportExtensions: true,
          sourceMap: false,
        },
      });
      for (const d of out.diagnostics ?? []) {
        if (d.category !== ts.DiagnosticCategory.Error) continue;
        fail(at(ts, file, text, d.start), ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      }
      js = out.outputText;
    }
    const emitted = join(src, relative(root, file)).replace(/\.ts$/, '.js');
    await mkdir(dirname(emitted), { recursive: true });
    if (js === text) await copyFile(file, emitted);
    else await writeFile(emitted, js);

    // The imports that survived type erasure; positions are looked up in
    // the source, where the author wrote them.
    const written = ts.preProcessFile(text, true, true).importedFiles;
    for (const { fileName: spec } of ts.preProcessFile(js, true, true).importedFiles) {
      if (!spec.startsWith('./') && !spec.startsWith('../')) continue;
      const as = written.find((w) => w.fileName === spec || w.fileName.replace(/\.ts$/, '.js') === spec);
      const where = at(ts, file, text, as?.pos);
      const said = as?.fileName ?? spec;
      const target = resolve(dirname(file), spec);
      const inside = relative(root, target);
      if (inside.startsWith('..') || isAbsolute(inside)) {
        fail(where, `"${said}" is outside the stage's folder; a component holds only the modules below ${root}`);
        continue;
      }
      // `./x.js` names `x.ts` when there is one, as TypeScript resolves it.
      const candidates = spec.endsWith('.js') ? [target.replace(/\.js$/, '.ts'), target] : [target];
      let found = null;
      for (const c of candidates) {
        if (await isFile(c)) {
          found = c;
          break;
        }
      }
      if (!found) {
        const hint = /\.[cm]?[jt]s$/.test(spec) ? '' : ` (imports name the file with its extension, e.g. "${said}.ts")`;
        fail(where, `cannot find module "${said}"${hint}`);
        continue;
      }
      if (!seen.has(found)) {
        seen.add(found);
        queue.push(found);
      }
    }
  }
  if (failed) process.exit(1);
  return join(src, relative(root, entry)).replace(/\.ts$/, '.js');
}

// `file:line:column` of offset `pos` in `text`, or `file` alone.
function at(ts, file, text, pos) {
  if (pos === undefined) return file;
  const { line, character } = ts.computeLineAndCharacterOfPosition(ts.computeLineStarts(text), pos);
  return `${file}:${line + 1}:${character + 1}`;
}

async function isFile(path) {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
