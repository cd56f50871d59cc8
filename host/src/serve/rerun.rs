//! Running a stored job again: its dead letters through the current
//! stages (retry), its whole input as a new job (replay), or its whole
//! input through a candidate stage version, stored nowhere (diff). Every
//! backend keeps each job's input (the SQLite journal; PostgreSQL's
//! `inputs` table on an ingest node), so all three work on both.

use super::Service;
use super::auth::Need;
use super::toolkit::{
    ApiError, ApiResult, Svc, authorize, blocking, drain, job_not_found, json_response, load_job,
    read_body, unavailable,
};
use crate::exec::{diff, stored};
use crate::runtime::Stage;
use crate::store::{InputPurged, JobRow};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The largest stage module a diff accepts (a JavaScript or Python
/// component carries its interpreter: tens of megabytes).
const MAX_MODULE: usize = 128 << 20;

/// Changed events a diff lists by default, and at most.
const DIFF_LIMIT: (usize, usize) = (100, 10_000);

/// A job that a write-token holder may run again now: of this server's
/// pipeline, with the server not shutting down.
async fn rerunnable(
    svc: &Arc<Service>,
    headers: &HeaderMap,
    id: &str,
    doing: &str,
) -> Result<JobRow, ApiError> {
    authorize(svc, headers, Need::Write)?;
    if svc.stopping.load(Relaxed) {
        return Err(unavailable(svc, "the server is shutting down"));
    }
    own_job(svc, id, doing).await
}

/// A job of this server's pipeline, or why not.
async fn own_job(svc: &Arc<Service>, id: &str, doing: &str) -> Result<JobRow, ApiError> {
    let n = id.parse::<i64>().map_err(|_| job_not_found(id))?;
    let Some(job) = load_job(svc, n).await? else {
        return Err(job_not_found(id));
    };
    if job.pipeline != svc.pipeline {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {id} belongs to pipeline `{}`; this server runs `{}`: {doing} it on a server of its pipeline",
                job.pipeline, svc.pipeline
            ),
        ));
    }
    Ok(job)
}

fn accepted(new: i64, origin: i64, events: u64) -> axum::response::Response {
    json_response(
        StatusCode::ACCEPTED,
        json!({ "job": new, "origin": origin, "accepted": events, "url": format!("/v1/jobs/{new}") }),
    )
}

/// An error reading a job's input: `410` when retention deleted it.
fn input_error(e: anyhow::Error) -> ApiError {
    match e.downcast::<InputPurged>() {
        Ok(purged) => ApiError::new(StatusCode::GONE, purged.to_string()),
        Err(e) => ApiError::internal(e),
    }
}

/// `POST /v1/jobs/{id}/dead-letters/retry`: the job's dead letters not yet
/// retried run again, through the current stages, as a new job.
pub(super) async fn retry_dead(
    State(svc): Svc,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let job = rerunnable(&svc, &headers, &id, "retry").await?;
    let nothing = || {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id} has no dead letters left to retry"),
        )
    };
    let submitted = svc
        .backend
        .retry_dead_letters(job.id, svc.settings.chunk_size)
        .await
        .map_err(|r| ApiError::refused(&svc, r))?
        .ok_or_else(nothing)?;
    Ok(accepted(submitted.job, job.id, submitted.events))
}

/// `POST /v1/jobs/{id}/replay`: the job's stored input, again, as a new
/// job, on the current stage versions or, with a body
/// `{"versions": {"stage": "<version>"}}`, on versions this process still
/// has. On an ingest node it goes through JetStream like an ingest.
pub(super) async fn replay(
    State(svc): Svc,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let mut body = body;
    let res = replay_job(svc, &id, &headers, &mut body).await;
    if res.is_err() {
        drain(&mut body, 1 << 16).await;
    }
    res
}

async fn replay_job(
    svc: Arc<Service>,
    id: &str,
    headers: &HeaderMap,
    body: &mut Body,
) -> ApiResult {
    let job = rerunnable(&svc, headers, id, "replay").await?;
    let body = read_body(&svc, body, 1 << 16, "64 KiB for a replay request").await?;
    let pinned = pin(&svc, &body)?;
    if svc.stopping.load(Relaxed) {
        return Err(unavailable(&svc, "the server is shutting down"));
    }
    let submitted = svc
        .backend
        .replay(&job, pinned)
        .await
        .map_err(|r| ApiError::refused(&svc, r))?
        .ok_or_else(|| job_not_found(id))?;
    Ok(accepted(submitted.job, job.id, submitted.events))
}

