//! `wasmpipe test`: run one stage over sample events; compare with the
//! expected outputs and show a diff.
//!
//! The stage is configured as a pipeline's manifest configures it when one
//! does: the scaffold of `wasmpipe new` has a `pipeline.toml` beside the
//! stage, and a test that ignored its name and params would test another
//! stage than the one that runs.

use super::{EXIT_DEAD_LETTERS, EXIT_MISMATCH, EXIT_OK};
use crate::exec::{ChunkLimits, DeadLetterSink, JsonLines, Pipeline, Retries, RunContext};
use crate::manifest::{Manifest, StageKind, StageSection};
use crate::runtime::{Runtime, RuntimeConfig, Stage, StageSpec, linker};
use anyhow::{Context as _, Result, bail};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run one stage over events from a file and print its outputs (dead
/// letters go to stderr), or compare them with `--expect`: a mismatch
/// prints a diff and exits with 4.
///
/// When a manifest has a stage that runs the plugin (`--manifest`, else a
/// `pipeline.toml` in the stage's folder or in the current directory, as
/// `wasmpipe new` writes), the stage runs as that one: its name, params,
/// limits, grants, key and window, and the pipeline's name and timeout
/// retries. Otherwise it is named after its folder or `.wasm` file, with
/// no params. The flags below override either.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The stage: a `.wasm` file, or a stage's folder (built first).
    plugin: PathBuf,
    /// The events (JSON lines).
    #[arg(long, short)]
    input: PathBuf,
    /// The expected outputs (JSON lines), compared line by line as JSON
    /// values (so key order and spacing do not matter).
    #[arg(long)]
    expect: Option<PathBuf>,
    /// The kind the stage must be (default: whatever it exports).
    #[arg(long, value_parser = ["map", "filter", "flat_map", "reduce"])]
    kind: Option<String>,
    /// The stage's params, as a JSON object (default: the manifest's, or
    /// none).
    #[arg(long)]
    params: Option<String>,
    /// For a keyed reduce: the JSON pointer of the group key.
    #[arg(long)]
    key: Option<String>,
    /// For a reduce: fold per window, written as the manifest's inline
    /// table, e.g. `--window 'kind = "tumbling", size = "1m", time = "/ts"'`.
    #[arg(long)]
    window: Option<String>,
    /// Events per chunk (one guest call per chunk).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    chunk_size: Option<u32>,
    /// The pipeline manifest whose stage this is (default: a
    /// `pipeline.toml` in the stage's folder or the current directory that
    /// has a stage running the plugin).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Which of the manifest's stages this is, when several run the plugin,
    /// or to try the plugin as a stage that runs another one.
    #[arg(long)]
    stage: Option<String>,
}

