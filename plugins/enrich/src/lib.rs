//! Map stage: enriches log events with the deployment's region and
//! environment (stage params), the receiving host and time (chunk metadata)
//! and a numeric level for range queries.

use serde_json::Map;
use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Params {
    region: String,
    #[serde(default = "prod")]
    env: String,
}

fn prod() -> String {
    "prod".to_owned()
}

/// Events stay free-form objects: the stage adds fields and keeps the rest.
#[map]
fn enrich(mut ev: Map<String, Value>, ctx: &Context<Params>) -> Result<Map<String, Value>, String> {
    let level_num = match ev.get("level").and_then(Value::as_str) {
        Some("debug") => 10,
        Some("info") => 20,
        Some("warn") => 30,
        Some("error") => 40,
        Some(other) => return Err(format!("unknown level `{other}`")),
        None => return Err("event has no string `level`".to_owned()),
    };
    let params = ctx.params();
    ev.insert("region".into(), params.region.clone().into());
    ev.insert("env".into(), params.env.clone().into());
    ev.insert("host".into(), ctx.meta_str("host").into());
    ev.insert(
        "received_at".into(),
        ctx.meta().get("received_at").cloned().unwrap_or_default(),
    );
    ev.insert("level_num".into(), level_num.into());
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context<Params> {
        let meta = json!({"host": "web-1", "received_at": "2024-05-01T12:00:00Z", "job": 3});
        let params = Params {
            region: "eu-west-1".into(),
            env: prod(),
        };
        Context::new("enrich", params).with_meta(meta.as_object().unwrap().clone())
    }

    fn event(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn adds_fields() {
        let out = enrich(event(json!({"level": "warn", "msg": "disk 91%"})), &ctx()).unwrap();
        let expected = json!({
            "level": "warn", "msg": "disk 91%", "region": "eu-west-1", "env": "prod",
            "host": "web-1", "received_at": "2024-05-01T12:00:00Z", "level_num": 30,
        });
        assert_eq!(Value::Object(out), expected);
    }

    #[test]
    fn refuses_unknown_levels() {
        assert_eq!(
            enrich(event(json!({"level": "fatal"})), &ctx()).unwrap_err(),
            "unknown level `fatal`"
        );
        assert_eq!(
            enrich(event(json!({"msg": "?"})), &ctx()).unwrap_err(),
            "event has no string `level`"
        );
    }

    #[test]
    fn env_defaults_to_prod() {
        let params: Params = serde_json::from_value(json!({"region": "us"})).unwrap();
        assert_eq!(params.env, "prod");
    }
}
