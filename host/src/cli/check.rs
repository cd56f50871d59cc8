//! `wasmpipe check`: validate a manifest and load every stage without
//! running anything.

use super::{EXIT_OK, load_pipeline};
use anyhow::Result;
use std::path::PathBuf;

/// Validate a manifest: parse it, compile and load every stage, check each
/// stage's ABI version and kind against the manifest, and configure one
/// instance of each with its params. Runs no events but the stages'
/// `samples`, which must all pass.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The pipeline manifest (TOML).
    manifest: PathBuf,
    /// Do not read or write the compiled-module cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(args: CheckArgs) -> Result<u8> {
    let (manifest, pipeline) = load_pipeline(&args.manifest, Some(1), args.no_cache, false)?;
    pipeline.executor(&pipeline.live()).warm_up()?;
    check_samples(&manifest, &pipeline)?;
    println!(
        "ok: pipeline `{}` with {} stages",
        pipeline.name,
        pipeline.stages.len()
    );
    for s in &pipeline.stages {
        let key = s
            .spec
            .key
            .as_deref()
            .map(|k| format!(", key {k}"))
            .unwrap_or_default();
        let origin = match s.origin {
            crate::runtime::ModuleOrigin::Compiled => "compiled",
            crate::runtime::ModuleOrigin::Cached => "cached",
        };
        println!(
            "  {:<16} {:<8} {} (version {}, {origin}{key})",
            s.name(),
            s.kind.as_str(),
            s.spec.plugin.display(),
            s.short_version()
        );
    }
    Ok(EXIT_OK)
}

/// Runs every stage that has `samples` over them (the check a new version
/// must pass under `run --watch`).
pub(super) fn check_samples(
    manifest: &crate::manifest::Manifest,
    pipeline: &crate::exec::Pipeline,
) -> Result<()> {
    use crate::reload::trial::{SampleFailed, trial};
    for (st, stage) in manifest.doc.stages.iter().zip(&pipeline.stages) {
        if let Some(samples) = &st.samples {
            let path = manifest.resolve(samples.get_ref());
            trial(&pipeline.runtime, stage, Some(&path), &pipeline.name).map_err(|e| {
                // A stage rewritten to take other events fails the samples
                // written for the old one: point at the manifest's
                // `samples` and say how to get going again.
                match e.downcast::<SampleFailed>() {
                    Ok(f) => {
                        let hint = f.hint(&manifest.path);
                        anyhow::anyhow!(
                            manifest
                                .diagnostic_at(samples.span(), f.to_string())
                                .with_hint(hint)
                        )
                    }
                    Err(e) => e,
                }
            })?;
        }
    }
    Ok(())
}