/// A replay request's `{"versions": {...}}` as the pin stored with the
/// job (stage name to whole version, JSON); `None` for an empty body or
/// no versions. Every version must be loaded now.
fn pin(svc: &Service, body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[serde(default)]
        versions: std::collections::BTreeMap<String, String>,
    }
    let req: Request = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "the body must be empty or {{\"versions\": {{\"<stage>\": \"<version>\"}}}}: {e}"
        ))
    })?;
    if req.versions.is_empty() {
        return Ok(None);
    }
    let current = svc.live.current();
    let mut whole = std::collections::BTreeMap::new();
    for (stage, v) in &req.versions {
        if !current.stages.iter().any(|s| s.name() == stage) {
            return Err(ApiError::bad(format!(
                "this pipeline has no stage `{stage}`"
            )));
        }
        let found = svc
            .live
            .version(stage, v)
            .ok_or_else(|| not_loaded(svc, stage, v))?;
        whole.insert(stage.clone(), found.version.clone());
    }
    Ok(Some(
        serde_json::to_string(&whole).expect("a map of strings serializes"),
    ))
}

/// `404`: version `v` of `stage` is not loaded, and which are.
fn not_loaded(svc: &Service, stage: &str, v: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "version `{v}` of stage `{stage}` is not loaded here; loadable: {}",
            svc.live.versions_of(stage).join(", ")
        ),
    )
}

/// `POST /v1/jobs/{id}/diff?stage=NAME[&version=V][&base=V][&limit=N]`:
/// the job's input through the current stages and through the same with
/// stage `NAME` replaced by the module in the body (`application/wasm`) or
/// by version `V` if this process still has it; nothing is stored.
/// `base` names the version to compare against instead of the current one.
pub(super) async fn diff(
    State(svc): Svc,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    body: Body,
) -> ApiResult {
    let mut body = body;
    let res = diff_job(svc, Some(&id), &headers, q, &mut body).await;
    if res.is_err() {
        drain(&mut body, MAX_MODULE).await;
    }
    res
}

/// `POST /v1/diff?from=T&to=T&stage=NAME[&version=V][&base=V][&limit=N]`:
/// a job diff over every ingested job of the pipeline received from `from`
/// until `to` (each job with its own context), nothing stored; the counts
/// are their sums, the changed events carry their `job`.
pub(super) async fn diff_range(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    body: Body,
) -> ApiResult {
    let mut body = body;
    let res = diff_job(svc, None, &headers, q, &mut body).await;
    if res.is_err() {
        drain(&mut body, MAX_MODULE).await;
    }
    res
}

