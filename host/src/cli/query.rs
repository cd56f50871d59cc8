//! `wasmpipe query`: read-only SQL against a running server's stored
//! events (`POST /v1/query`, docs/api.md), printed as a table or as JSON
//! lines.

use super::client;
use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use std::io::Write as _;

/// Run read-only SQL over a server's stored events, dead letters, jobs
/// and windows (views `events`, `dead_letters`, `jobs`, `windows`).
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    remote: client::Remote,
    /// The statement, e.g. "SELECT data->>'service' AS service, count(*) FROM events GROUP BY 1".
    sql: String,
    /// Most rows (1 to 10000; the server's default is 1000).
    #[arg(long)]
    limit: Option<usize>,
    /// Print each row as a JSON object on its own line (keys in column
    /// order), not a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: QueryArgs) -> Result<u8> {
    let remote = &args.remote;
    let url = remote.url("/v1/query");
    let mut body = json!({ "sql": args.sql });
    if let Some(n) = args.limit {
        body["limit"] = n.into();
    }
    let req = remote
        .agent()?
        .post(&url)
        .header("content-type", "application/json");
    let resp = remote
        .authorize(req)
        .send(body.to_string().as_bytes())
        .map_err(|e| remote.unreachable(e))?;
    let resp = client::success(resp, &remote.server)?;
    let answer: Value = serde_json::from_str(
        &resp
            .into_body()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .context("the answer broke off")?,
    )
    .context("the server answered something that is not JSON")?;
    let columns: Vec<String> = answer["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.json {
        // Written by hand to keep the columns' order.
        for row in &rows {
            let fields: Vec<String> = columns
                .iter()
                .zip(row.as_array().into_iter().flatten())
                .map(|(c, v)| format!("{}:{v}", Value::from(c.as_str())))
                .collect();
            writeln!(out, "{{{}}}", fields.join(","))?;
        }
    } else {
        write!(out, "{}", table(&columns, &rows))?;
        eprintln!(
            "({} row{}, {} ms)",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            answer["elapsed_ms"]
        );
    }
    Ok(super::EXIT_OK)
}

/// Rows as an aligned text table: a header, a rule, then one line per
/// row; strings bare, other values as JSON, numbers aligned right.
fn table(columns: &[String], rows: &[Value]) -> String {
    let cells: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|r| {
            r.as_array()
                .into_iter()
                .flatten()
                .map(|v| match v {
                    Value::String(s) => (s.replace('\n', "\\n"), false),
                    Value::Null => (String::new(), false),
                    Value::Number(_) => (v.to_string(), true),
                    other => (other.to_string(), false),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (w, (c, _)) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |vals: Vec<(String, bool)>| -> String {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|((v, right), w)| {
                if *right {
                    format!("{v:>w$}")
                } else {
                    format!("{v:<w$}")
                }
            })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut s = line(columns.iter().map(|c| (c.clone(), false)).collect());
    s.push_str(&line(
        widths.iter().map(|w| ("-".repeat(*w), false)).collect(),
    ));
    for row in cells {
        s.push_str(&line(row));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_aligned_with_numbers_to_the_right() {
        let t = table(
            &["service".into(), "n".into()],
            &[
                json!(["auth", 1200]),
                json!(["billing", 7]),
                json!([null, {"a": 1}]),
            ],
        );
        assert_eq!(
            t,
            "service  n\n-------  -------\nauth        1200\nbilling        7\n         {\"a\":1}\n"
        );
    }
}
