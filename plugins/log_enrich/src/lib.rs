//! Map stage: benchmark W2 (docs/performance.md) written the way the README
//! teaches a new user to write a stage: plain serde structs with owned
//! fields, the whole event in and the whole enriched event out. The
//! receiving host and time come from the stage's params.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Params {
    received_at: String,
    host: String,
}

#[derive(Deserialize, Serialize, Debug, PartialEq)]
struct Tags {
    region: String,
    version: String,
}

#[derive(Deserialize)]
struct Log {
    ts: String,
    level: String,
    service: String,
    user_id: String,
    msg: String,
    duration_ms: f64,
    tags: Tags,
}

#[derive(Serialize, Debug, PartialEq)]
struct Enriched {
    ts: String,
    level: String,
    service: String,
    user_id: String,
    msg: String,
    duration_ms: f64,
    tags: Tags,
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
fn log_enrich(log: Log, ctx: &Context<Params>) -> Enriched {
    let params = ctx.params();
    Enriched {
        level_num: level_num(&log.level),
        slow: log.duration_ms > 500.0,
        ts: log.ts,
        level: log.level,
        service: log.service,
        user_id: log.user_id,
        msg: log.msg,
        duration_ms: log.duration_ms,
        tags: log.tags,
        received_at: params.received_at.clone(),
        host: params.host.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_derived_fields() {
        let log: Log = serde_json::from_str(
            r#"{"ts":"t","level":"warn","service":"auth","user_id":"u1","msg":"m","duration_ms":500.5,"tags":{"region":"r","version":"v"}}"#,
        )
        .unwrap();
        let params = Params {
            received_at: "now".into(),
            host: "h".into(),
        };
        let out = log_enrich(log, &Context::new("log_enrich", params));
        assert_eq!((out.level_num, out.slow), (2, true));
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"ts":"t","level":"warn","service":"auth","user_id":"u1","msg":"m","duration_ms":500.5,"tags":{"region":"r","version":"v"},"received_at":"now","host":"h","level_num":2,"slow":true}"#
        );
    }
}