async fn diff_job(
    svc: Arc<Service>,
    id: Option<&str>,
    headers: &HeaderMap,
    q: Vec<(String, String)>,
    body: &mut Body,
) -> ApiResult {
    authorize(&svc, headers, Need::Write)?;
    let (mut stage, mut version, mut base, mut limit) = (None, None, None, DIFF_LIMIT.0);
    let mut range = Vec::new();
    for (k, v) in q {
        match k.as_str() {
            "from" | "to" if id.is_none() => range.push((k, v)),
            "stage" => stage = Some(v),
            "version" => version = Some(v),
            "base" => base = Some(v),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=DIFF_LIMIT.1).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "`limit` must be a number from 1 to {}, not `{v}`",
                            DIFF_LIMIT.1
                        ))
                    })?
            }
            _ => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{k}`; use `stage`, `version`, `base`, `limit`"
                )));
            }
        }
    }
    let current = svc.live.current();
    let now = stage_named(&svc, stage, "to compare")?;
    let stage = now.name().to_string();
    let jobs = match id {
        Some(id) => vec![own_job(&svc, id, "diff").await?],
        None => in_range(&svc, range).await?,
    };
    let module = read_body(&svc, body, MAX_MODULE, "128 MiB for a module").await?;
    let named = |v: &str| {
        svc.live
            .version(&stage, v)
            .ok_or_else(|| not_loaded(&svc, &stage, v))
    };
    let candidate = match (&version, module.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::bad(
                "send either a module as the body or `?version=`, not both",
            ));
        }
        (Some(v), true) => named(v)?,
        (None, true) => {
            return Err(ApiError::bad(
                "send the candidate module as the body (`Content-Type: application/wasm`), or name a loaded version with `?version=`",
            ));
        }
        (None, false) => {
            let (spec, rt) = (now.spec.clone(), svc.runtime.clone());
            tokio::task::spawn_blocking(move || candidate(&rt, spec, &module))
                .await
                .map_err(|e| ApiError::internal(e.into()))??
        }
    };
    let before = match &base {
        Some(v) => svc.live.current_with(&named(v)?),
        None => current.stages.clone(),
    };
    let after: Vec<Arc<Stage>> = before
        .iter()
        .map(|s| {
            if s.name() == stage {
                candidate.clone()
            } else {
                s.clone()
            }
        })
        .collect();
    let (old, new) = (
        short(&before, &stage).to_string(),
        candidate.short_version().to_string(),
    );
    // Job by job, each with its own context: the sums, and the changed
    // events up to `limit` in job order.
    let mut total: Option<serde_json::Value> = None;
    for job in &jobs {
        let input = input_of(&svc, job).await?;
        let (s, job_c, before, after) = (svc.clone(), job.clone(), before.clone(), after.clone());
        let report = blocking(move || {
            let mut chunks = Vec::with_capacity(input.len());
            let mut first = 0;
            for (seq, (data, events)) in input.into_iter().enumerate() {
                let ctx = stored::chunk_context(
                    job_c.id,
                    &s.host,
                    &job_c.context,
                    &job_c.pipeline,
                    seq as u64,
                )?;
                chunks.push((stored::to_chunk(data, seq as u64, first), ctx));
                first += events;
            }
            diff::diff(
                &s.runtime, s.policy, &before, &after, &chunks, s.windowed, limit,
            )
        })
        .await?;
        let mut v = serde_json::to_value(&report).map_err(|e| ApiError::internal(e.into()))?;
        for c in v["changes"].as_array_mut().into_iter().flatten() {
            c["job"] = job.id.into();
        }
        total = Some(match total {
            None => v,
            Some(mut t) => {
                for k in [
                    "events",
                    "changed",
                    "new_dead_letters",
                    "fixed_dead_letters",
                ] {
                    t[k] = (t[k].as_u64().unwrap_or(0) + v[k].as_u64().unwrap_or(0)).into();
                }
                let room = limit.saturating_sub(t["changes"].as_array().map_or(0, Vec::len));
                let more = v["changes"].as_array().cloned().unwrap_or_default();
                if more.len() > room || v["truncated"] == true {
                    t["truncated"] = true.into();
                }
                if let Some(list) = t["changes"].as_array_mut() {
                    list.extend(more.into_iter().take(room));
                }
                // A result per job: a range has no one result to compare.
                t["result"] = serde_json::Value::Null;
                t
            }
        });
    }
    let mut out = total.unwrap_or_else(|| {
        json!({"events": 0, "changed": 0, "new_dead_letters": 0, "fixed_dead_letters": 0,
               "result": null, "changes": [], "truncated": false})
    });
    let count = |k: &str| out[k].as_u64().unwrap_or(0);
    let mut summary = format!(
        "v{new} of `{stage}` changes {} of {} events",
        thousands(count("changed")),
        thousands(count("events"))
    );
    for (n, how) in [
        (count("new_dead_letters"), "new"),
        (count("fixed_dead_letters"), "fewer"),
    ] {
        let noun = if n == 1 {
            "dead letter"
        } else {
            "dead letters"
        };
        if n > 0 {
            summary += &format!("; {} {how} {noun}", thousands(n));
        }
    }
    if out["result"]["changed"] == true {
        summary += "; the result changes";
    }
    match id {
        Some(_) => out["job"] = jobs[0].id.into(),
        None => {
            summary += &format!(" in {} jobs", jobs.len());
            out["jobs"] = jobs.iter().map(|j| j.id).collect::<Vec<_>>().into();
        }
    }
    out["stage"] = stage.as_str().into();
    out["before"] = json!({ &stage: old });
    out["after"] = json!({ &stage: new });
    out["summary"] = summary.into();
    Ok(json_response(StatusCode::OK, out))
}

/// The ingested jobs (not replays or retries, whose events those hold
/// already) of this server's pipeline received from `from` (inclusive)
/// until `to` (exclusive), oldest first.
async fn in_range(svc: &Service, range: Vec<(String, String)>) -> Result<Vec<JobRow>, ApiError> {
    let p = super::toolkit::Params::new(range, &["from", "to"])?;
    let (Some(from), Some(to)) = (p.time("from")?, p.time("to")?) else {
        return Err(ApiError::bad(
            "name the time range with `from` and `to` (RFC 3339, or milliseconds since the epoch)",
        ));
    };
    if from >= to {
        return Err(ApiError::bad("`from` must be before `to`"));
    }
    let mut found = Vec::new();
    let mut before = i64::MAX;
    'pages: loop {
        let page = svc
            .backend
            .jobs(Some(svc.pipeline.clone()), before, 1000)
            .await
            .map_err(ApiError::internal)?;
        let Some(last) = page.last() else { break };
        before = last.id;
        for j in page {
            // Ids grow with arrival: past `from`, older pages are older still.
            if j.received_at < from {
                break 'pages;
            }
            if j.kind == "ingest" && j.received_at < to && !j.abandoned {
                found.push(j);
            }
        }
    }
    found.reverse();
    Ok(found)
}

/// A time range's replay holds at most this much input in memory while
/// it is journaled as one job.
const MAX_RANGE_INPUT: usize = 256 << 20;

/// `POST /v1/replay?from=T&to=T`: every ingested job of this server's
/// pipeline received from `from` until `to`, again, as one new job (kind
/// `replay`) on the current versions (or, with a body `{"versions":
/// {...}}`, on those named, as a job's replay takes them), its chunks
/// those of the jobs in order: its progress and result are the new job's.
pub(super) async fn replay_range(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    body: Body,
) -> ApiResult {
    let mut body = body;
    authorize(&svc, &headers, Need::Write)?;
    if svc.stopping.load(Relaxed) {
        return Err(unavailable(&svc, "the server is shutting down"));
    }
    let jobs = in_range(&svc, q).await?;
    let request = read_body(&svc, &mut body, 1 << 16, "64 KiB for a replay request").await?;
    let pinned = pin(&svc, &request)?;
    if jobs.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no job of this pipeline was received in that range",
        ));
    }
    let mut chunks = Vec::new();
    let mut size = 0;
    for job in &jobs {
        let input = input_of(&svc, job).await?;
        size += input.iter().map(|(d, _)| d.len()).sum::<usize>();
        if size > MAX_RANGE_INPUT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the jobs of that range hold more than {} MiB of input; replay a shorter range (or its jobs one by one)",
                    MAX_RANGE_INPUT >> 20
                ),
            ));
        }
        chunks.extend(input);
    }
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    let submitted = svc
        .backend
        .submit(crate::store::NewJob {
            pipeline: svc.pipeline.clone(),
            kind: "replay",
            origin: None,
            received_at: crate::exec::now_ms(),
            context: json!({ "replayed": ids }).to_string(),
            chunks,
            pinned,
        })
        .await
        .map_err(|r| ApiError::refused(&svc, r))?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        json!({ "job": submitted.job, "jobs": ids, "accepted": submitted.events,
                "url": format!("/v1/jobs/{}", submitted.job) }),
    ))
}

