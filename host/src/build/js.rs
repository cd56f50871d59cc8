//! JavaScript and TypeScript stages: built into a component by
//! componentize-js (SpiderMonkey, snapshotted with the stage's code) run
//! by Node.js, with the SDK's runtime (`plugin-sdk/js/runtime.js`) wrapped
//! around the stage module.

use super::{
    STAGE_WIT, WORK_DIR, interpreter, newer_than, run_tool, stage_name, toolchains_dir, up_to_date,
    write_files,
};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK's runtime, written beside the stage at every build.
pub const RUNTIME: &str = include_str!("../../../plugin-sdk/js/runtime.js");
/// The TypeScript declarations `wasmpipe new --lang ts` writes.
pub const TYPES: &str = include_str!("../../../plugin-sdk/js/wasmpipe.d.ts");
/// The loader that runs TypeScript tests natively (`wasmpipe new --lang ts`).
pub const TS_HOOKS: &str = include_str!("../../../plugin-sdk/js/ts-hooks.mjs");
/// The type-check `npm test` runs first in a TypeScript stage: `tsc` with
/// the toolchain's TypeScript and `@types/node` (`wasmpipe new --lang ts`).
pub const TSC: &str = include_str!("../../../plugin-sdk/js/tsc.mjs");
/// What of `.wasmpipe/` is not kept in version control: everything, but
/// for a TypeScript stage the loader and the type-check its native tests
/// run with.
const WORK_GITIGNORE: &str = "*\n";
/// See [`WORK_GITIGNORE`].
pub const TS_WORK_GITIGNORE: &str = "*\n!.gitignore\n!ts-hooks.mjs\n!tsc.mjs\n";
const BUILD: &str = include_str!("../../../plugin-sdk/js/build.mjs");
/// The development interpreter's entry module (see `super::DEVELOPMENT`).
const INTERPRETER: &str = include_str!("../../../plugin-sdk/js/interpreter.js");

/// The componentize-js version the SDK is tested with (and `wasmpipe new`
/// pins), with the wizer it needs.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// See [`COMPONENTIZE_JS`].
pub const WIZER: &str = "10.0.0";
/// componentize-js imports it at run time but declares it only for its own
/// development: a stage's package.json names it, or npm may not install
/// it where componentize-js looks.
pub const PREVIEW2_SHIM: &str = "0.25.0";
/// The TypeScript compiler the toolchain installs (for `tsc` and the
/// native tests; the build erases types with the bundler).
pub const TYPESCRIPT: &str = "5.9.3";
/// The bundler that makes one module of a stage, its helpers and its npm
/// packages (and strips TypeScript's types). componentize-js depends on it
/// already, through jco; it is named so that its version is the tested one.
pub const ROLLDOWN: &str = "1.3.3";

