// Lets node's test runner import TypeScript stages natively:
//   node --import ./.wasmpipe/ts-hooks.mjs --test stage.test.ts
// `wasmpipe new --lang ts` writes this file. Each `.ts` module is
// transpiled by TypeScript (types are only erased; `tsc --noEmit` checks
// them), found in the stage's node_modules or wasmpipe's JS toolchain.
import { register, createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

if (isMainThread) {
  register(import.meta.url);
}

let ts;
function typescript() {
  if (ts) return ts;
  const toolchain =
    process.env.WASMPIPE_TOOLCHAINS ??
    join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local/share'), 'wasmpipe/toolchains');
  for (const base of [process.cwd(), join(toolchain, 'js')]) {
    try {
      ts = createRequire(pathToFileURL(join(base, 'package.json')))('typescript');
      return ts;
    } catch {}
  }
  throw new Error('typescript is not installed: run `npm install` here, or `bash plugin-sdk/toolchains install js`');
}

// `./x.js` names `x.ts` when there is one, as TypeScript (and the build)
// resolve it.
export async function resolve(specifier, context, next) {
  if ((specifier.startsWith('./') || specifier.startsWith('../')) && specifier.endsWith('.js') && context.parentURL?.startsWith('file:')) {
    const ts = new URL(specifier.replace(/\.js$/, '.ts'), context.parentURL);
    if (existsSync(fileURLToPath(ts))) return next(ts.href, context);
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const file = fileURLToPath(url);
  const t = typescript();
  const out = t.transpileModule(await readFile(file, 'utf8'), {
    fileName: file,
    compilerOptions: { target: t.ScriptTarget.ES2022, module: t.ModuleKind.ESNext },
  });
  return { format: 'module', source: out.outputText, shortCircuit: true };
}
