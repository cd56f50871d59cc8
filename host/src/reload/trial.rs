//! The check a new stage version passes before it may serve: one instance
//! configured with its params, then, when the manifest gives the stage
//! sample events, a run over them in which any failure (a trap, a timeout,
//! running out of memory, an ABI violation, an event the stage rejects)
//! rejects the version.

use crate::exec::{Chain, ChunkLimits, JsonLines, RunContext, Source};
use crate::manifest::StageKind;
use crate::runtime::{Runtime, Stage};
use anyhow::{Context as _, Result};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A sample event the stage did not get through: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` failed the sample at {}:{line}: {error}", file.display())]
pub struct SampleFailed {
    /// The stage.
    pub stage: String,
    /// The samples file.
    pub file: PathBuf,
    /// The sample's line in it (1-based).
    pub line: u64,
    /// Why it failed.
    pub error: String,
}

impl SampleFailed {
    /// What to do when the stage is right and the sample is what changed
    /// (a stage rewritten to take other events): `manifest` holds `samples`.
    pub fn hint(&self, manifest: &Path) -> String {
        format!(
            "if the stage is right, edit or remove the sample at {}:{}, or remove `samples` from stage `{}` in {} to run it without this check",
            self.file.display(),
            self.line,
            self.stage,
            manifest.display()
        )
    }
}

/// Instantiates `stage` and runs it over `samples` (JSON lines), if given.
pub fn trial(
    runtime: &Arc<Runtime>,
    stage: &Arc<Stage>,
    samples: Option<&Path>,
    pipeline: &str,
) -> Result<()> {
    let mut chain = Chain::new(runtime.clone(), vec![stage.clone()]);
    chain.warm_up()?;
    let Some(samples) = samples else {
        return Ok(());
    };
    let file =
        std::fs::File::open(samples).with_context(|| format!("cannot open samples {samples:?}"))?;
    let mut source = JsonLines::new(BufReader::new(file), ChunkLimits::default(), Arc::default());
    let ctx = RunContext::local().chunk_json(pipeline, 0)?;
    let mut any = false;
    let failed = |line: u64, error: &str| SampleFailed {
        stage: stage.name().to_string(),
        file: samples.to_path_buf(),
        line,
        error: error.to_string(),
    };
    while let Some(chunk) = source.next_chunk()? {
        if let Some(r) = chunk.rejects.first() {
            return Err(failed(r.line, &r.error).into());
        }
        any |= !chunk.is_empty();
        let outcome = chain.process(&chunk, &ctx)?;
        if let Some(f) = outcome.failures.first() {
            return Err(failed(chunk.lines[f.event as usize], &f.error).into());
        }
    }
    if stage.kind == StageKind::Reduce && any {
        let acc = chain.take_accumulator();
        chain.combine(&acc, &acc).with_context(|| {
            format!(
                "stage `{}` failed to combine the samples' accumulators",
                stage.name()
            )
        })?;
    }
    Ok(())
}
