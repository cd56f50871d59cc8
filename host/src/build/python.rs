//! Python stages: built into a component by componentize-py (CPython,
//! snapshotted with the stage's module), with the SDK
//! (`plugin-sdk/python/wasmpipe.py`) beside the stage module.

use super::{
    NOT_SOURCE, STAGE_WIT, WORK_DIR, interpreter, newer_than, stage_name, toolchains_dir,
    up_to_date, write_files,
};
use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK module, written beside the stage at `new` and every build.
pub const SDK: &str = include_str!("../../../plugin-sdk/python/wasmpipe.py");

/// The development interpreter's entry module (see `super::DEVELOPMENT`).
const INTERPRETER: &str = include_str!("../../../plugin-sdk/python/wasmpipe_interpreter.py");

/// What of `.wasmpipe/` is not kept in version control: all but the SDK
/// module, which a stage's native tests import.
pub const WORK_GITIGNORE: &str = "*\n!.gitignore\n!wasmpipe.py\n";

/// The componentize-py version the SDK is tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Builds `source` (the stage's `stage.py`) in `dir` into
/// `dir/.wasmpipe/<dir name>.wasm`, or with `development` into the
/// development build `<dir name>.dev.wasm`; says whether it built.
pub fn build(dir: &Path, source: &Path, development: bool) -> Result<(PathBuf, bool)> {
    let tool = componentize_py()?;
    let work = dir.join(WORK_DIR);
    let name = stage_name(dir);
    let module = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage".into());
    let app = format!(
        "# Written by `wasmpipe build`: the component's entry module.\nimport {module}  # noqa: F401  (registers the stage function)\nimport wasmpipe\n\nwasmpipe._keep_standard_library()\nStage = wasmpipe._component_stage({name:?})\n"
    );
    let sdk_changed = write_files(
        &work,
        &[
            ("wasmpipe.py", SDK),
            ("wasmpipe_app.py", &app),
            ("wit/stage.wit", STAGE_WIT),
            (".gitignore", WORK_GITIGNORE),
        ],
    )?;
    let packages = venv_packages(dir);
    // A C extension cannot be imported by the development interpreter
    // either; the component build says so in its words.
    let development = development && !packages.iter().any(|p| has_extension(p));
    let out = work.join(if development {
        format!("{name}.dev.wasm")
    } else {
        format!("{name}.wasm")
    });
    let interpreter = match development {
        true => Some(python_interpreter(&tool)?),
        false => None,
    };
    // A package installed since the last build changes no source but
    // `site-packages` itself; a new interpreter, none.
    let installed = packages
        .iter()
        .chain(&interpreter)
        .any(|p| newer_than(p, &out));
    if !installed && up_to_date(dir, &out, sdk_changed) {
        return Ok((out, false));
    }
    let mut files = python_files(dir, &packages)?;
    if let Some(interpreter) = interpreter {
        let given = serde_json::json!({"name": name, "module": module, "files": files});
        let mut bytes =
            std::fs::read(&interpreter).with_context(|| format!("cannot read {interpreter:?}"))?;
        crate::runtime::source_section::append(&mut bytes, &given.to_string());
        replace(&out, &bytes)?;
        return Ok((out, true));
    }
    // A component is a function of its inputs, but componentize-py's
    // snapshot is not reproducible byte for byte: the components of the
    // last few inputs are kept by digest, and the same inputs give back
    // the same component, hence the same version (a touched file, a
    // `git checkout` of the same code, an edit undone).
    files.insert("\0sdk/wasmpipe.py".into(), SDK.into());
    files.insert("\0sdk/wasmpipe_app.py".into(), app.clone());
    files.insert("\0sdk/stage.wit".into(), STAGE_WIT.into());
    files.insert("\0sdk/componentize-py".into(), tool_version(&tool));
    let kept = work.join("builds").join(format!("{}.wasm", digest(&files)));
    if kept.is_file() {
        let bytes = std::fs::read(&kept).with_context(|| format!("cannot read {kept:?}"))?;
        replace(&out, &bytes)?;
        // Kept as recently used, which is what `prune` goes by.
        let _ =
            std::fs::File::open(&kept).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok((out, false));
    }
    let mut cmd = Command::new(&tool);
    cmd.arg("-d")
        .arg(work.join("wit"))
        .args(["-w", "plugin", "componentize", "wasmpipe_app", "-p"])
        .arg(dir)
        .arg("-p")
        .arg(&work);
    for p in &packages {
        cmd.arg("-p").arg(p);
    }
    let part = kept.with_extension("wasm.part");
    std::fs::create_dir_all(kept.parent().expect("in builds/"))?;
    cmd.arg("-o").arg(&part).current_dir(dir);
    let what = format!("componentize-py on {}", source.display());
    // Its messages are read before they are shown: a C extension's import
    // failure is said in wasmpipe's words, not as componentize-py's
    // AssertionError traceback.
    let output = super::tool_output(&mut cmd, &what)?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        if let Some((module, file)) = c_extension(&said, &packages) {
            bail!(
                "{} imports `{module}`, a C extension ({}): C extensions cannot be loaded in a component; use a pure-Python package instead (or one whose pure-Python fallback is used when its extension is missing)",
                source.display(),
                file.display()
            );
        }
        eprint!("{said}");
        bail!("{what} failed ({}); its messages are above", output.status);
    }
    super::show_progress(&output);
    std::fs::rename(&part, &kept).with_context(|| format!("cannot write {kept:?}"))?;
    prune(&work.join("builds"), 4);
    let bytes = std::fs::read(&kept).with_context(|| format!("cannot read {kept:?}"))?;
    replace(&out, &bytes)?;
    Ok((out, true))
}

