//! Python stages: built into a component by componentize-py (CPython,
//! snapshotted with the stage's module), with the SDK
//! (`plugin-sdk/python/wasmpipe.py`) beside the stage module.

use super::{STAGE_WIT, WORK_DIR, stage_name, toolchains_dir, up_to_date, write_files};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK module, written beside the stage at `new` and every build.
pub const SDK: &str = include_str!("../../../plugin-sdk/python/wasmpipe.py");

/// What of `.wasmpipe/` is not kept in version control: all but the SDK
/// module, which a stage's native tests import.
pub const WORK_GITIGNORE: &str = "*\n!.gitignore\n!wasmpipe.py\n";

/// The componentize-py version the SDK is tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Builds `source` (the stage's `stage.py`) in `dir` into
/// `dir/.wasmpipe/<dir name>.wasm`; says whether it ran the tool.
pub fn build(dir: &Path, source: &Path) -> Result<(PathBuf, bool)> {
    let tool = componentize_py()?;
    let work = dir.join(WORK_DIR);
    let name = stage_name(dir);
    let module = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage".into());
    let app = format!(
        "# Written by `wasmpipe build`: the component's entry module.\nimport {module}  # noqa: F401  (registers the stage function)\nimport wasmpipe\n\nStage = wasmpipe._component_stage({name:?})\n"
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
    let out = work.join(format!("{name}.wasm"));
    let packages = venv_packages(dir);
    // A package installed since the last build changes no source but
    // `site-packages` itself.
    let installed = packages.iter().any(|p| newer_than(p, &out));
    if !installed && up_to_date(dir, &out, sdk_changed) {
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
    cmd.arg("-o").arg(&out).current_dir(dir);
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
    Ok((out, true))
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

/// Whether `path` was modified after `out` was (or `out` does not exist).
fn newer_than(path: &Path, out: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    match (modified(path), modified(out)) {
        (Ok(p), Ok(o)) => p > o,
        _ => true,
    }
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
            "Python stages are built with componentize-py, which is not installed: run `pip install componentize-py=={COMPONENTIZE_PY}`, or `bash plugin-sdk/toolchains install python` once for every stage on this machine"
        ),
    }
}
