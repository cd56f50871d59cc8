//! `GET /v1/stream`: a live tail of new stored events and dead letters as
//! server-sent events, for `wasmpipe tail` and the console. It follows the
//! store itself (rows after a cursor, polled while nothing is new), so it
//! works the same on SQLite and PostgreSQL, on a single `serve` and on an
//! ingest node, and a client that reconnects with `Last-Event-ID` (or the
//! `cursor` parameters) loses nothing in between.

use super::Service;
use super::auth::Need;
use super::toolkit::{ApiError, ApiResult, EventOut, Params, Svc, authorize, dead_json};
use crate::store::{DeadQuery, EventQuery, FieldPath};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::Value;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How long the stream waits before looking again when nothing was new.
const POLL: Duration = Duration::from_millis(250);
/// Rows read per look.
const PAGE: u32 = 500;

/// What a stream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kinds {
    Both,
    Events,
    DeadLetters,
}

/// A stream's position and filters.
struct Tail {
    svc: Arc<Service>,
    query: EventQuery,
    kinds: Kinds,
    /// The last event and dead letter sent (ids).
    events_after: i64,
    dead_after: i64,
    ready: VecDeque<Event>,
}

/// `GET /v1/stream?pipeline=&job=&field.<path>=&kinds=&cursor=&dead_cursor=`.
pub async fn stream(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let p = Params::new(
        q,
        &[
            "pipeline",
            "job",
            "field.<name>",
            "kinds",
            "cursor",
            "dead_cursor",
        ],
    )?;
    let query = p.event_filters()?;
    let kinds = match p.text("kinds").as_deref() {
        None | Some("all") => Kinds::Both,
        Some("events") => Kinds::Events,
        Some("dead_letters") => Kinds::DeadLetters,
        Some(v) => {
            return Err(ApiError::bad(format!(
                "`kinds` is `all`, `events` or `dead_letters`, got `{v}`"
            )));
        }
    };
    let (mut events_after, mut dead_after) = (p.id("cursor")?, p.id("dead_cursor")?);
    // `Last-Event-ID` (sent by a reconnecting browser) is `e<id>` or `d<id>`
    // for the last event or dead letter seen, `<event id>.<dead id>` here.
    if let Some((e, d)) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('.'))
    {
        events_after = events_after.or(e.parse().ok());
        dead_after = dead_after.or(d.parse().ok());
    }
    // From now on, unless told where to start.
    let (last_event, last_dead) = if events_after.is_none() || dead_after.is_none() {
        svc.backend.last_ids().await.map_err(ApiError::internal)?
    } else {
        (0, 0)
    };
    let tail = Tail {
        svc,
        query,
        kinds,
        events_after: events_after.unwrap_or(last_event),
        dead_after: dead_after.unwrap_or(last_dead),
        ready: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(tail, |mut t| async move {
        loop {
            if let Some(e) = t.ready.pop_front() {
                return Some((Ok::<Event, Infallible>(e), t));
            }
            if t.svc.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            match t.fill().await {
                Ok(true) => {}
                Ok(false) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!("live tail: {e:#}");
                    tokio::time::sleep(POLL * 4).await;
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

impl Tail {
    /// Reads what is new; false when nothing was.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.kinds != Kinds::DeadLetters {
            let q = EventQuery {
                after: self.events_after,
                limit: PAGE,
                ..self.query.clone()
            };
            for r in self.svc.backend.events(q).await? {
                self.events_after = r.id;
                let data = serde_json::to_string(&EventOut::of(&r, Some("event"))?)?;
                self.push("event", data);
            }
        }
        if self.kinds != Kinds::Events {
            let rows = self
                .svc
                .backend
                .dead_letters(DeadQuery {
                    pipeline: self.query.pipeline.clone(),
                    job: self.query.job,
                    after: self.dead_after,
                    limit: PAGE,
                    ..DeadQuery::default()
                })
                .await?;
            for d in rows {
                self.dead_after = d.id;
                let mut data = dead_json(&d);
                if !self
                    .query
                    .fields
                    .iter()
                    .all(|(path, want)| field_is(&data["event"], path, want))
                {
                    continue;
                }
                data["type"] = "dead_letter".into();
                self.push("dead_letter", data.to_string());
            }
        }
        Ok(!self.ready.is_empty())
    }

    fn push(&mut self, kind: &str, data: String) {
        let id = format!("{}.{}", self.events_after, self.dead_after);
        self.ready
            .push_back(Event::default().event(kind).id(id).data(data));
    }
}

/// Whether the field at `path` of a dead letter's event reads as `want`,
/// as the stored events' filter compares: strings as they are, other
/// values as their JSON text.
fn field_is(event: &Value, path: &FieldPath, want: &str) -> bool {
    let mut at = event;
    for seg in path.segments() {
        match at.get(seg) {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        Value::String(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        v => serde_json::to_string(v).is_ok_and(|text| text == want),
    }
}
