//! `wasmpipe deploy`: a candidate version of a stage beside the live one
//! on a running server (`/v1/deployments`, docs/api.md): as a shadow or a
//! canary, then promoted or aborted; `--status` shows how it compares.

use super::client;
use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;

/// Deploy a candidate version of a stage beside the live one (shadow or
/// canary), see how it compares, promote it or abort it.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["shadow", "canary", "promote", "abort", "status"]))]
pub struct DeployArgs {
    #[command(flatten)]
    remote: client::Remote,
    /// The stage the candidate is a version of (with --shadow or --canary).
    #[arg(long, requires = "module")]
    stage: Option<String>,
    /// The candidate: a `.wasm` file, or a stage's directory (built first,
    /// as in a manifest).
    module: Option<PathBuf>,
    /// Run the candidate on every chunk after the live version, compare,
    /// store nothing of it.
    #[arg(long, requires = "stage")]
    shadow: bool,
    /// Serve this share of chunks (1 to 100 percent) with the candidate.
    #[arg(long, value_name = "PERCENT", requires = "stage")]
    canary: Option<u8>,
    /// Make deployment ID's candidate the live version.
    #[arg(long, value_name = "ID")]
    promote: Option<i64>,
    /// Drop deployment ID's candidate.
    #[arg(long, value_name = "ID")]
    abort: Option<i64>,
    /// Show the active deployment (or the last one) and how it compares.
    #[arg(long)]
    status: bool,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DeployArgs) -> Result<u8> {
    let remote = &args.remote;
    let (text, status) = if args.shadow || args.canary.is_some() {
        let (Some(stage), Some(path)) = (&args.stage, &args.module) else {
            bail!("name the stage with --stage and give the candidate module or stage directory");
        };
        let path = if path.is_dir() {
            crate::build::stage_artifact(path)?
        } else {
            path.clone()
        };
        let module = std::fs::read(&path).with_context(|| format!("cannot read {path:?}"))?;
        let mut url = remote.url(&format!("/v1/deployments?stage={}", client::encode(stage)));
        match args.canary {
            Some(p) => url.push_str(&format!("&mode=canary&percent={p}")),
            None => url.push_str("&mode=shadow"),
        }
        let req = remote
            .agent()?
            .post(&url)
            .header("content-type", "application/wasm");
        (
            send(remote, remote.authorize(req).send(&module[..]))?,
            false,
        )
    } else if let Some(id) = args.promote.or(args.abort) {
        let what = if args.promote.is_some() {
            "promote"
        } else {
            "abort"
        };
        let url = remote.url(&format!("/v1/deployments/{id}/{what}"));
        let req = remote.agent()?.post(&url);
        (send(remote, remote.authorize(req).send_empty())?, false)
    } else {
        let url = remote.url("/v1/deployments");
        let req = remote.agent()?.get(&url);
        (send(remote, remote.authorize(req).call())?, true)
    };
    let v: Value = serde_json::from_str(&text).context("the server answered something not JSON")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{text}")?;
        return Ok(super::EXIT_OK);
    }
    let shown = if status {
        if !v["active"].is_null() {
            v["active"].clone()
        } else {
            match v["deployments"].get(0) {
                Some(last) => last.clone(),
                None => {
                    writeln!(out, "no deployments yet")?;
                    return Ok(super::EXIT_OK);
                }
            }
        }
    } else {
        v.clone()
    };
    write_readable(&mut out, &shown)?;
    for o in v["over_budget"].as_array().into_iter().flatten() {
        writeln!(out, "OVER BUDGET: {}", o["reason"].as_str().unwrap_or(""))?;
    }
    Ok(super::EXIT_OK)
}

fn send(
    remote: &client::Remote,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<String> {
    let resp = resp.map_err(|e| remote.unreachable(e))?;
    client::success(resp, &remote.server)?
        .into_body()
        .read_to_string()
        .context("the answer broke off")
}

/// `deployment 3 (shadow of `enrich` 1a2b.. beside 3c4d..): active`, the
/// summary, then the first changed events.
fn write_readable(out: &mut impl std::io::Write, d: &Value) -> Result<()> {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    writeln!(
        out,
        "deployment {} ({} {} of `{}` beside {}): {}{}",
        d["id"],
        s("mode"),
        s("short_version"),
        s("stage"),
        s("short_base"),
        s("state").replace('_', " "),
        d["ended_by"]
            .as_str()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default()
    )?;
    if let Some(r) = d["reason"].as_str() {
        writeln!(out, "  {r}")?;
    }
    if let Some(sum) = d["summary"].as_str() {
        writeln!(out, "  {sum}")?;
    }
    for e in d["tally"]["shadow"]["examples"]
        .as_array()
        .into_iter()
        .flatten()
    {
        writeln!(
            out,
            "  job {} #{} {}",
            e["job"],
            e["index"],
            e["change"].as_str().unwrap_or("")
        )?;
        for (sign, outputs, error) in [
            ('-', &e["before"], &e["before_error"]),
            ('+', &e["after"], &e["after_error"]),
        ] {
            for o in outputs.as_array().into_iter().flatten() {
                writeln!(out, "    {sign} {o}")?;
            }
            if !error.is_null() {
                writeln!(
                    out,
                    "    {sign} DEAD: {}",
                    error["error"].as_str().unwrap_or("")
                )?;
            }
        }
    }
    Ok(())
}
