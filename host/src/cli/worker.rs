//! `wasmpipe worker`: process a pipeline's chunks from NATS JetStream.

use super::{EXIT_OK, load_pipeline};
use anyhow::{Context as _, Result};
use std::io::Write as _;
use std::path::PathBuf;

/// Process chunks queued by `wasmpipe serve` ingest nodes on NATS
/// JetStream and store outputs, dead letters and results in PostgreSQL
/// (the manifest's `[queue] kind = "nats"` and `[store] kind = "postgres"`).
/// Start as many as needed, on any machines (see docs/deploy.md).
///
/// Prints `worker ready` on stdout once connected (with the metrics
/// address when `--metrics` is given). Stops on SIGTERM or
/// ctrl-c after finishing the chunks in hand; exit 0.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The pipeline manifest (TOML), with `[queue]` and `[store]` tables.
    manifest: PathBuf,
    /// Chunks processed at once, overriding the manifest (default: one per core).
    #[arg(long, short)]
    workers: Option<usize>,
    /// Serve `GET /metrics` (Prometheus) and `GET /healthz` on this address
    /// (port 0: any free port; printed on the ready line).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Hot reload: watch the manifest's stages (plugin files or crates) and
    /// swap changed ones in between chunks, as `run --watch` does.
    #[arg(long)]
    watch: bool,
    /// Do not read or write the compiled-module cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(args: WorkerArgs) -> Result<u8> {
    let (manifest, mut pipeline) =
        load_pipeline(&args.manifest, args.workers, args.no_cache, args.watch)?;
    let _watching = if args.watch {
        Some(super::start_watching(&manifest, &mut pipeline, false)?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmpipe-worker")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let ready = |metrics: Option<std::net::SocketAddr>| -> Result<()> {
            let mut out = std::io::stdout().lock();
            match metrics {
                Some(addr) => writeln!(out, "worker ready; metrics on http://{addr}/metrics")?,
                None => writeln!(out, "worker ready")?,
            }
            out.flush()?;
            Ok(())
        };
        crate::worker::run(
            &manifest,
            pipeline,
            args.metrics,
            super::shutdown_signal(),
            ready,
        )
        .await
    })?;
    Ok(EXIT_OK)
}
