//! The check a new stage version passes before it may serve: one instance
//! configured with its params, then, when the manifest gives the stage
//! sample events, a run over them in which any failure (a trap, a timeout,
//! running out of memory, an ABI violation, an event the stage rejects)
//! rejects the version.

use crate::exec::{Chain, ChunkLimits, JsonLines, RunContext, Source};
use crate::manifest::StageKind;
use crate::runtime::{Runtime, Stage};
use anyhow::{Context as _, Result, bail};
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

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
    while let Some(chunk) = source.next_chunk()? {
        if let Some(r) = chunk.rejects.first() {
            bail!("sample on line {} of {samples:?}: {}", r.line, r.error);
        }
        any |= !chunk.is_empty();
        let outcome = chain.process(&chunk, &ctx)?;
        if let Some(f) = outcome.failures.first() {
            bail!(
                "stage `{}` failed sample event on line {} of {samples:?}: {}",
                stage.name(),
                chunk.lines[f.event as usize],
                f.error
            );
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
