//! `wasmpipe run`: run a pipeline over a file or stdin.

use super::{EXIT_DEAD_LETTERS, EXIT_OK, load_pipeline};
use crate::exec::{
    ChunkLimits, DeadLetterSink, JsonArray, JsonLines, RunContext, RunSummary, Source,
};
use crate::manifest::SourceFormat;
use crate::reload::follow::{Follow, FollowInput};
use anyhow::{Context as _, Result, bail};
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Run a pipeline over its source and write its outputs.
///
/// Exit status: 0 when every event was processed, 3 when the run completed
/// but some events became dead letters, 1 on error.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline manifest (TOML).
    manifest: PathBuf,
    /// Read events from this file instead of the manifest's source ("-": stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Write outputs to this file instead of the manifest's sink ("-": stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Write dead letters to this file instead of the manifest's.
    #[arg(long)]
    dead_letters: Option<PathBuf>,
    /// Input framing, overriding the manifest.
    #[arg(long, value_parser = ["jsonl", "json_array"])]
    format: Option<String>,
    /// Worker threads, overriding the manifest (default: one per core).
    #[arg(long, short, value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: Option<u32>,
    /// Events per chunk, overriding the manifest.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    chunk_size: Option<u32>,
    /// Do not read or write the compiled-module cache.
    #[arg(long)]
    no_cache: bool,
    /// Set a context field every stage sees (`Context::meta`), overriding
    /// the defaults (pipeline, job, host, received_at, chunk). Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// No progress bar, no summary, and no progress of the stages' builds.
    #[arg(long, short)]
    quiet: bool,
    /// Keep running: follow the input file as it grows (or read stdin until
    /// it closes), and hot-reload the manifest and every stage's plugin
    /// when they change on disk. Ctrl-C or SIGTERM stops cleanly after the
    /// chunks in flight. JSON lines input only.
    #[arg(long)]
    watch: bool,
}

pub fn run(args: RunArgs) -> Result<u8> {
    crate::build::set_quiet(args.quiet);
    let (manifest, mut pipeline) = load_pipeline(
        &args.manifest,
        args.workers.map(|w| w as usize),
        args.no_cache,
        args.watch,
    )?;
    let doc = &manifest.doc;

    let input = match &args.input {
        Some(p) => Some(p.clone()),
        None => doc
            .source
            .path
            .as_ref()
            .map(|p| p.get_ref())
            .filter(|p| *p != "-")
            .map(|p| manifest.resolve(p)),
    }
    .filter(|p| p.as_os_str() != "-");
    let format = match args.format.as_deref() {
        Some("json_array") => SourceFormat::JsonArray,
        Some(_) => SourceFormat::Jsonl,
        None => doc.source.format.unwrap_or(match &input {
            Some(p) if p.extension().is_some_and(|e| e == "json") => SourceFormat::JsonArray,
            _ => SourceFormat::Jsonl,
        }),
    };
    let limits = ChunkLimits {
        events: args
            .chunk_size
            .map(|n| n as usize)
            .or(doc.runtime.chunk_size.map(|n| n.get()))
            .unwrap_or(crate::manifest::DEFAULT_CHUNK_SIZE)
            .max(1),
        max_event: doc
            .runtime
            .max_event_size
            .map_or(ChunkLimits::default().max_event, |b| b.0 as usize),
        ..ChunkLimits::default()
    };
    let read = Arc::new(AtomicU64::new(0));
    let mut watching = None;
    let (source, total_bytes): (Box<dyn Source>, Option<u64>) = if args.watch {
        if format == SourceFormat::JsonArray {
            bail!("`--watch` reads JSON lines; a JSON array has an end and cannot be followed");
        }
        watching = Some(super::start_watching(&manifest, &mut pipeline, true)?);
        let stop = Arc::new(AtomicBool::new(false));
        crate::reload::stop_on_signal(stop.clone())?;
        let from = match &input {
            Some(p) => FollowInput::File(p.clone()),
            None => FollowInput::Stdin,
        };
        let source = Follow::new(from, limits, stop, read.clone())
            .with_context(|| format!("cannot open input {input:?}"))?;
        (Box::new(source), None)
    } else {
        plain_source(input.as_ref(), format, limits, read.clone())?
    };

    let output = args.output.clone().or_else(|| {
        doc.sink
            .path
            .as_ref()
            .filter(|p| *p != "-")
            .map(|p| manifest.resolve(p))
    });
    let dl_path = args
        .dead_letters
        .clone()
        .or_else(|| doc.dead_letters.path.as_ref().map(|p| manifest.resolve(p)))
        .unwrap_or_else(|| manifest.dir.join(format!("{}.dead.jsonl", manifest.name())));
    refuse_overwriting_input(input.as_ref(), output.as_ref(), &dl_path)?;
    // A watched pipeline writes each chunk as soon as it is done (one write
    // per chunk), so that its output can be followed.
    let buffer = if args.watch { 0 } else { 1 << 20 };
    let mut sink: Box<dyn Write> = match output.as_ref().filter(|p| p.as_os_str() != "-") {
        Some(p) => Box::new(BufWriter::with_capacity(
            buffer,
            std::fs::File::create(p).with_context(|| format!("cannot create output file {p:?}"))?,
        )),
        None => Box::new(BufWriter::with_capacity(buffer, std::io::stdout().lock())),
    };
    let mut dead = DeadLetterSink::file(dl_path.clone())?;
    if args.watch {
        dead = dead.flush_each();
    }

    let bar = match total_bytes {
        Some(total) if !args.quiet && std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .expect("valid template"),
            );
            Some(bar)
        }
        _ => None,
    };
    let mut progress = |s: &RunSummary| {
        if let Some(bar) = &bar {
            bar.set_position(read.load(Ordering::Relaxed));
            bar.set_message(format!("{} events, {} dead", s.events_read, s.dead_letters));
        }
    };
    let mut ctx = RunContext::local();
    ctx.extra.extend(
        args.meta
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))),
    );
    pipeline.streaming = args.watch || input.is_none();
    let summary = pipeline.run(source, &mut sink, &mut dead, &ctx, &mut progress)?;
    drop(watching);
    // What a candidate found, over every chunk it was sent.
    if let Some(d) = &pipeline.deploys {
        d.settle(std::time::Duration::from_secs(10));
        d.set_local(None);
    }
    drop(sink);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !args.quiet {
        eprint!("{}", render_summary(&summary));
        if summary.dead_letters > 0 {
            eprintln!("dead letters written to {}", dl_path.display());
        }
    }
    Ok(if summary.dead_letters > 0 {
        EXIT_DEAD_LETTERS
    } else {
        EXIT_OK
    })
}

