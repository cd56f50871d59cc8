//! Candidate versions of a stage on live traffic (see
//! [`crate::exec::deploy`]): deploy one as a shadow or a canary, watch
//! how it compares, promote it or abort it. Every change is a record in
//! the store, with who made it; this process (and every other process of
//! the pipeline, within a second) applies what the records say.

use super::Service;
use super::auth::Need;
use super::toolkit::{
    ApiError, ApiResult, Svc, authorize, drain, json_response, read_body, unavailable,
};
use crate::exec::deploy::{Mode, Tally};
use crate::store::{DeploymentRow, NewDeployment};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The largest candidate module (a JavaScript or Python component carries
/// its interpreter: tens of megabytes).
const MAX_MODULE: usize = 128 << 20;

/// Deployments listed.
const LISTED: u32 = 50;

/// Who made a change: the token's or certificate's name.
fn who(identity: Option<String>) -> String {
    identity.unwrap_or_else(|| "anonymous".into())
}

/// A deployment as the API shows it, with what every process counted.
async fn shown(svc: &Service, row: DeploymentRow) -> Result<Value, ApiError> {
    if row.state == "active" {
        // This process's figures, stored now, so the answer is current.
        svc.deploys
            .sync(&*svc.backend)
            .await
            .map_err(ApiError::internal)?;
    }
    let stats = svc
        .backend
        .deployment_stats(row.id)
        .await
        .map_err(ApiError::internal)?;
    let tally = Tally::merge(
        stats
            .iter()
            .filter_map(|s| serde_json::from_str::<Tally>(s).ok()),
    );
    let mut v = serde_json::to_value(&row).map_err(|e| ApiError::internal(e.into()))?;
    v["short_version"] = row.version.get(..12).unwrap_or(&row.version).into();
    v["short_base"] = row.base.get(..12).unwrap_or(&row.base).into();
    v["url"] = format!("/v1/deployments/{}", row.id).into();
    v["tally"] = serde_json::to_value(&tally).map_err(|e| ApiError::internal(e.into()))?;
    v["summary"] = summary(&row, &tally).into();
    Ok(v)
}

/// One line a person reads first.
fn summary(row: &DeploymentRow, t: &Tally) -> String {
    format!(
        "{} {} of `{}`: {}; {}",
        row.mode,
        row.version.get(..12).unwrap_or(&row.version),
        row.stage,
        row.state,
        t.describe()
    )
}

/// `GET /v1/deployments`: the pipeline's deployments, newest first, the
/// active one in full; and the live versions over their budgets.
pub(super) async fn list(State(svc): Svc, headers: HeaderMap) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let rows = svc
        .backend
        .deployments(&svc.pipeline, LISTED)
        .await
        .map_err(ApiError::internal)?;
    let active = match rows.iter().find(|r| r.state == "active") {
        Some(r) => shown(&svc, r.clone()).await?,
        None => Value::Null,
    };
    let live: serde_json::Map<String, Value> = svc
        .live
        .current()
        .stages
        .iter()
        .map(|s| (s.name().to_string(), s.short_version().into()))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({
            "active": active,
            "deployments": rows,
            "live": live,
            "over_budget": svc.deploys.over_budget(),
        }),
    ))
}

/// `GET /v1/deployments/{id}`.
pub(super) async fn show(State(svc): Svc, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let row = find(&svc, &id).await?;
    Ok(json_response(StatusCode::OK, shown(&svc, row).await?))
}

async fn find(svc: &Service, id: &str) -> Result<DeploymentRow, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no deployment `{id}` of pipeline `{}`; `GET /v1/deployments` lists them",
                svc.pipeline
            ),
        )
    };
    let n: i64 = id.parse().map_err(|_| missing())?;
    // Deployments are few: the newest ones hold any a person acts on.
    svc.backend
        .deployments(&svc.pipeline, 10_000)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|r| r.id == n)
        .ok_or_else(missing)
}

/// `POST /v1/deployments?stage=NAME&mode=shadow|canary[&percent=P]`, the
/// candidate module as the body: deploys it beside the live version.
pub(super) async fn create(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    body: Body,
) -> ApiResult {
    let mut body = body;
    let res = create_deployment(&svc, &headers, q, &mut body).await;
    if res.is_err() {
        drain(&mut body, MAX_MODULE).await;
    }
    res
}

