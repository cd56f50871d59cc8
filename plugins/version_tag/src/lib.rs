//! Test fixture for hot reload: a map that tags `{"id": n}` with the
//! version baked into the module's data (`tag`), the chunk it ran in (from
//! the chunk context) and the `label` param.
//!
//! The tests make versions `v1`, `v2`, `v3` of one module by patching the
//! two bytes after `wasmpipe-version-tag:` in the `.wasm`: each patch
//! changes both the content hash (the stage version) and the behaviour.
//! The tag `tp` panics on every event: a version that fails its samples.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct In {
    id: u64,
}

#[derive(Deserialize, Default)]
struct Params {
    #[serde(default)]
    label: String,
}

#[derive(Serialize, Debug, PartialEq)]
struct Out {
    id: u64,
    tag: String,
    chunk: u64,
    label: String,
}

/// The marker and the version tag, patched in place by the tests.
static TAG: [u8; 23] = *b"wasmpipe-version-tag:v1";

/// The tag, read through a volatile load so that it comes from the data
/// segment at run time rather than being folded in at compile time.
fn tag() -> String {
    // SAFETY: `TAG` is a plain, initialized, immutable static.
    let bytes = unsafe { std::ptr::read_volatile(&raw const TAG) };
    String::from_utf8_lossy(&bytes[21..]).into_owned()
}

#[map]
fn version_tag(ev: In, ctx: &Context<Params>) -> Out {
    let tag = tag();
    if tag == "tp" {
        panic!("version `tp` traps on every event");
    }
    Out {
        id: ev.id,
        tag,
        chunk: ctx.meta().get("chunk").and_then(Value::as_u64).unwrap_or(0),
        label: ctx.params().label.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_events_with_the_built_in_version() {
        let ctx = Context::new("t", Params { label: "x".into() });
        let out = version_tag(In { id: 7 }, &ctx);
        assert_eq!(
            out,
            Out {
                id: 7,
                tag: "v1".into(),
                chunk: 0,
                label: "x".into()
            }
        );
    }
}
