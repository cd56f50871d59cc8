//! `wasmpipe serve`: run a pipeline as an HTTP service.

use super::{EXIT_OK, load_pipeline};
use anyhow::{Context as _, Result};
use std::io::Write as _;
use std::path::PathBuf;

/// Serve a pipeline over HTTP: accept batches of events as jobs, journal
/// them in SQLite, process them and store the outputs, dead letters and
/// each job's result (see docs/api.md). With `[queue] kind = "nats"` it is
/// an ingest node instead: batches go to NATS JetStream for `wasmpipe
/// worker`s, and jobs and results are read from PostgreSQL (docs/deploy.md).
///
/// Prints `listening on http://ADDR` (`https://` with TLS) on stdout once ready. Stops on
/// SIGTERM or ctrl-c: no new connections, requests and chunks in flight
/// finish, queued chunks wait in the database for the next start; exit 0.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The pipeline manifest (TOML), with an optional `[serve]` table.
    manifest: PathBuf,
    /// Listen address, overriding `[serve].listen` (port 0: any free port).
    #[arg(long, short)]
    listen: Option<std::net::SocketAddr>,
    /// SQLite database, overriding `[serve].database` (embedded queue only).
    #[arg(long)]
    database: Option<PathBuf>,
    /// Worker threads, overriding the manifest (default: one per core;
    /// embedded queue only: an ingest node runs none).
    #[arg(long, short)]
    workers: Option<usize>,
    /// Hot reload: watch the manifest's stages (plugin files or crates) and
    /// swap changed ones in between chunks, as `run --watch` does.
    #[arg(long)]
    watch: bool,
    /// Do not read or write the compiled-module cache.
    #[arg(long)]
    no_cache: bool,
    /// Serve https with this certificate chain (PEM), overriding
    /// `[serve.tls] cert`; re-read when it changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM), overriding `[serve.tls] key`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> Result<u8> {
    let (mut manifest, mut pipeline) =
        load_pipeline(&args.manifest, args.workers, args.no_cache, args.watch)?;
    let _watching = if args.watch {
        Some(super::start_watching(&manifest, &mut pipeline, false)?)
    } else {
        None
    };
    if manifest.clustered() && (args.database.is_some() || args.workers.is_some()) {
        anyhow::bail!(
            "--database and --workers apply to the embedded queue, and {} uses NATS; hint: drop them (workers are `wasmpipe worker` processes, results live in `[store]`)",
            args.manifest.display()
        );
    }
    let serve = manifest.doc.serve.get_or_insert_with(Default::default);
    if let Some(db) = &args.database {
        serve.database = std::path::absolute(db)?.display().to_string();
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let (cert, key) = (std::path::absolute(cert)?, std::path::absolute(key)?);
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        match &mut serve.tls {
            Some(t) => (t.cert, t.key) = (cert, key),
            None => serve.tls = Some(crate::manifest::TlsSection::files(cert, key)),
        }
    }
    let listen = args.listen.unwrap_or(serve.listen.get_ref().0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmpipe-http")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let shutdown = super::shutdown_signal();
        // Announced once the store is open and the workers are up, so a
        // client that waits for this line finds the server ready.
        let ready = |url: &str| -> Result<()> {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {url}")?;
            out.flush()?;
            Ok(())
        };
        crate::serve::run(&manifest, pipeline, listener, shutdown, ready).await
    })?;
    Ok(EXIT_OK)
}