pub fn run(args: TestArgs) -> Result<u8> {
    let params: Option<serde_json::Value> = match &args.params {
        Some(text) => {
            let p: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--params is not JSON: {text}"))?;
            if !p.is_object() {
                bail!("--params must be a JSON object, like '{{\"factor\": 3}}'");
            }
            Some(p)
        }
        None => None,
    };
    let configured = configured_stage(&args)?;
    let plugin = if args.plugin.is_dir() {
        crate::build::build_stage(&args.plugin)?
    } else {
        args.plugin.clone()
    };
    let (mut spec, pipeline_name, retries, chunk_size) = match &configured {
        Some((manifest, st)) => {
            // The plugin under test in the manifest's stage, already built.
            let mut st = st.clone();
            let path = std::path::absolute(&plugin).unwrap_or_else(|_| plugin.clone());
            st.plugin =
                serde_spanned::Spanned::new(st.plugin.span(), path.to_string_lossy().into_owned());
            let spec = crate::exec::stage_spec(manifest, &st)?;
            eprintln!(
                "testing stage `{}` as configured in {}",
                spec.name,
                manifest.path.display()
            );
            let chunk = manifest.doc.runtime.chunk_size.map(|n| n.get());
            (spec, manifest.name().to_string(), manifest.retries(), chunk)
        }
        None => {
            let name = default_name(&args.plugin);
            let spec = StageSpec::standalone(&name, plugin);
            (spec, name, Retries::DEFAULT, None)
        }
    };
    if let Some(kind) = args.kind.as_deref() {
        spec.kind = StageKind::parse(kind);
    }
    if let Some(params) = params {
        spec.params = params;
    }
    if let Some(key) = &args.key {
        spec.key = Some(key.clone());
    }
    if let Some(window) = args.window.as_deref() {
        spec.window = Some(parse_window(window)?);
    }
    let runtime = Arc::new(Runtime::new(&RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    })?);
    let stage = Stage::load(&runtime, &linker(&runtime)?, spec)?;
    let pipeline = Pipeline {
        name: pipeline_name,
        stages: vec![stage],
        runtime,
        workers: 1,
        ordered: true,
        policy: crate::exec::Policy {
            lineage: false,
            retries,
            keep_reduce_input: false,
        },
        live: None,
        deploys: None,
        streaming: false,
    };
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open input {:?}", args.input))?;
    let limits = ChunkLimits {
        events: args
            .chunk_size
            .map(|n| n as usize)
            .or(chunk_size)
            .unwrap_or(crate::manifest::DEFAULT_CHUNK_SIZE),
        ..ChunkLimits::default()
    };
    let source = Box::new(JsonLines::new(BufReader::new(file), limits, Arc::default()));
    let mut out = Vec::new();
    let mut dead = DeadLetterSink::writer(Box::new(std::io::stderr()));
    let summary = pipeline.run(
        source,
        &mut out,
        &mut dead,
        &RunContext::local(),
        &mut |_| {},
    )?;
    let actual = String::from_utf8_lossy(&out).into_owned();
    eprintln!(
        "{} events in, {} outputs, {} dead letters",
        summary.events_read, summary.outputs, summary.dead_letters
    );
    let Some(expect) = &args.expect else {
        print!("{actual}");
        return Ok(if summary.dead_letters > 0 {
            EXIT_DEAD_LETTERS
        } else {
            EXIT_OK
        });
    };
    let expected = std::fs::read_to_string(expect)
        .with_context(|| format!("cannot read expected outputs {expect:?}"))?;
    let a: Vec<&str> = actual.lines().filter(|l| !l.trim().is_empty()).collect();
    let e: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let same = |x: &str, y: &str| match (
        serde_json::from_str::<serde_json::Value>(x),
        serde_json::from_str::<serde_json::Value>(y),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => x.trim() == y.trim(),
    };
    if a.len() == e.len() && a.iter().zip(&e).all(|(x, y)| same(x, y)) {
        println!("ok: {} outputs match {}", a.len(), expect.display());
        return Ok(if summary.dead_letters > 0 {
            EXIT_DEAD_LETTERS
        } else {
            EXIT_OK
        });
    }
    println!(
        "outputs differ from {} (- expected, + actual):",
        expect.display()
    );
    print!("{}", diff(&e, &a, same));
    Ok(EXIT_MISMATCH)
}

/// The stage's name outside any manifest: its folder's, or its module's
/// file name without `.wasm`.
fn default_name(plugin: &Path) -> String {
    let path = if plugin.is_dir() {
        plugin
            .canonicalize()
            .unwrap_or_else(|_| plugin.to_path_buf())
    } else {
        plugin.with_extension("")
    };
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage".into())
}

/// The manifest's stage that the plugin under test is (see [`TestArgs`]):
/// from `--manifest`, else from a `pipeline.toml` in the stage's folder or
/// in the current directory that has a stage running the plugin.
fn configured_stage(args: &TestArgs) -> Result<Option<(Manifest, StageSection)>> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if let Some(path) = &args.manifest {
        let manifest = Manifest::load(path)?;
        let st = pick_stage(&manifest, args, &same)?;
        return match st {
            Some(st) => Ok(Some((manifest, st))),
            None => bail!(
                "no stage of {} runs {}; hint: name the stage to try it as with --stage",
                path.display(),
                args.plugin.display()
            ),
        };
    }
    let mut candidates = Vec::new();
    if args.plugin.is_dir() {
        candidates.push(args.plugin.join("pipeline.toml"));
    }
    candidates.push(PathBuf::from("pipeline.toml"));
    let mut seen: Vec<PathBuf> = Vec::new();
    for path in candidates {
        if !path.is_file() || seen.iter().any(|s| same(s, &path)) {
            continue;
        }
        seen.push(path.clone());
        let manifest = match Manifest::load(&path) {
            Ok(m) => m,
            Err(e) => {
                // Maybe not this stage's manifest at all: say so, and go on.
                tracing::warn!(
                    "not reading the stage's settings from {}, which is not a valid manifest: {e}",
                    path.display()
                );
                continue;
            }
        };
        if let Some(st) = pick_stage(&manifest, args, &same)? {
            return Ok(Some((manifest, st)));
        }
    }
    if let Some(name) = &args.stage {
        bail!(
            "--stage {name}: no manifest was found to take the stage from; hint: name it with --manifest"
        );
    }
    Ok(None)
}

