//! Map stage: benchmark W2 (docs/performance.md) on the SDK's fast path
//! for enrichment: the stage decodes only the two fields it reads and
//! returns `Merge` of the four it adds, so the rest of the event is never
//! decoded or encoded by the stage. Same output as `log_enrich`.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Params {
    received_at: String,
    host: String,
}

#[derive(Deserialize)]
struct Log {
    level: String,
    duration_ms: f64,
}

#[derive(Serialize)]
struct Added {
    received_at: String,
    host: String,
    level_num: u8,
    slow: bool,
}

fn level_num(level: &str) -> u8 {
    match level {
        "debug" => 0,
        "info" => 1,
        "warn" => 2,
        "error" => 3,
        _ => 255,
    }
}

#[map]
fn log_enrich_merge(log: Log, ctx: &Context<Params>) -> Merge<Added> {
    let params = ctx.params();
    Merge(Added {
        received_at: params.received_at.clone(),
        host: params.host.clone(),
        level_num: level_num(&log.level),
        slow: log.duration_ms > 500.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_four_fields() {
        let ctx = Context::new(
            "m",
            Params {
                received_at: "now".into(),
                host: "h".into(),
            },
        );
        let Merge(added) = log_enrich_merge(
            Log {
                level: "error".into(),
                duration_ms: 600.0,
            },
            &ctx,
        );
        assert_eq!(
            (added.level_num, added.slow, added.host.as_str()),
            (3, true, "h")
        );
    }
}
