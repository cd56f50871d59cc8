//! `wasmpipe diff`: what a new version of a stage would change on a job a
//! server has stored, from `POST /v1/jobs/{id}/diff` (docs/api.md). The
//! server runs the job's input through both versions and stores nothing.

use super::client;
use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;

/// Show what a new version of a stage changes on a stored job.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    remote: client::Remote,
    /// The stored job to run again.
    #[arg(long, required_unless_present = "from", conflicts_with_all = ["from", "to"])]
    job: Option<i64>,
    /// Instead of one job: every job ingested from this time (RFC 3339,
    /// or milliseconds since the epoch) ...
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// ... until this one (not included).
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// The stage to replace.
    #[arg(long)]
    stage: String,
    /// The candidate: a `.wasm` file, or a stage crate directory (built
    /// first, as in a manifest).
    #[arg(required_unless_present = "version", conflicts_with = "version")]
    module: Option<PathBuf>,
    /// Instead of a module: a version the server still has loaded (12 hex
    /// digits, as in `stage_versions`).
    #[arg(long)]
    version: Option<String>,
    /// Compare against this loaded version instead of the current one.
    #[arg(long)]
    base: Option<String>,
    /// Changed events to list (the counts cover them all).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DiffArgs) -> Result<u8> {
    let route = match (args.job, &args.from, &args.to) {
        (Some(job), _, _) => format!("/v1/jobs/{job}/diff?"),
        (None, Some(from), Some(to)) => format!(
            "/v1/diff?from={}&to={}&",
            client::encode(from),
            client::encode(to)
        ),
        _ => bail!("name a job with --job, or a time range with --from and --to"),
    };
    let mut url = args.remote.url(&format!(
        "{route}stage={}&limit={}",
        client::encode(&args.stage),
        args.limit.max(1)
    ));
    for (name, v) in [("version", &args.version), ("base", &args.base)] {
        if let Some(v) = v {
            url.push_str(&format!("&{name}={}", client::encode(v)));
        }
    }
    let module = match &args.module {
        Some(path) => {
            let path = if path.is_dir() {
                crate::build::stage_artifact(path)?
            } else {
                path.clone()
            };
            std::fs::read(&path).with_context(|| format!("cannot read {path:?}"))?
        }
        None => Vec::new(),
    };
    let remote = &args.remote;
    let req = remote
        .agent()?
        .post(&url)
        .header("content-type", "application/wasm");
    let resp = remote
        .authorize(req)
        .send(&module[..])
        .map_err(|e| remote.unreachable(e))?;
    let text = client::success(resp, &remote.server)?
        .into_body()
        .read_to_string()
        .context("the answer broke off")?;
    let v: Value = serde_json::from_str(&text).context("the server answered something not JSON")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{text}")?;
    } else {
        write_readable(&mut out, &v)?;
    }
    match v["changed"].as_u64() {
        Some(0) if !changed_result(&v) => Ok(super::EXIT_OK),
        Some(_) => Ok(super::EXIT_MISMATCH),
        None => bail!("the answer has no `changed` count: {text}"),
    }
}

fn changed_result(v: &Value) -> bool {
    v["result"]["changed"].as_bool() == Some(true)
}

/// The summary, the result before and after, then each listed event as
/// `#index change` with `-` lines before and `+` lines after.
fn write_readable(out: &mut impl std::io::Write, v: &Value) -> Result<()> {
    writeln!(out, "{}", v["summary"].as_str().unwrap_or(""))?;
    if changed_result(v) {
        writeln!(
            out,
            "result:\n  - {}\n  + {}",
            v["result"]["before"], v["result"]["after"]
        )?;
    }
    let fail = |e: &Value| {
        format!(
            "DEAD at {}: {}",
            e["stage"].as_str().unwrap_or("?"),
            e["error"].as_str().unwrap_or("")
        )
    };
    for c in v["changes"].as_array().into_iter().flatten() {
        let job = c["job"]
            .as_i64()
            .map(|j| format!("job {j} "))
            .unwrap_or_default();
        writeln!(
            out,
            "{job}#{} {}",
            c["index"],
            c["change"].as_str().unwrap_or("")
        )?;
        for (sign, outputs, error) in [
            ('-', &c["before"], &c["before_error"]),
            ('+', &c["after"], &c["after_error"]),
        ] {
            for o in outputs.as_array().into_iter().flatten() {
                writeln!(out, "  {sign} {o}")?;
            }
            if !error.is_null() {
                writeln!(out, "  {sign} {}", fail(error))?;
            }
        }
    }
    if v["truncated"].as_bool() == Some(true) {
        writeln!(out, "(more changed events than listed; raise --limit)")?;
    }
    Ok(())
}
