//! Events as MessagePack frames between the host and SDK stages
//! (docs/abi.md, "Event encodings"): the same outputs and dead letters as
//! JSON lines, byte for byte; filters still pass the original text;
//! JSON-only stages between SDK stages; and a guest whose frames are not
//! MessagePack is contained to the events it answered for.

use crate::util::{fixture, plugin, run_manifest, toml_path, write};
use std::path::{Path, PathBuf};

/// A manifest of `stages` (`(name, kind, plugin, extra)`), with `[runtime]
/// events = encoding` and small chunks, so that many calls happen.
fn pipeline(
    dir: &Path,
    name: &str,
    encoding: &str,
    stages: &[(&str, &str, PathBuf, &str)],
) -> PathBuf {
    let mut text = format!(
        "[pipeline]\nname = \"{name}\"\n\n[runtime]\nevents = \"{encoding}\"\nchunk_size = 3\nworkers = 2\n"
    );
    for (stage, kind, plugin, extra) in stages {
        text.push_str(&format!(
            "\n[[stage]]\nname = \"{stage}\"\nkind = \"{kind}\"\nplugin = {}\n{extra}\n",
            toml_path(plugin)
        ));
    }
    write(dir, &format!("{name}.toml"), &text)
}

/// Runs `manifest` over `input`; returns the output file's bytes and the
/// dead letters' bytes (empty when there are none).
fn outputs(dir: &Path, manifest: &Path, input: &Path) -> (i32, String, String) {
    let out = dir.join(format!(
        "{}.out",
        manifest.file_stem().unwrap().to_str().unwrap()
    ));
    let dead = dir.join(format!(
        "{}.dead",
        manifest.file_stem().unwrap().to_str().unwrap()
    ));
    let r = run_manifest(
        manifest,
        &[
            "-q",
            "-i",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
            // A fixed receive time, so that two runs can be compared.
            "--meta",
            "received_at=2026-11-27T12:00:00.000Z",
        ],
    );
    assert!(r.code == 0 || r.code == 3, "{}", r.stderr);
    (
        r.code,
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&dead).unwrap_or_default(),
    )
}

#[test]
fn frames_and_json_lines_give_the_same_bytes_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    // Escapes, non-ASCII, floats with exponents, deep members the stage
    // skips, a line that is not JSON and one that is not the stage's type.
    let input = write(
        dir.path(),
        "in.jsonl",
        concat!(
            "{\"ts\":\"t1\",\"level\":\"warn\",\"service\":\"a\\\"uth\\n\",\"user_id\":\"u\\u00e9\",\"msg\":\"caf\u{e9} \u{1F600}\",\"duration_ms\":501.25,\"tags\":{\"region\":\"eu\",\"version\":\"v1\"}}\n",
            "{\"ts\":\"t2\",\"level\":\"info\",\"service\":\"b\",\"user_id\":\"u2\",\"msg\":\"m\",\"duration_ms\":1e3,\"tags\":{\"region\":\"us\",\"version\":\"v2\"},\"extra\":[[[{\"x\":null}]]]}\n",
            "{\"ts\":\"t3\",\"level\":\n",
            "{\"ts\":\"t4\",\"level\":\"error\",\"service\":\"c\",\"user_id\":7,\"msg\":\"m\",\"duration_ms\":2,\"tags\":{\"region\":\"r\",\"version\":\"v\"}}\n",
            "{\"ts\":\"t5\",\"level\":\"debug\",\"service\":\"d\",\"user_id\":\"u5\",\"msg\":\"\",\"duration_ms\":-0.5,\"tags\":{\"region\":\"r\",\"version\":\"v\"}}\n",
        ),
    );
    let stage = (
        "log_enrich",
        "map",
        plugin("log_enrich"),
        "params = { received_at = \"2026-11-27T12:00:00.000Z\", host = \"h\" }",
    );
    let frames = pipeline(
        dir.path(),
        "frames",
        "msgpack",
        std::slice::from_ref(&stage),
    );
    let lines = pipeline(dir.path(), "lines", "json", &[stage]);
    let (code_f, out_f, dead_f) = outputs(dir.path(), &frames, &input);
    let (code_l, out_l, dead_l) = outputs(dir.path(), &lines, &input);
    assert_eq!((code_f, code_l), (3, 3));
    assert_eq!(out_f, out_l, "the same output bytes");
    assert_eq!(out_f.lines().count(), 3, "{out_f}");
    assert!(
        out_f.contains(
            r#""service":"a\"uth\n","user_id":"ué","msg":"café 😀","duration_ms":501.25"#
        ),
        "{out_f}"
    );
    assert!(out_f.contains(r#""duration_ms":1000.0"#), "{out_f}");
    let dead_f = read_dead(&dead_f);
    let dead_l = read_dead(&dead_l);
    assert_eq!(dead_f.len(), 2);
    // The syntax error reads the same; the type error has no line/column
    // in a frame, but says the same thing.
    assert_eq!(dead_f[0], dead_l[0]);
    assert!(
        dead_f[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid event JSON: EOF while parsing")
    );
    assert_eq!(dead_f[1]["index"], 3);
    assert_eq!(
        dead_f[1]["error"],
        "event does not match `Log`: invalid type: integer `7`, expected a string"
    );
    assert!(dead_l[1]["error"].as_str().unwrap().starts_with(
        "event does not match `Log`: invalid type: integer `7`, expected a string at line 1"
    ));
}

/// Dead letters, without the pipeline's name (the runs compared differ
/// only in that and in their encoding).
fn read_dead(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let mut d: serde_json::Value = serde_json::from_str(l).unwrap();
            d.as_object_mut().unwrap().remove("pipeline");
            d
        })
        .collect()
}

