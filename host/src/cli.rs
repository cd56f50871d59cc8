//! The `wasmpipe` command line: one module per subcommand, help text from
//! doc comments. `main` prints the whole error chain and maps outcomes to
//! exit codes.

mod build;
mod check;
mod client;
mod deploy;
mod diff;
mod inspect;
mod new;
mod query;
mod run;
mod serve;
mod tail;
mod test;
mod toolchains;
mod worker;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code: every event was processed.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command failed (bad manifest, unloadable stage, I/O error).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the run completed but some events became dead letters.
pub const EXIT_DEAD_LETTERS: u8 = 3;
/// Exit code: `wasmpipe test` produced outputs other than `--expect`ed.
pub const EXIT_MISMATCH: u8 = 4;

/// Run map / filter / flat_map / reduce stages compiled to WebAssembly over
/// streams of JSON events.
#[derive(Debug, Parser)]
#[command(name = "wasmpipe", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level filter (error, warn, info, debug, trace); `RUST_LOG` also works.
    #[arg(long, global = true, default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::RunArgs),
    Check(check::CheckArgs),
    Inspect(inspect::InspectArgs),
    New(new::NewArgs),
    Build(build::BuildArgs),
    Test(test::TestArgs),
    Toolchains(toolchains::ToolchainsArgs),
    Serve(serve::ServeArgs),
    Tail(tail::TailArgs),
    Diff(diff::DiffArgs),
    Deploy(deploy::DeployArgs),
    Query(query::QueryArgs),
    Worker(worker::WorkerArgs),
}

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::New(args) => new::run(args),
        Command::Build(args) => build::run(args),
        Command::Test(args) => test::run(args),
        Command::Toolchains(args) => toolchains::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Query(args) => query::run(args),
        Command::Worker(args) => worker::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(EXIT_OK);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    // wasmtime and its WASI layer log every compilation step and open a
    // span per guest call; keep them out of the way unless asked for by
    // `RUST_LOG`, so that guest output reads as plain tagged lines.
    let quiet = "tokio_postgres=warn,async_nats=warn,cranelift_codegen=warn,cranelift_frontend=warn,wasmtime=warn,wasmtime_cranelift=warn,wiggle=off,wasmtime_wasi=off";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},{quiet}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Loads a manifest and every stage in it, with a runtime sized for it
/// (and, when `watch`, for stages and limits that a reload may add).
fn load_pipeline(
    path: &std::path::Path,
    workers: Option<usize>,
    no_cache: bool,
    watch: bool,
) -> anyhow::Result<(crate::manifest::Manifest, crate::exec::Pipeline)> {
    use crate::manifest::{DEFAULT_MEMORY, Manifest};
    use crate::runtime::{Runtime, RuntimeConfig, default_cache_dir};
    // Under `--watch` an edit should be live at once: JavaScript and
    // Python stages are development builds (see `crate::build`).
    crate::build::set_development(watch);
    let manifest = Manifest::load(path)?;
    let doc = &manifest.doc;
    let workers = workers
        .or(doc.runtime.workers.map(|n| n.get()))
        .unwrap_or_else(crate::exec::default_workers);
    let max_memory = doc
        .stages
        .iter()
        .map(|s| {
            s.limits
                .memory
                .or(doc.runtime.memory)
                .unwrap_or(DEFAULT_MEMORY)
                .0
        })
        .max()
        .unwrap_or(DEFAULT_MEMORY.0);
    let cache_dir = if no_cache {
        None
    } else {
        doc.runtime
            .cache_dir
            .as_ref()
            .map(|d| manifest.resolve(d))
            .or_else(default_cache_dir)
    };
    // A reload may add stages and raise limits, so a watched pipeline gets
    // room for 16 stages and the largest memory a wasm32 module can have.
    let (stages, max_memory) = if watch {
        (doc.stages.len().max(16), 4 << 30)
    } else {
        (doc.stages.len(), max_memory.next_multiple_of(64 << 10))
    };
    let config = RuntimeConfig {
        // Every worker's instances, plus one per stage for metadata and the
        // final combine, plus replacements created while old ones drain.
        max_instances: ((workers + 2) * stages * 2 + 8) as u32,
        max_memory,
        cache_dir,
    };
    let runtime = std::sync::Arc::new(if watch {
        Runtime::for_reloading(&config)?
    } else {
        Runtime::new(&config)?
    });
    let mut pipeline = crate::exec::Pipeline::from_manifest(&manifest, runtime)?;
    pipeline.workers = workers;
    Ok((manifest, pipeline))
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Hot reload for a long-running command: the pipeline's stages become
/// live (replaced whole between chunks) and a watcher thread reloads them
/// when the manifest or a plugin changes, until the handle is dropped.
///
/// With `candidates` (`run`), a `candidate` the manifest names runs beside
/// its stage's live version; `serve` and `worker` take theirs from
/// `wasmpipe deploy`.
fn start_watching(
    manifest: &crate::manifest::Manifest,
    pipeline: &mut crate::exec::Pipeline,
    candidates: bool,
) -> anyhow::Result<crate::reload::WatchHandle> {
    check::check_samples(manifest, pipeline)?;
    let live = std::sync::Arc::new(crate::exec::LiveStages::new(pipeline.stages.clone()));
    pipeline.live = Some(live.clone());
    let mut reloader =
        crate::reload::Reloader::new(manifest.clone(), pipeline.runtime.clone(), live.clone())?;
    if candidates {
        let deploys = crate::exec::deploy::Deploys::of(pipeline, live, pipeline.policy);
        pipeline.deploys = Some(deploys.clone());
        reloader = reloader.with_candidates(deploys);
    }
    crate::reload::spawn(reloader)
}
