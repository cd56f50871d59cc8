//! Map stage: stamps each event with the request state `wasmpipe serve`
//! hands every chunk (`Context::meta`): who sent it, from where, with what
//! client, in which job and chunk. Outside `serve` the request fields are
//! null.

use serde_json::{Map, json};
use wasmpipe_sdk::prelude::*;

/// Adds `"request": {identity, remote_addr, user_agent, job, pipeline, chunk}`.
#[map]
fn stamp(mut ev: Map<String, Value>, ctx: &Context) -> Map<String, Value> {
    let meta = ctx.meta();
    let field = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    ev.insert(
        "request".into(),
        json!({
            "identity": field("identity"),
            "remote_addr": field("remote_addr"),
            "user_agent": field("user_agent"),
            "job": field("job"),
            "pipeline": field("pipeline"),
            "chunk": field("chunk"),
        }),
    );
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_request_state() {
        let meta = json!({"identity": "alice", "remote_addr": "10.0.0.1:5555", "user_agent": "curl/8", "job": "7", "pipeline": "p", "chunk": 3});
        let ctx = Context::new("stamp", json!({})).with_meta(meta.as_object().unwrap().clone());
        let out = stamp(json!({"msg": "hi"}).as_object().unwrap().clone(), &ctx);
        assert_eq!(Value::Object(out), json!({"msg": "hi", "request": meta}));
    }
}
