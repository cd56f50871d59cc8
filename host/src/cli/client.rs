//! What the commands that talk to a running server (`tail`, `diff`)
//! share: one HTTP agent, the token, and a refusal turned into an error
//! that quotes the server's message.

use anyhow::{Result, bail};

/// An agent that hands back every status (refusals carry a JSON message)
/// and never times out a response that streams.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(None)
        .build()
        .into()
}

/// `--token`, else `WASMPIPE_TOKEN` (which keeps it out of `ps`).
pub fn token(arg: &Option<String>) -> Option<String> {
    arg.clone()
        .or_else(|| std::env::var("WASMPIPE_TOKEN").ok())
        .filter(|t| !t.is_empty())
}

/// `resp` if it is a success, else an error with the server's message.
pub fn success(
    resp: ureq::http::Response<ureq::Body>,
    server: &str,
) -> Result<ureq::http::Response<ureq::Body>> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.into_body().read_to_string().unwrap_or_default();
    let why = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or(body);
    bail!("{server} answered {status}: {why}");
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
