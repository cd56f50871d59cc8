//! `wasmpipe new`: scaffold a stage, in Rust (a crate, below) or in
//! JavaScript, TypeScript or Python ([`script`]).

mod script;

use super::EXIT_OK;
use crate::manifest::{Name, StageKind};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

/// Create a stage in Rust, JavaScript, TypeScript or Python: the stage
/// function with a native test of it, sample events with their expected
/// outputs, and a `pipeline.toml` that builds and runs it.
///
/// Rust (the default): a crate (`Cargo.toml` depending on wasmpipe-sdk, a
/// `.cargo/config.toml` selecting `wasm32-wasip1`, `src/lib.rs`; test with
/// `cargo test`). `--lang js` or `ts`: `stage.js` or `stage.ts` and its
/// test, run by `npm test`. `--lang python`: `stage.py` and
/// `test_stage.py`, run by `.venv/bin/python -m unittest`. JavaScript,
/// TypeScript and Python stages build with the tools `wasmpipe toolchains
/// install` sets up once per machine.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The stage's name, also its folder's and (in Rust) its crate's
    /// (letters, digits, `-`, `_`).
    name: String,
    /// What the stage does.
    #[arg(long, value_parser = ["map", "filter", "flat_map", "reduce"])]
    kind: String,
    /// The language to write it in.
    #[arg(long, default_value = "rust", value_parser = ["rust", "js", "ts", "python"])]
    lang: String,
    /// The directory to create the stage in (as `<dir>/<name>`).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Rust: depend on the SDK at this path instead of finding it (inside
    /// a wasmpipe checkout) or using the published version.
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

pub fn run(args: NewArgs) -> Result<u8> {
    let name = Name::try_from(args.name.clone())
        .map_err(|e| anyhow::anyhow!("{}", e.replace("; hint: ", "\nhint: ")))?;
    let func = name.as_str().replace('-', "_");
    let kind = StageKind::parse(&args.kind).expect("clap checked the kind");
    if args.lang != "rust" {
        return script::run(&args, &name, kind);
    }
    if KEYWORDS.contains(&func.as_str()) {
        bail!("`{func}` is a Rust keyword; choose another stage name");
    }
    let dir = stage_dir(&args, &name)?;
    let sdk = match &args.sdk_path {
        Some(p) => format!("{{ path = {:?} }}", p.display().to_string()),
        None => sdk_dependency(&dir),
    };
    let t = template(kind, &func);
    let files = [
        ("Cargo.toml", cargo_toml(name.as_str(), &sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", format!("/target\n{LOCAL_STATE}")),
        ("src/lib.rs", t.lib),
        ("samples.jsonl", t.samples.to_string()),
        ("expected.jsonl", t.expected.to_string()),
        ("pipeline.toml", pipeline_toml(name.as_str(), kind)),
    ];
    write_all(&dir, &files)?;
    let rel = pathdiff(&dir);
    println!("created {kind} stage `{name}` in {}", dir.display());
    println!();
    println!("  wasmpipe build {rel}                         # prints the .wasm path");
    println!("  wasmpipe test {rel} --input {rel}/samples.jsonl --expect {rel}/expected.jsonl");
    println!(
        "  wasmpipe run --watch {rel}/pipeline.toml -i {rel}/samples.jsonl   # edit src/lib.rs, see it live"
    );
    println!(
        "  (cd {rel} && cargo test --target $(rustc -vV | sed -n 's/^host: //p'))   # unit tests"
    );
    Ok(EXIT_OK)
}

/// The new stage's directory, `<dir>/<name>`, which must not exist yet.
fn stage_dir(args: &NewArgs, name: &Name) -> Result<PathBuf> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create directory {:?}", args.dir))?;
    let dir = args.dir.canonicalize()?.join(name.as_str());
    if dir.exists() {
        bail!("{dir:?} already exists");
    }
    Ok(dir)
}

/// Writes `files` (path in `dir`, text).
fn write_all(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    let files: Vec<(&str, &str)> = files.iter().map(|(f, t)| (*f, t.as_str())).collect();
    crate::build::write_files(dir, &files).map(|_| ())
}

/// `dir` relative to the current directory when it is below it.
pub(super) fn pathdiff(dir: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|c| c.canonicalize().ok())
        .and_then(|c| dir.strip_prefix(c).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_path_buf())
        .display()
        .to_string()
}

/// The `wasmpipe-sdk` dependency: a relative path when the crate is inside
/// a wasmpipe checkout, else the checkout this binary was built from if it
/// is still there, else the published version.
fn sdk_dependency(crate_dir: &Path) -> String {
    for (depth, dir) in crate_dir.ancestors().enumerate().skip(1) {
        if dir.join("plugin-sdk/sdk/Cargo.toml").is_file() {
            let up = "../".repeat(depth);
            return format!("{{ path = \"{up}plugin-sdk/sdk\" }}");
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk/sdk");
    if let Ok(p) = built.canonicalize()
        && p.join("Cargo.toml").is_file()
    {
        return format!("{{ path = {:?} }}", p.display().to_string());
    }
    format!("\"{}\"", env!("CARGO_PKG_VERSION"))
}

/// What `run` and `serve` leave beside a stage whose manifest is run in its
/// folder, which a scaffold's `.gitignore` keeps out of version control:
/// serve's default database (with SQLite's journal files) and `run`'s
/// dead-letter files (`<pipeline>.dead.jsonl`).
const LOCAL_STATE: &str = "wasmpipe.db\nwasmpipe.db-wal\nwasmpipe.db-shm\n*.dead.jsonl\n";

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe",
    "use", "where", "while", "test", "core", "std",
];

const CARGO_CONFIG: &str = "\
# Stages are WebAssembly modules: `cargo build` builds for wasm32-wasip1
# (install the target once with `rustup target add wasm32-wasip1`).
# Unit tests run natively: `cargo test --target <host triple>`.
[build]
target = \"wasm32-wasip1\"
";

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the wasm module wasmpipe loads; rlib: lets unit tests link natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
wasmpipe-sdk = {sdk}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
# A panic traps the instance; the SDK has already told the host why.
panic = "abort"

# A workspace of its own; remove this table to add the crate to an
# enclosing workspace instead.
[workspace]
"#
    )
}