/// Builds `source` (the stage's `stage.js` or `stage.ts`) in `dir` into
/// `dir/.wasmpipe/<dir name>.wasm`, or with `development` into the
/// development build `<dir name>.dev.wasm`; says whether it ran the tool.
pub fn build(dir: &Path, source: &Path, development: bool) -> Result<(PathBuf, bool)> {
    let node = node()?;
    // Looked up before the freshness check: a build that cannot run again
    // should say so now, not on the first edit.
    let componentize = package(
        dir,
        "@bytecodealliance/componentize-js",
        "src/componentize.js",
    )?;
    let rolldown = package(dir, "rolldown", "dist/index.mjs")?;
    let ts = source.extension().is_some_and(|e| e == "ts");
    let work = dir.join(WORK_DIR);
    let mut files = vec![
        ("runtime.js", RUNTIME),
        ("build.mjs", BUILD),
        ("wit/stage.wit", STAGE_WIT),
        (
            ".gitignore",
            if ts {
                TS_WORK_GITIGNORE
            } else {
                WORK_GITIGNORE
            },
        ),
    ];
    if ts {
        files.extend([("ts-hooks.mjs", TS_HOOKS), ("tsc.mjs", TSC)]);
    }
    let sdk_changed = write_files(&work, &files)?;
    let name = stage_name(dir);
    let out = work.join(if development {
        format!("{name}.dev.wasm")
    } else {
        format!("{name}.wasm")
    });
    let interpreter = match development {
        true => Some(js_interpreter(&node, &componentize)?),
        false => None,
    };
    let new_interpreter = interpreter.iter().any(|i| newer_than(i, &out));
    if !new_interpreter && up_to_date(dir, &out, sdk_changed) {
        return Ok((out, false));
    }
    let mut cmd = Command::new(&node);
    cmd.arg(work.join("build.mjs"))
        .arg(source)
        .arg(&out)
        .arg(work.join("wit"))
        .arg(&name)
        .arg(&componentize)
        .arg(&rolldown)
        .args(&interpreter)
        // componentize-js lets the snapshot read files below its working
        // directory only: the bundle and the runtime are in `.wasmpipe/`.
        .current_dir(dir);
    match run_tool(
        &mut cmd,
        &format!("componentize-js on {}", source.display()),
    ) {
        Ok(()) => Ok((out, true)),
        // build.mjs found errors in the stage's code, and said where.
        Err(e) if e.downcast_ref::<super::ToolFailed>().and_then(|f| f.code) == Some(2) => bail!(
            "{} does not build: fix the errors above and save it again",
            source.display()
        ),
        Err(e) => Err(e),
    }
}

/// The JavaScript development interpreter (see `super::interpreter`).
fn js_interpreter(node: &Path, componentize: &Path) -> Result<PathBuf> {
    let inputs = [RUNTIME, INTERPRETER, STAGE_WIT, BUILD, COMPONENTIZE_JS];
    interpreter("js", &inputs, |work, out| {
        write_files(
            work,
            &[
                ("runtime.js", RUNTIME),
                ("interpreter.js", INTERPRETER),
                ("build.mjs", BUILD),
                ("wit/stage.wit", STAGE_WIT),
            ],
        )?;
        let mut cmd = Command::new(node);
        cmd.arg(work.join("build.mjs"))
            .arg("--interpreter")
            .arg(out)
            .arg(work.join("wit"))
            .arg(componentize)
            .current_dir(work);
        run_tool(&mut cmd, "componentize-js on the development interpreter")
    })
}

/// `node`, checked to run.
fn node() -> Result<PathBuf> {
    let node = PathBuf::from(std::env::var_os("WASMPIPE_NODE").unwrap_or_else(|| "node".into()));
    match Command::new(&node).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(node),
        _ => bail!(
            "JavaScript and TypeScript stages are built with Node.js 20 or later, and `{}` does not run: install Node.js (Debian: `apt install nodejs npm`), then run `wasmpipe toolchains install js` once on this machine",
            node.display()
        ),
    }
}

/// The file `entry` of the npm package `name`, from a `node_modules` of
/// `dir` or a folder above it, else from the JavaScript toolchain that
/// `wasmpipe toolchains install js` sets up.
fn package(dir: &Path, name: &str, entry: &str) -> Result<PathBuf> {
    let toolchain = toolchains_dir().map(|t| t.join("js"));
    let found = dir
        .ancestors()
        .map(Path::to_path_buf)
        .chain(toolchain)
        .map(|d| d.join("node_modules").join(name).join(entry))
        .find(|p| p.is_file());
    match found {
        Some(p) => Ok(p),
        None => bail!(
            "the npm package `{name}` is not installed for {dir:?}: run `wasmpipe toolchains install js` once for every stage on this machine, or `npm install --save-dev @bytecodealliance/componentize-js@{COMPONENTIZE_JS} @bytecodealliance/preview2-shim@{PREVIEW2_SHIM} rolldown@{ROLLDOWN}` in the stage"
        ),
    }
}
