//! W2 of the benchmarks (docs/performance.md) written with `Merge`: decodes
//! only `level` and `duration_ms` and splices the four added fields into the
//! event's JSON, instead of decoding and re-encoding the whole event. Its
//! output is byte for byte that of `bench_enrich` and of the native baseline.

use wasmpipe_bench_model::{Added, Probe, added};
use wasmpipe_sdk::prelude::*;

#[map]
fn bench_merge(p: Probe, ctx: &Context) -> Merge<Added<String>> {
    let received_at = ctx.meta_str("received_at").unwrap_or_default().to_owned();
    let host = ctx.meta_str("host").unwrap_or_default().to_owned();
    Merge(added(&p, received_at, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_the_added_fields() {
        let p: Probe =
            serde_json::from_str(r#"{"level":"error","x":[1],"duration_ms":900}"#).unwrap();
        let meta = serde_json::json!({"received_at": "now", "host": "h"});
        let ctx = Context::new("e", Value::Null).with_meta(meta.as_object().unwrap().clone());
        let Merge(a) = bench_merge(p, &ctx);
        assert_eq!((a.level_num, a.slow, a.host.as_str()), (40, true, "h"));
    }
}