/// The running stage `stage` names, or a `400` listing the stages: `what`
/// says what the stage is asked for (`to compare`).
pub(super) fn stage_named(
    svc: &Service,
    stage: Option<String>,
    what: &str,
) -> Result<Arc<Stage>, ApiError> {
    let current = svc.live.current();
    let names: Vec<&str> = current.stages.iter().map(|s| s.name()).collect();
    let Some(stage) = stage else {
        return Err(ApiError::bad(format!(
            "name the stage {what} with `?stage=`: one of {}",
            names.join(", ")
        )));
    };
    current
        .stages
        .iter()
        .find(|s| s.name() == stage)
        .cloned()
        .ok_or_else(|| {
            ApiError::bad(format!(
                "this pipeline has no stage `{stage}`; its stages are {}",
                names.join(", ")
            ))
        })
}

/// A job's stored input, or `404` (gone) or `410` (purged by retention).
async fn input_of(svc: &Service, job: &JobRow) -> Result<crate::store::Chunks, ApiError> {
    svc.backend
        .job_input(job.id)
        .await
        .map_err(input_error)?
        .ok_or_else(|| job_not_found(&job.id.to_string()))
}

/// The version of stage `name` in `stages`.
fn short<'a>(stages: &'a [Arc<Stage>], name: &str) -> &'a str {
    stages
        .iter()
        .find(|s| s.name() == name)
        .map_or("", |s| s.short_version())
}

/// An uploaded module as a version of the stage `spec` describes, or a
/// `422` saying why it cannot serve.
pub(super) fn candidate(
    rt: &Arc<crate::runtime::Runtime>,
    spec: crate::runtime::StageSpec,
    module: &[u8],
) -> Result<Arc<Stage>, ApiError> {
    let name = spec.name.clone();
    crate::exec::deploy::candidate(rt, spec, module).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the module cannot serve as stage `{name}`: {e:#}"),
        )
    })
}

/// `12345678` as `12,345,678`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(10_000), "10,000");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}