/// The source of a plain run: a file or stdin, read to its end.
fn plain_source(
    input: Option<&PathBuf>,
    format: SourceFormat,
    limits: ChunkLimits,
    read: Arc<AtomicU64>,
) -> Result<(Box<dyn Source>, Option<u64>)> {
    // JSON lines are read in large blocks straight from the file (a
    // `BufReader` would add a copy); the JSON array scanner reads bytewise
    // from a buffer.
    let (reader, total_bytes, name): (Box<dyn std::io::Read + Send>, Option<u64>, String) =
        match input {
            Some(p) => {
                let f =
                    std::fs::File::open(p).with_context(|| format!("cannot open input {p:?}"))?;
                let len = f.metadata().ok().map(|m| m.len());
                (Box::new(f), len, p.display().to_string())
            }
            None => (Box::new(std::io::stdin()), None, "<stdin>".into()),
        };
    let source: Box<dyn Source> = match format {
        SourceFormat::Jsonl => Box::new(JsonLines::new(reader, limits, read)),
        SourceFormat::JsonArray => Box::new(JsonArray::new(
            BufReader::with_capacity(1 << 20, reader),
            limits,
            read,
            name,
        )),
    };
    Ok((source, total_bytes))
}

/// The end-of-run table: events in / out / failed per stage, then totals.
pub fn render_summary(s: &RunSummary) -> String {
    let mut out = String::new();
    let w = s
        .stages
        .iter()
        .map(|(n, _, _)| n.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:<w$}  {:<8}  {:>12}  {:>12}  {:>8}  {:>9}  {:>12}\n",
        "stage", "kind", "in", "out", "failed", "busy", "in/s/worker"
    ));
    for (name, kind, c) in &s.stages {
        // Busy time is summed over workers: its rate is per worker.
        let busy = c.busy.as_secs_f64();
        let rate = if busy > 0.0 {
            c.events_in as f64 / busy
        } else {
            0.0
        };
        out.push_str(&format!(
            "{:<w$}  {:<8}  {:>12}  {:>12}  {:>8}  {:>8.2}s  {:>12.0}\n",
            name,
            kind.as_str(),
            c.events_in,
            c.events_out,
            c.failed,
            busy,
            rate
        ));
    }
    let secs = s.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        s.events_read as f64 / secs
    } else {
        0.0
    };
    out.push_str(&format!(
        "{} events in {:.2}s ({:.0} events/s); {} outputs; {} dead letters{}\n",
        s.events_read,
        secs,
        rate,
        s.outputs,
        s.dead_letters,
        if s.rejected > 0 {
            format!(" ({} refused by the source)", s.rejected)
        } else {
            String::new()
        }
    ));
    out
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Refuses a run whose output or dead-letter file is its input file (by
/// any name: a link, `./`, a symbolic link): creating the output would
/// empty the input before a line of it is read.
fn refuse_overwriting_input(
    input: Option<&PathBuf>,
    output: Option<&PathBuf>,
    dead_letters: &PathBuf,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let Some(input) = input else { return Ok(()) };
    let Ok(inp) = std::fs::metadata(input) else {
        return Ok(());
    };
    if !inp.is_file() {
        return Ok(());
    }
    let outputs = [("output", output), ("dead-letter", Some(dead_letters))];
    for (what, path) in outputs {
        let Some(path) = path.filter(|p| p.as_os_str() != "-") else {
            continue;
        };
        if let Ok(m) = std::fs::metadata(path)
            && m.dev() == inp.dev()
            && m.ino() == inp.ino()
        {
            bail!(
                "the {what} file {path:?} is the input file {input:?}: writing it would destroy the input; hint: write to another file, then rename it"
            );
        }
    }
    Ok(())
}
