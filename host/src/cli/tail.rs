//! `wasmpipe tail`: the live stream of a `serve` (or ingest node) in a
//! terminal: new stored events and dead letters as they are committed,
//! from `GET /v1/stream` (docs/api.md), one line each.

use super::client;
use anyhow::{Context as _, Result};
use std::io::{BufRead as _, Write as _};

/// Follow a server's new events and dead letters as they are stored.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    remote: client::Remote,
    /// Only this job's.
    #[arg(long)]
    job: Option<i64>,
    /// Only events whose field equals the value (`service=auth`,
    /// `request.identity=bob`); repeatable, all must hold.
    #[arg(long = "field", value_parser = parse_field)]
    fields: Vec<(String, String)>,
    /// Only dead letters (default: events and dead letters).
    #[arg(long, conflicts_with = "events")]
    dead_letters: bool,
    /// Only events.
    #[arg(long)]
    events: bool,
    /// Print each as a JSON line (`{"type":"event",...}`), not a readable line.
    #[arg(long)]
    json: bool,
}

fn parse_field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`--field {s}`: write it as name=value, e.g. --field service=auth"))
}

pub fn run(args: TailArgs) -> Result<u8> {
    let remote = &args.remote;
    let mut url = remote.url("/v1/stream?");
    let kinds = match (args.dead_letters, args.events) {
        (true, _) => "dead_letters",
        (_, true) => "events",
        _ => "all",
    };
    url.push_str(&format!("kinds={kinds}"));
    if let Some(j) = args.job {
        url.push_str(&format!("&job={j}"));
    }
    for (k, v) in &args.fields {
        url.push_str(&format!(
            "&field.{}={}",
            client::encode(k),
            client::encode(v)
        ));
    }
    let req = remote
        .agent()?
        .get(&url)
        .header("accept", "text/event-stream");
    let resp = remote
        .authorize(req)
        .call()
        .map_err(|e| remote.unreachable(e))?;
    let resp = client::success(resp, &remote.server)?;
    eprintln!("tailing {} ({kinds}); Ctrl-C to stop", remote.server);
    let reader = std::io::BufReader::new(resp.into_body().into_reader());
    let mut out = std::io::stdout().lock();
    let mut data = String::new();
    for line in reader.lines() {
        let line = line.context("the stream broke off")?;
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&data)
                .context("the stream sent something that is not JSON")?;
            if args.json {
                writeln!(out, "{data}")?;
            } else {
                writeln!(out, "{}", readable(&v))?;
            }
            out.flush()?;
            data.clear();
        }
    }
    Ok(super::EXIT_OK)
}

/// `12:00:00.123Z job 4 #17 {"n":2}`, or for a dead letter
/// `12:00:00.123Z job 4 #18 DEAD at sum: why {"n":"x"}`.
fn readable(v: &serde_json::Value) -> String {
    let at = v["received_at"].as_str().unwrap_or("");
    let time = at.split_once('T').map_or(at, |(_, t)| t);
    let head = format!("{time} job {} #{}", v["job"], v["index"]);
    match v["type"].as_str() {
        Some("dead_letter") => format!(
            "{head} DEAD at {}: {} {}",
            v["stage"].as_str().unwrap_or("?"),
            v["error"].as_str().unwrap_or(""),
            v["event"]
        ),
        _ => format!("{head} {}", v["event"]),
    }
}
