//! `wasmpipe build`: compile a stage crate for `wasm32-wasip1`.

use super::EXIT_OK;
use crate::runtime::{Runtime, RuntimeConfig, Stage, StageSpec, linker};
use anyhow::{Context as _, Result};
use std::path::PathBuf;

/// Build a stage crate (`cargo build --release --target wasm32-wasip1`),
/// check that the result is a wasmpipe stage, and print the path of its
/// `.wasm` on stdout.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The stage crate's directory.
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