pub(super) fn pipeline_toml(name: &str, kind: StageKind) -> String {
    format!(
        r#"# Run with: wasmpipe run --watch pipeline.toml -i samples.jsonl
# `plugin = "."` is this stage: built when the pipeline loads, rebuilt and
# swapped in by `run --watch` whenever its sources change, once it passes
# on `samples`.
[pipeline]
name = "{name}"

[[stage]]
name = "{name}"
kind = "{kind}"
plugin = "."
samples = "samples.jsonl"

[runtime]
lineage = true
"#
    )
}

pub(super) struct Template {
    lib: String,
    pub(super) samples: &'static str,
    pub(super) expected: &'static str,
}

pub(super) fn template(kind: StageKind, f: &str) -> Template {
    let head =
        "use wasmpipe_sdk::prelude::*;\n\n#[derive(Deserialize)]\nstruct In {\n    n: i64,\n}\n";
    let out = "\n#[derive(Serialize, Debug, PartialEq)]\nstruct Out {\n    n: i64,\n}\n";
    let samples = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
    let (doc, body, test, expected) = match kind {
        StageKind::Map => (
            "A `map` stage: one event in, one out.",
            format!(
                "{out}
/// Doubles `n`. An `Err` makes that one event a dead letter.
#[map]
fn {f}(ev: In) -> Result<Out, String> {{
    match ev.n.checked_mul(2) {{
        Some(n) => Ok(Out {{ n }}),
        None => Err(format!(\"{{}} is too large to double\", ev.n)),
    }}
}}
"
            ),
            format!(
                "    #[test]
    fn doubles() {{
        assert_eq!({f}(In {{ n: 21 }}), Ok(Out {{ n: 42 }}));
        assert!({f}(In {{ n: i64::MAX }}).is_err());
    }}"
            ),
            "{\"n\":2}\n{\"n\":4}\n{\"n\":6}\n",
        ),
        StageKind::Filter => (
            "A `filter` stage: keeps the events for which it returns `true`, unchanged.",
            format!(
                "
/// Keeps events whose `n` is even.
#[filter]
fn {f}(ev: &In) -> bool {{
    ev.n % 2 == 0
}}
"
            ),
            format!(
                "    #[test]
    fn keeps_even_numbers() {{
        assert!({f}(&In {{ n: 2 }}));
        assert!(!{f}(&In {{ n: 3 }}));
    }}"
            ),
            "{\"n\":2}\n",
        ),
        StageKind::FlatMap => (
            "A `flat_map` stage: one event in, any number out.",
            format!(
                "{out}
/// Counts up to `n`: `{{\"n\":3}}` becomes `{{\"n\":0}}`, `{{\"n\":1}}`, `{{\"n\":2}}`.
#[flat_map]
fn {f}(ev: In) -> Vec<Out> {{
    (0..ev.n.clamp(0, 1000)).map(|n| Out {{ n }}).collect()
}}
"
            ),
            format!(
                "    #[test]
    fn counts_up_to_n() {{
        assert_eq!({f}(In {{ n: 2 }}), vec![Out {{ n: 0 }}, Out {{ n: 1 }}]);
        assert!({f}(In {{ n: -1 }}).is_empty());
    }}"
            ),
            "{\"n\":0}\n{\"n\":0}\n{\"n\":1}\n{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n",
        ),
        StageKind::Reduce => (
            "A `reduce` stage: folds every event into one result.",
            format!(
                "
/// Sums `n`. `combine` merges the partial sums of parallel workers.
#[reduce(combine = add)]
fn {f}(acc: i64, ev: In) -> i64 {{
    acc.wrapping_add(ev.n)
}}

fn add(a: i64, b: i64) -> i64 {{
    a.wrapping_add(b)
}}
"
            ),
            format!(
                "    #[test]
    fn sums() {{
        assert_eq!({f}(40, In {{ n: 2 }}), 42);
        assert_eq!(add(1, 2), 3);
    }}"
            ),
            "6\n",
        ),
    };
    Template {
        lib: format!(
            "//! {doc}\n//!\n//! Build: `wasmpipe build` prints the `.wasm` path; `wasmpipe test . --input\n//! samples.jsonl --expect expected.jsonl` runs it. Unit tests run natively:\n//! `cargo test --target <host triple>` (e.g. x86_64-unknown-linux-gnu).\n\n{head}{body}\n#[cfg(test)]\nmod tests {{\n    use super::*;\n\n{test}\n}}\n"
        ),
        samples,
        expected,
    }
}