/// Writes `bytes` to `path` whole or not at all: a watcher or a loader
/// never sees half a component.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let part = path.with_extension("wasm.part");
    std::fs::write(&part, bytes).with_context(|| format!("cannot write {part:?}"))?;
    std::fs::rename(&part, path).with_context(|| format!("cannot write {path:?}"))
}

/// The stage's Python modules and those of its `.venv` packages, by path
/// relative to their root (`stage.py`, `dateutil/parser.py`): what the
/// development interpreter imports, and the inputs of a build.
fn python_files(
    dir: &Path,
    packages: &[PathBuf],
) -> Result<std::collections::BTreeMap<String, String>> {
    fn walk(
        root: &Path,
        at: &Path,
        skip: &dyn Fn(&str) -> bool,
        files: &mut std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(at) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if skip(&name) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, skip, files)?;
            } else if name.ends_with(".py") {
                let rel = p.strip_prefix(root).expect("below its root");
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {p:?} (Python sources are UTF-8)"))?;
                files
                    .entry(rel.to_string_lossy().replace('\\', "/"))
                    .or_insert(text);
            }
        }
        Ok(())
    }
    let mut files = std::collections::BTreeMap::new();
    walk(dir, dir, &|n| NOT_SOURCE.contains(&n), &mut files)?;
    // pip and its kind come with every virtual environment; no stage
    // imports them.
    let tooling = |n: &str| {
        [
            "pip",
            "setuptools",
            "_distutils_hack",
            "pkg_resources",
            "__pycache__",
        ]
        .contains(&n)
            || n.ends_with(".dist-info")
    };
    for p in packages {
        walk(p, p, &tooling, &mut files)?;
    }
    Ok(files)
}

/// Whether `site-packages` holds a compiled extension.
fn has_extension(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                has_extension(&p)
            } else {
                p.extension().is_some_and(|x| x == "so" || x == "pyd")
            }
        })
}

/// A short digest of `files`, names and contents.
fn digest(files: &std::collections::BTreeMap<String, String>) -> String {
    let mut d = Sha256::new();
    for (name, text) in files {
        d.update(name.as_bytes());
        d.update([0]);
        d.update(text.as_bytes());
        d.update([0]);
    }
    hex::encode(d.finalize())[..32].to_string()
}

/// Leaves the `keep` most recently built components in `dir`.
fn prune(dir: &Path, keep: usize) {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    for (_, p) in found.into_iter().skip(keep) {
        let _ = std::fs::remove_file(p);
    }
}

/// What `componentize-py --version` says: a build input.
fn tool_version(tool: &Path) -> String {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The Python development interpreter (see `super::interpreter`).
fn python_interpreter(tool: &Path) -> Result<PathBuf> {
    let version = tool_version(tool);
    let inputs = [SDK, INTERPRETER, STAGE_WIT, version.as_str()];
    interpreter("python", &inputs, |work, out| {
        write_files(
            work,
            &[
                ("wasmpipe.py", SDK),
                ("wasmpipe_interpreter.py", INTERPRETER),
                ("wit/stage.wit", STAGE_WIT),
            ],
        )?;
        let mut cmd = Command::new(tool);
        cmd.arg("-d")
            .arg(work.join("wit"))
            .args(["-w", "plugin", "componentize", "wasmpipe_interpreter", "-p"])
            .arg(work)
            .arg("-o")
            .arg(out)
            .current_dir(work);
        super::run_tool(&mut cmd, "componentize-py on the development interpreter")
    })
}

/// The module componentize-py could not import, when it is a compiled
/// extension (`.so`, `.pyd`) in one of the stage's `packages`, and its file.
fn c_extension(said: &str, packages: &[PathBuf]) -> Option<(String, PathBuf)> {
    let module = said
        .split("No module named '")
        .skip(1)
        .find_map(|rest| rest.split_once('\'').map(|(m, _)| m))?;
    let mut parts: Vec<&str> = module.split('.').collect();
    let last = parts.pop()?;
    packages.iter().find_map(|p| {
        let folder = parts.iter().fold(p.clone(), |d, part| d.join(part));
        let prefix = format!("{last}.");
        std::fs::read_dir(&folder).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let native = name.ends_with(".so") || name.ends_with(".pyd");
            (name.starts_with(&prefix) && native).then(|| (module.to_string(), e.path()))
        })
    })
}

/// The `site-packages` of the stage's own virtual environment
/// (`<stage>/.venv`, as `python -m venv .venv` or uv make it): the PyPI
/// packages the stage imports are installed there, and componentize-py
/// takes the pure-Python ones into the component.
fn venv_packages(dir: &Path) -> Vec<PathBuf> {
    let Ok(versions) = std::fs::read_dir(dir.join(".venv").join("lib")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = versions
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

/// `componentize-py`: the toolchain's, else the one on `PATH`.
fn componentize_py() -> Result<PathBuf> {
    let toolchain = toolchains_dir().map(|t| t.join("python/bin/componentize-py"));
    if let Some(t) = toolchain.filter(|t| t.is_file()) {
        return Ok(t);
    }
    let on_path = PathBuf::from("componentize-py");
    match Command::new(&on_path).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(on_path),
        _ => bail!(
            "Python stages are built with componentize-py, which is not installed: run `pip install componentize-py=={COMPONENTIZE_PY}`, or `wasmpipe toolchains install python` once for every stage on this machine"
        ),
    }
}
