//! `wasmpipe test`: run one stage over sample events; compare with the
//! expected outputs and show a diff.

use super::{EXIT_DEAD_LETTERS, EXIT_MISMATCH, EXIT_OK};
use crate::exec::{ChunkLimits, DeadLetterSink, JsonLines, Pipeline, RunContext};
use crate::manifest::StageKind;
use crate::runtime::{Runtime, RuntimeConfig, Stage, StageSpec, linker};
use anyhow::{Context as _, Result, bail};
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

/// Run one stage over events from a file and print its outputs (dead
/// letters go to stderr), or compare them with `--expect`: a mismatch
/// prints a diff and exits with 4.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The stage: a `.wasm` file, or a stage crate's directory (built first).
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
    /// The stage's params, as a JSON object.
    #[arg(long, default_value = "{}")]
    params: String,
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
}

pub fn run(args: TestArgs) -> Result<u8> {
    let params: serde_json::Value = serde_json::from_str(&args.params)
        .with_context(|| format!("--params is not JSON: {}", args.params))?;
    if !params.is_object() {
        bail!("--params must be a JSON object, like '{{\"factor\": 3}}'");
    }
    let plugin = if args.plugin.is_dir() {
        crate::build::build_stage(&args.plugin)?
    } else {
        args.plugin.clone()
    };
    let runtime = Arc::new(Runtime::new(&RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    })?);
    let window = args.window.as_deref().map(parse_window).transpose()?;
    let spec = StageSpec {
        kind: args.kind.as_deref().and_then(StageKind::parse),
        params,
        key: args.key.clone(),
        window,
        ..StageSpec::standalone("test", plugin)
    };
    let stage = Stage::load(&runtime, &linker(&runtime)?, spec)?;
    let pipeline = Pipeline {
        name: "test".into(),
        stages: vec![stage],
        runtime,
        workers: 1,
        ordered: true,
        policy: crate::exec::Policy {
            lineage: false,
            retries: crate::exec::Retries::DEFAULT,
            keep_reduce_input: false,
        },
        live: None,
        streaming: false,
    };
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open input {:?}", args.input))?;
    let limits = ChunkLimits {
        events: args
            .chunk_size
            .map_or(crate::manifest::DEFAULT_CHUNK_SIZE, |n| n as usize),
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
