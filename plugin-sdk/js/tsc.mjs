// Type-checks a TypeScript stage and its tests; `npm test` runs it first:
//   node .wasmpipe/tsc.mjs
// `wasmpipe new --lang ts` writes this file. TypeScript and the types of
// Node's own modules (`node:test` in the tests) are taken from the stage's
// node_modules when it has them, else from wasmpipe's JS toolchain: they
// are installed once per machine, not in every stage, so that
// `npm install <package>` in a stage installs that package alone.
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const toolchain = join(
  process.env.WASMPIPE_TOOLCHAINS ??
    join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local/share'), 'wasmpipe/toolchains'),
  'js',
);

/// The folder of the npm package `name`, from the stage or the toolchain.
function find(name) {
  for (const base of [process.cwd(), toolchain]) {
    try {
      const require = createRequire(pathToFileURL(join(base, 'package.json')));
      return dirname(require.resolve(`${name}/package.json`));
    } catch {}
  }
  console.error(
    `${name} is not installed: run \`bash plugin-sdk/toolchains install js\` once on this machine (it installs TypeScript and @types/node in ${toolchain}), or \`npm install --save-dev typescript @types/node\` in this stage`,
  );
  process.exit(2);
}

const tsc = join(find('typescript'), 'bin', 'tsc');
// tsconfig.json names the `node` types; where they are depends on the
// machine, so their folder is given here rather than in tsconfig.json.
const typeRoots = dirname(find('@types/node'));
const r = spawnSync(process.execPath, [tsc, '-p', '.', '--typeRoots', typeRoots, ...process.argv.slice(2)], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
