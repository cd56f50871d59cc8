//! `wasmpipe build`: build a stage's folder into a `.wasm`, in any of the
//! four languages.

use super::EXIT_OK;
use crate::runtime::{Runtime, RuntimeConfig, Stage, StageSpec, linker};
use anyhow::{Context as _, Result};
use std::path::PathBuf;

/// Build a stage, check that the result is a wasmpipe stage, and print the
/// path of its `.wasm` on stdout.
///
/// A folder with a `Cargo.toml` is a Rust crate, built by `cargo build
/// --release --target wasm32-wasip1`. One with `stage.js` or `stage.ts` is
/// bundled (with its helpers and npm packages) and built into a component
/// by componentize-js; one with `stage.py`, with the packages of its
/// `.venv`, by componentize-py. Both write `.wasmpipe/<folder>.wasm`, with
/// tools installed once per machine by `wasmpipe toolchains install`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The stage's folder: a crate, or one with `stage.js`, `stage.ts` or
    /// `stage.py`.
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub fn run(args: BuildArgs) -> Result<u8> {
    let wasm = crate::build::build_stage(&args.dir)?;
    let rt = Runtime::new(&RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    })?;
    let spec = StageSpec::standalone("build", wasm.clone());
    let stage = Stage::load(&rt, &linker(&rt)?, spec)
        .with_context(|| format!("{} built, but it is not a usable stage", wasm.display()))?;
    eprintln!(
        "built `{}`: a {} stage, version {}",
        stage.meta.name,
        stage.kind,
        stage.short_version()
    );
    println!("{}", wasm.display());
    Ok(EXIT_OK)
}
