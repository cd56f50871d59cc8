//! W2 of the benchmarks (docs/performance.md): enriches a log event with
//! `received_at` and `host` from the context, `level_num` and `slow`. The
//! computation is `wasmpipe_bench_model::enrich`, the same code the native
//! baseline runs.

use wasmpipe_bench_model::{Enriched, Log, enrich};
use wasmpipe_sdk::prelude::*;

#[map]
fn bench_enrich(log: Log<String>, ctx: &Context) -> Enriched<String, String> {
    let received_at = ctx.meta_str("received_at").unwrap_or_default().to_owned();
    let host = ctx.meta_str("host").unwrap_or_default().to_owned();
    enrich(log, received_at, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_context_and_derived_fields() {
        let log: Log<String> = serde_json::from_str(
            r#"{"ts":"t","level":"warn","service":"auth","user_id":1,"msg":"m","duration_ms":501,"tags":{"region":"r","version":"v"}}"#,
        )
        .unwrap();
        let meta = serde_json::json!({"received_at": "now", "host": "h"});
        let ctx = Context::new("e", Value::Null).with_meta(meta.as_object().unwrap().clone());
        let out = serde_json::to_value(bench_enrich(log, &ctx)).unwrap();
        assert_eq!(out["level_num"], 30);
        assert_eq!(out["slow"], true);
        assert_eq!(out["host"], "h");
        assert_eq!(out["tags"]["region"], "r");
    }
}
