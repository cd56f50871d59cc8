// The development interpreter: the JavaScript runtime with no stage in
// it. `run --watch` (and serve's and worker's) append a stage's bundled
// code to this component rather than snapshotting each edit into a
// component of its own (docs/abi.md, "Development builds"); the host hands
// the code back through `host.source`, and it is evaluated here when the
// instance is first called, so an edit costs a bundle, not a build.
//
// `wasmpipe build` makes the snapshotted component instead, for
// production: its code is parsed once, at build time.

import { source } from 'wasmpipe:stage/host@0.1.0';
import { makeStage } from './runtime.js';

let loaded;

/// The stage, from the code the host holds: `{"name", "code"}`, the code
/// a CommonJS bundle of the stage module.
function load() {
  if (loaded === undefined) {
    const text = source();
    if (text === '') {
      throw "this is wasmpipe's development interpreter, which runs a stage's code appended to it; build the stage with `wasmpipe build`";
    }
    const { name, code } = JSON.parse(text);
    const module = { exports: {} };
    new Function('module', 'exports', code)(module, module.exports);
    loaded = makeStage(module.exports, name);
  }
  return loaded;
}

export const stage = {
  describe: () => load().describe(),
  init: (config) => load().init(config),
  process: (ctx, events) => load().process(ctx, events),
  reduce: (ctx, acc, events) => load().reduce(ctx, acc, events),
  combine: (a, b) => load().combine(a, b),
};