#[test]
fn a_filter_over_frames_still_passes_the_original_text() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.jsonl",
        "{ \"level\" : \"error\", \"n\": 1.50, \"s\": \"\\u0041\" }\n{\"level\":\"debug\"}\n{\"level\":\"warn\",  \"n\":2}\n",
    );
    let m = pipeline(
        dir.path(),
        "filter",
        "msgpack",
        &[(
            "warnings",
            "filter",
            plugin("errors_only"),
            "params = { min_level = \"warn\" }",
        )],
    );
    let (code, out, _) = outputs(dir.path(), &m, &input);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{ \"level\" : \"error\", \"n\": 1.50, \"s\": \"\\u0041\" }\n{\"level\":\"warn\",  \"n\":2}\n"
    );
}

#[test]
fn a_json_only_stage_between_sdk_stages_gets_json_and_frames_resume_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.jsonl",
        &(1..=10)
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect::<String>(),
    );
    let stages = [
        ("double", "map", plugin("double"), ""),
        ("echo", "map", fixture("echo.wat"), ""),
        ("again", "map", plugin("double"), ""),
        ("sum", "reduce", plugin("sum"), ""),
    ];
    let m = pipeline(dir.path(), "mixed", "auto", &stages);
    let (code, out, dead) = outputs(dir.path(), &m, &input);
    assert_eq!((code, dead.as_str()), (0, ""));
    assert_eq!(out.trim(), "220", "4 * (1 + ... + 10)");
}

#[test]
fn frames_that_are_not_msgpack_are_dead_letters_of_their_stage() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n",
    );
    let m = pipeline(
        dir.path(),
        "garbage",
        "msgpack",
        &[("g", "map", fixture("garbage_frames.wat"), "")],
    );
    let (code, out, dead) = outputs(dir.path(), &m, &input);
    assert_eq!(code, 3);
    assert_eq!(out, "", "nothing that is not MessagePack is printed");
    let dead = read_dead(&dead);
    // Each call answers for its first event only: events 0 and 3 (chunks
    // of 3) are dead letters; the others produced nothing, as a map may.
    let indices: Vec<u64> = dead.iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 3], "{dead:?}");
    for d in &dead {
        assert_eq!(d["stage"], "g");
        let e = d["error"].as_str().unwrap();
        assert!(
            e.starts_with("stage `g` produced output that is not valid MessagePack: the value holds the reserved marker 0xc1"),
            "{e}"
        );
    }
    // The same module forced to JSON gets lines, and its frame is not JSON.
    let m = pipeline(
        dir.path(),
        "garbage_json",
        "json",
        &[("g", "map", fixture("garbage_frames.wat"), "")],
    );
    let (_, _, dead) = outputs(dir.path(), &m, &input);
    let dead = read_dead(&dead);
    assert!(
        dead[0]["error"].as_str().unwrap().contains("is not valid"),
        "{dead:?}"
    );
}

#[test]
fn examples_read_the_same_in_both_encodings() {
    // The shipped enrich example (a free-form `Map<String, Value>` stage,
    // with dead letters) through frames and through lines.
    let dir = tempfile::tempdir().unwrap();
    let example = crate::util::repo().join("examples/enrich");
    let input = example.join("logs.jsonl");
    let stage = (
        "enrich",
        "map",
        plugin("enrich"),
        "params = { region = \"eu-west-1\" }",
    );
    let frames = pipeline(dir.path(), "ef", "msgpack", std::slice::from_ref(&stage));
    let lines = pipeline(dir.path(), "el", "json", &[stage]);
    let (cf, of, df) = outputs(dir.path(), &frames, &input);
    let (cl, ol, dl) = outputs(dir.path(), &lines, &input);
    assert_eq!((cf, cl), (3, 3), "the example has dead letters");
    assert_eq!(of, ol);
    assert_eq!(read_dead(&df), read_dead(&dl));
    assert!(!of.is_empty() && !df.is_empty());
}