async fn create_deployment(
    svc: &Arc<Service>,
    headers: &HeaderMap,
    q: Vec<(String, String)>,
    body: &mut Body,
) -> ApiResult {
    let by = who(authorize(svc, headers, Need::Write)?);
    if svc.stopping.load(Relaxed) {
        return Err(unavailable(svc, "the server is shutting down"));
    }
    let (mut stage, mut mode, mut percent) = (None, None, None);
    for (k, v) in q {
        match k.as_str() {
            "stage" => stage = Some(v),
            "mode" => mode = Some(v),
            "percent" => {
                percent = Some(
                    v.parse::<u8>()
                        .ok()
                        .filter(|p| (1..=100).contains(p))
                        .ok_or_else(|| {
                            ApiError::bad(format!(
                                "`percent` must be a whole number from 1 to 100, not `{v}`"
                            ))
                        })?,
                )
            }
            _ => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{k}`; use `stage`, `mode` and, for a canary, `percent`"
                )));
            }
        }
    }
    let now = super::rerun::stage_named(svc, stage, "the candidate is a version of")?;
    let stage = now.name().to_string();
    let mode = match (mode.as_deref(), percent) {
        (Some("shadow"), None) => Mode::Shadow,
        (Some("canary"), Some(p)) => Mode::Canary(p),
        (Some("shadow"), Some(_)) => {
            return Err(ApiError::bad(
                "a shadow runs on every chunk: leave out `percent`, or deploy a canary",
            ));
        }
        (Some("canary"), None) => {
            return Err(ApiError::bad(
                "a canary needs `percent`: the share of chunks (1 to 100) it serves",
            ));
        }
        _ => {
            return Err(ApiError::bad(
                "`mode` must be `shadow` (every chunk, compared, stored nowhere) or `canary` (a share of chunks, with `percent`)",
            ));
        }
    };
    let module = read_body(svc, body, MAX_MODULE, "128 MiB for a module").await?;
    if module.is_empty() {
        return Err(ApiError::bad(
            "send the candidate module as the body (`Content-Type: application/wasm`)",
        ));
    }
    let (spec, rt, bytes) = (now.spec.clone(), svc.runtime.clone(), module.clone());
    let candidate = tokio::task::spawn_blocking(move || super::rerun::candidate(&rt, spec, &bytes))
        .await
        .map_err(|e| ApiError::internal(e.into()))??;
    if candidate.version == now.version {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "the module is version {} of `{stage}`, the live one: nothing to deploy",
                now.short_version()
            ),
        ));
    }
    let (m, p) = mode.record();
    let row = svc
        .backend
        .deploy(NewDeployment {
            pipeline: svc.pipeline.clone(),
            stage: stage.clone(),
            version: candidate.version.clone(),
            base: now.version.clone(),
            mode: m.into(),
            percent: p,
            created_at: crate::exec::now_ms(),
            created_by: by,
            module,
        })
        .await
        .map_err(|r| ApiError::refused(svc, r))?;
    tracing::info!(
        "deployment {}: {} deployed version {} of stage `{stage}` as a {m}",
        row.id,
        row.created_by,
        candidate.short_version()
    );
    svc.deploys
        .sync(&*svc.backend)
        .await
        .map_err(ApiError::internal)?;
    Ok(json_response(StatusCode::CREATED, shown(svc, row).await?))
}

/// `POST /v1/deployments/{id}/promote`: the candidate becomes the live
/// version, at a chunk boundary, in every process of the pipeline.
pub(super) async fn promote(
    State(svc): Svc,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    end(&svc, &id, &headers, "promoted").await
}

/// `POST /v1/deployments/{id}/abort`: the candidate is dropped; every
/// chunk runs on the live version again.
pub(super) async fn abort(
    State(svc): Svc,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    end(&svc, &id, &headers, "aborted").await
}

async fn end(svc: &Arc<Service>, id: &str, headers: &HeaderMap, state: &str) -> ApiResult {
    let by = who(authorize(svc, headers, Need::Write)?);
    let row = find(svc, id).await?;
    if row.state != "active" {
        let why = row
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "deployment {id} is {} already{why}; only an active deployment can be promoted or aborted",
                row.state.replace('_', " ")
            ),
        ));
    }
    // Counted figures first, so the record keeps them.
    let _ = svc.deploys.sync(&*svc.backend).await;
    let ended = svc
        .backend
        .end_deployment(row.id, state, &by, None)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("deployment {id} ended meanwhile; `GET /v1/deployments/{id}` says how"),
            )
        })?;
    tracing::info!("deployment {id}: {state} by {by}");
    svc.deploys
        .sync(&*svc.backend)
        .await
        .map_err(ApiError::internal)?;
    Ok(json_response(StatusCode::OK, shown(svc, ended).await?))
}