/// The stage of `manifest` named `--stage`, else the one stage that runs
/// the plugin under test (`None`: none does).
fn pick_stage(
    manifest: &Manifest,
    args: &TestArgs,
    same: &dyn Fn(&Path, &Path) -> bool,
) -> Result<Option<StageSection>> {
    let stages = &manifest.doc.stages;
    if let Some(name) = &args.stage {
        return match stages.iter().find(|st| st.name.get_ref().as_str() == name) {
            Some(st) => Ok(Some(st.clone())),
            None => bail!(
                "{} has no stage `{name}`; its stages are {}",
                manifest.path.display(),
                list(stages.iter().map(|st| st.name.get_ref().as_str()))
            ),
        };
    }
    let running: Vec<&StageSection> = stages
        .iter()
        .filter(|st| same(&manifest.resolve(st.plugin.get_ref()), &args.plugin))
        .collect();
    match running.as_slice() {
        [] => Ok(None),
        [st] => Ok(Some((*st).clone())),
        many => bail!(
            "stages {} of {} all run {}; hint: choose one with --stage",
            list(many.iter().map(|st| st.name.get_ref().as_str())),
            manifest.path.display(),
            args.plugin.display()
        ),
    }
}

/// "`a`, `b`, `c`".
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A line diff of `old` -> `new`: common lines indented, removed ones
/// with `-`, added ones with `+`. Runs of more than 3 common lines are cut.
fn diff(old: &[&str], new: &[&str], same: impl Fn(&str, &str) -> bool) -> String {
    enum Op<'a> {
        Same(&'a str),
        Del(&'a str),
        Add(&'a str),
    }
    let (n, m) = (old.len(), new.len());
    let mut ops = Vec::new();
    if n.saturating_mul(m) <= 4_000_000 {
        // Longest common subsequence, then walk it.
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        let at = |i: usize, j: usize| i * (m + 1) + j;
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[at(i, j)] = if same(old[i], new[j]) {
                    lcs[at(i + 1, j + 1)] + 1
                } else {
                    lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && same(old[i], new[j]) {
                ops.push(Op::Same(new[j]));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
                ops.push(Op::Del(old[i]));
                i += 1;
            } else {
                ops.push(Op::Add(new[j]));
                j += 1;
            }
        }
    } else {
        // Too large for a full diff: pair lines up.
        for k in 0..n.max(m) {
            match (old.get(k), new.get(k)) {
                (Some(o), Some(a)) if same(o, a) => ops.push(Op::Same(a)),
                (o, a) => {
                    ops.extend(o.map(|o| Op::Del(o)));
                    ops.extend(a.map(|a| Op::Add(a)));
                }
            }
        }
    }
    let mut text = String::new();
    let changed: Vec<bool> = ops.iter().map(|o| !matches!(o, Op::Same(_))).collect();
    let near = |k: usize| (k.saturating_sub(3)..(k + 4).min(ops.len())).any(|x| changed[x]);
    let mut skipped = false;
    for (k, op) in ops.iter().enumerate() {
        match op {
            Op::Same(l) if near(k) => text.push_str(&format!("  {l}\n")),
            Op::Same(_) => {
                if !skipped {
                    text.push_str("  ...\n");
                }
                skipped = true;
                continue;
            }
            Op::Del(l) => text.push_str(&format!("- {l}\n")),
            Op::Add(l) => text.push_str(&format!("+ {l}\n")),
        }
        skipped = false;
    }
    text
}

/// `--window`'s text, checked like a manifest's `window` table.
fn parse_window(text: &str) -> Result<crate::exec::window::WindowSpec> {
    #[derive(serde::Deserialize)]
    struct Doc {
        window: crate::manifest::WindowSection,
    }
    let doc: Doc = toml::from_str(&format!("window = {{ {text} }}"))
        .map_err(|e| anyhow::anyhow!("--window: {}", e.message().trim_end()))?;
    doc.window
        .check()
        .map_err(|(message, hint)| anyhow::anyhow!("--window: {message}; hint: {hint}"))?;
    Ok(crate::exec::window::WindowSpec::from_section(&doc.window))
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_marks_removed_and_added_lines() {
        let d = diff(&["a", "b", "c"], &["a", "x", "c", "d"], |x, y| x == y);
        assert_eq!(d, "  a\n- b\n+ x\n  c\n+ d\n");
    }
}
