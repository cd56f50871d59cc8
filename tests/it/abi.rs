//! The ABI seen from outside the SDK: hand-written `.wat` stages load and
//! run, and modules that break the contract are refused or contained.

use crate::util::{fixture, read_jsonl, run, run_manifest, toml_path, write};

fn echo_manifest(dir: &std::path::Path, plugin: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[pipeline]\nname = \"abi\"\n\n[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\n{extra}\n[runtime]\nchunk_size = 3\nworkers = 2\n",
        toml_path(&fixture(plugin))
    );
    write(dir, "m.toml", &text)
}

#[test]
fn a_hand_written_wat_stage_runs_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = echo_manifest(dir.path(), "echo.wat", "");
    let input: String = (0..20).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let inp = write(dir.path(), "in.jsonl", &input);
    let out = dir.path().join("out.jsonl");
    run_manifest(
        &m,
        &[
            "-i",
            inp.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ],
    )
    .expect_code(0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), input);
}

#[test]
fn output_that_is_not_json_is_dead_lettered_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let m = echo_manifest(dir.path(), "badjson.wat", "");
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n{\"a\":2}\n");
    let out = dir.path().join("out.jsonl");
    let r = run_manifest(
        &m,
        &["-i", inp.to_str().unwrap(), "-o", out.to_str().unwrap()],
    )
    .expect_code(3);
    assert!(r.stderr.contains("2 dead letters"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    let dead = read_jsonl(&dir.path().join("abi.dead.jsonl"));
    assert_eq!(dead.len(), 2);
    for (i, d) in dead.iter().enumerate() {
        assert_eq!(d["stage"], "s");
        assert_eq!(d["line"], i as u64 + 1);
        assert_eq!(
            d["event"]["a"],
            i as u64 + 1,
            "the original event is kept: {d}"
        );
        assert!(
            d["error"].as_str().unwrap().contains("not valid JSON"),
            "{d}"
        );
    }
}

#[test]
fn an_abi_version_mismatch_is_refused_at_load() {
    let r = run(&["inspect", fixture("wrong_abi.wat").to_str().unwrap()]).expect_code(1);
    assert!(
        r.stderr
            .contains("built for wasmpipe ABI version 9, but this host speaks version 1"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_module_that_is_not_a_stage_is_refused_naming_the_missing_export() {
    let r = run(&["inspect", fixture("no_exports.wat").to_str().unwrap()]).expect_code(1);
    assert!(
        r.stderr
            .contains("does not export the function `wasmpipe_descriptor`"),
        "{}",
        r.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.wasm", "this is not wasm");
    let r = run(&["inspect", junk.to_str().unwrap()]).expect_code(1);
    assert!(
        r.stderr.contains("is not a valid WebAssembly module"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_endless_loop_is_stopped_by_the_time_limit_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let m = echo_manifest(
        dir.path(),
        "endless.wat",
        "limits = { timeout = \"100ms\" }\n",
    );
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
    let r = run_manifest(&m, &["-i", inp.to_str().unwrap()]).expect_code(3);
    let dead = read_jsonl(&dir.path().join("abi.dead.jsonl"));
    assert_eq!(dead.len(), 3, "{}", r.stderr);
    // With no cursor the chunk is halved, [0] | [1, 2] | [1] | [2], in
    // each of three rounds (two retries): every call that timed out with
    // the event in it counts.
    for (d, calls) in dead.iter().zip([6, 9, 9]) {
        assert_eq!(
            d["error"],
            format!("stage `s` timed out after 100ms (after {calls} attempts)"),
            "{dead:?}"
        );
    }
}

#[test]
fn a_memory_bomb_is_stopped_at_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let m = echo_manifest(dir.path(), "bomb.wat", "limits = { memory = \"4MiB\" }\n");
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n");
    run_manifest(&m, &["-i", inp.to_str().unwrap(), "-q"]).expect_code(3);
    let dead = read_jsonl(&dir.path().join("abi.dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0]["error"],
        "stage `s` ran out of memory (limit 4194304 bytes); raise its `limits.memory` if the event needs more"
    );
}
