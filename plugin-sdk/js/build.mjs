// Builds a JavaScript or TypeScript stage into a `wasmpipe:stage`
// component. `wasmpipe build` writes this file into the stage's
// `.wasmpipe/` folder and runs it with node, in the stage's folder:
//
//   node build.mjs SOURCE OUT WIT_DIR NAME COMPONENTIZE_JS ROLLDOWN [INTERPRETER]
//
// SOURCE is the stage module (stage.js or stage.ts), OUT the component to
// write, COMPONENTIZE_JS and ROLLDOWN the entry files of the packages
// wasmpipe found (it installs nothing itself). With INTERPRETER, the
// development interpreter's component, OUT is a development build: the
// interpreter with the bundled stage appended (docs/abi.md, "Development
// builds"), made in the time it takes to bundle.
//
//   node build.mjs --interpreter OUT WIT_DIR COMPONENTIZE_JS
//
// builds that interpreter from `interpreter.js` and `runtime.js` in the
// working directory.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

// The exit code that says the stage's own code is wrong (a syntax error,
// an import that cannot be had, the exports), reported above: wasmpipe
// then says so, rather than that a tool failed.
const CODE_ERRORS = 2;

if (process.argv[2] === '--interpreter') {
  const [out, witDir, componentizeJs] = process.argv.slice(3);
  await writeFile(out, await snapshot('interpreter.js', witDir, componentizeJs));
  process.exit(0);
}

const [source, out, witDir, name, componentizeJs, rolldownJs, interpreter] = process.argv.slice(2);
const work = dirname(out);
await mkdir(work, { recursive: true });

const { rolldown } = await import(pathToFileURL(rolldownJs).href);
// The development bundle has a name of its own: a production build of
// the same stage may be made beside it.
const module = join(work, interpreter ? 'bundle.cjs' : 'bundle.js');
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
  // One file, even if a package imports a module dynamically. The
  // development interpreter evaluates the bundle as a function body, which
  // takes CommonJS, not import and export statements.
  const format = interpreter ? 'cjs' : 'esm';
  ({ output } = await bundle.write({ file: module, format, codeSplitting: false }));
  await bundle.close();
} catch (e) {
  for (const log of e.errors ?? [e]) report(log);
  process.exit(CODE_ERRORS);
}
// Rolldown leaves a package it cannot find as an import of the bundle,
// which the snapshot would then fail to load without saying whose it was.
if (unresolved.length) {
  for (const log of unresolved) report(log);
  process.exit(CODE_ERRORS);
}

// The exports are checked here, in seconds, rather than from inside the
// snapshot (the runtime checks the same again).
const exports = new Set(output[0].exports);
const kinds = ['map', 'filter', 'flatMap', 'reduce'].filter((k) => exports.has(k));
if (kinds.length !== 1) {
  console.error(
    `${source}: error: ${kinds.length === 0 ? 'a stage module exports one function named map, filter, flatMap or reduce' : `a stage module exports one stage function, not ${kinds.join(' and ')}`}`,
  );
  process.exit(CODE_ERRORS);
}
if (kinds[0] === 'reduce' && (!exports.has('initial') || !exports.has('combine'))) {
  console.error(`${source}: error: a reduce stage also exports \`initial\` (the empty accumulator, or a function returning it) and \`combine(a, b)\``);
  process.exit(CODE_ERRORS);
}

if (interpreter) {
  const code = JSON.stringify({ name, code: output[0].code });
  await writeFile(out, Buffer.concat([await readFile(interpreter), customSection('wasmpipe-stage-source', code)]));
  process.exit(0);
}

const entry = join(work, 'entry.js');
const entryText = `import * as user from './bundle.js';\nimport { makeStage } from './runtime.js';\nexport const stage = makeStage(user, ${JSON.stringify(name)});\n`;
await writeFile(entry, entryText);

// A component is a function of what goes into it: the bundle (the
// stage's code and its packages), the runtime, the interface and the
// componentize-js version. Its snapshot is not reproducible byte for
// byte, so the components of the last few inputs are kept by digest, and
// the same inputs give back the same component, hence the same version
// (a touched file, a `git checkout` of the same code, an edit undone).
const digest = createHash('sha256');
for (const part of [
  output[0].code,
  await readFile(join(work, 'runtime.js'), 'utf8'),
  entryText,
  await readFile(join(witDir, 'stage.wit'), 'utf8'),
  await readFile(join(dirname(dirname(componentizeJs)), 'package.json'), 'utf8'),
]) {
  digest.update(part).update('\0');
}
const builds = join(work, 'builds');
const kept = join(builds, `${digest.digest('hex').slice(0, 32)}.wasm`);
if (!(await exists(kept))) {
  await mkdir(builds, { recursive: true });
  await writeFile(`${kept}.part`, await snapshot(entry, witDir, componentizeJs));
  await rename(`${kept}.part`, kept);
  await prune(builds, 4);
} else {
  // Kept as recently used, which is what `prune` goes by.
  const now = new Date();
  await utimes(kept, now, now);
}
await copyFile(kept, `${out}.part`);
await rename(`${out}.part`, out);

/// componentize-js's component of the module `sourcePath`.
async function snapshot(sourcePath, witPath, componentizeJs) {
  const { componentize } = await import(pathToFileURL(componentizeJs).href);
  const { component } = await componentize({
    sourcePath,
    witPath,
    worldName: 'plugin',
    // Stages reach nothing but stdout and stderr (the host's log) and the
    // clocks and randomness the host may freeze; no `fetch`.
    disableFeatures: ['http', 'fetch-event'],
  });
  return component;
}

/// A WebAssembly custom section `name` holding the UTF-8 text `text`.
function customSection(name, text) {
  const leb = (n) => {
    const bytes = [];
    do {
      let b = n & 0x7f;
      n = Math.floor(n / 128);
      if (n > 0) b |= 0x80;
      bytes.push(b);
    } while (n > 0);
    return Buffer.from(bytes);
  };
  const nameBytes = Buffer.from(name, 'utf8');
  const content = Buffer.concat([leb(nameBytes.length), nameBytes, Buffer.from(text, 'utf8')]);
  return Buffer.concat([Buffer.from([0]), leb(content.length), content]);
}

async function exists(path) {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/// Leaves the `keep` most recently built components in `dir`.
async function prune(dir, keep) {
  const found = [];
  for (const f of await readdir(dir)) {
    if (f.endsWith('.wasm')) found.push({ f, t: (await stat(join(dir, f))).mtimeMs });
  }
  found.sort((a, b) => b.t - a.t);
  for (const { f } of found.slice(keep)) await unlink(join(dir, f)).catch(() => {});
}

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
