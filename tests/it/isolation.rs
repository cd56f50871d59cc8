//! Fault isolation: in a chunk of thousands, exactly the event at fault
//! becomes a dead letter (malformed JSON, a guest error, a panic, an endless
//! loop, a memory bomb) and every other event is processed, in order.

use crate::util::{plugin, read_jsonl, run_manifest, toml_path, write};
use std::path::Path;

fn faulty_manifest(dir: &Path, limits: &str) -> std::path::PathBuf {
    let text = format!(
        "[pipeline]\nname = \"iso\"\n\n[[stage]]\nname = \"faulty\"\nkind = \"map\"\nplugin = {}\n{limits}\n\n[runtime]\nworkers = 2\n",
        toml_path(&plugin("faulty"))
    );
    write(dir, "iso.toml", &text)
}

/// Runs `faulty` over n = 0..count with `special` (line index, raw line)
/// substitutions; returns (outputs, dead letters, stderr).
fn run_faulty(
    limits: &str,
    count: usize,
    special: &[(usize, &str)],
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let m = faulty_manifest(dir.path(), limits);
    let mut input = String::new();
    for i in 0..count {
        match special.iter().find(|(at, _)| *at == i) {
            Some((_, line)) => input.push_str(line),
            None => input.push_str(&format!("{{\"n\":{i}}}")),
        }
        input.push('\n');
    }
    let inp = write(dir.path(), "in.jsonl", &input);
    let out = dir.path().join("out.jsonl");
    let r = run_manifest(
        &m,
        &["-i", inp.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert!(r.code == 0 || r.code == 3, "run failed:\n{}", r.stderr);
    (
        read_jsonl(&out),
        read_jsonl(&dir.path().join("iso.dead.jsonl")),
        r.stderr,
    )
}

fn expected_outputs(count: usize, dropped: &[usize]) -> Vec<serde_json::Value> {
    (0..count)
        .filter(|i| !dropped.contains(i) && i % 1000 != 13)
        .map(|i| serde_json::json!({ "n": i }))
        .collect()
}

#[test]
fn malformed_json_guest_error_and_panic_each_fail_only_their_event() {
    let (out, dead, _) = run_faulty("", 10_000, &[(5000, "{\"n\": 5000,"), (7000, "{\"n\":-1}")]);
    assert_eq!(
        out,
        expected_outputs(10_000, &[5000, 7000]),
        "every other event is processed, in order"
    );
    assert_eq!(
        dead.len(),
        12,
        "1 malformed + 10 unlucky + 1 panic: {dead:#?}"
    );
    let order: Vec<u64> = dead.iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "dead letters in source order: {order:?}"
    );
    let by_line = |line: u64| {
        dead.iter()
            .find(|d| d["line"] == line)
            .unwrap_or_else(|| panic!("no dead letter for line {line}"))
    };
    let malformed = by_line(5001);
    assert!(
        malformed["error"].as_str().unwrap().contains("EOF"),
        "{malformed}"
    );
    assert_eq!(
        malformed["event"], "{\"n\": 5000,",
        "invalid JSON is kept as text"
    );
    let panicked = by_line(7001);
    assert!(
        panicked["error"].as_str().unwrap().contains("poison event"),
        "the panic message is reported: {panicked}"
    );
    assert_eq!(panicked["event"], serde_json::json!({ "n": -1 }));
    for k in 0..10u64 {
        let d = by_line(k * 1000 + 14);
        assert_eq!(d["error"], "unlucky 13");
        assert_eq!(d["stage"], "faulty");
        assert_eq!(d["index"], k * 1000 + 13);
    }
}

#[test]
fn an_endless_loop_on_one_event_times_out_alone() {
    let (out, dead, stderr) = run_faulty(
        "limits = { timeout = \"300ms\" }",
        3000,
        &[(1500, "{\"n\":-2}")],
    );
    assert_eq!(out, expected_outputs(3000, &[1500]));
    let looped: Vec<_> = dead.iter().filter(|d| d["line"] == 1501).collect();
    assert_eq!(looped.len(), 1, "{dead:#?}");
    // It ran four times, and its dead letter says so: in the chunk's call,
    // alone (isolating it from the others), then in each of the two
    // retries (the default, as in every mode).
    assert_eq!(
        looped[0]["error"],
        "stage `faulty` timed out after 300ms (after 4 attempts)"
    );
    // Each of those waits for the whole time limit (10 s by default), and
    // the log says what is going on meanwhile.
    for line in [
        "WARN stage `faulty` timed out after 300ms on a call of 3000 events; running them again in smaller calls to find the slow one",
        "WARN stage `faulty` timed out after 300ms on the event on line 1501; running it again in 100ms (retry 1 of 2, `[runtime] retries`)",
        "WARN stage `faulty` timed out after 300ms on the event on line 1501; running it again in 200ms (retry 2 of 2, `[runtime] retries`)",
    ] {
        assert!(stderr.contains(line), "{line}\n{stderr}");
    }
}

#[test]
fn a_timeout_dead_letter_counts_the_calls_that_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let m = faulty_manifest(dir.path(), "limits = { timeout = \"100ms\" }");
    let inp = write(dir.path(), "in.jsonl", "{\"n\":-2}\n{\"n\":1}\n");
    let dead = |args: &[&str]| {
        let mut all = vec!["-q", "-i", inp.to_str().unwrap()];
        all.extend_from_slice(args);
        let r = run_manifest(&m, &all);
        assert_eq!(r.code, 3, "{}", r.stderr);
        let d = read_jsonl(&dir.path().join("iso.dead.jsonl"));
        assert_eq!(d.len(), 1, "{d:?}");
        d[0]["error"].as_str().unwrap().to_string()
    };
    // Alone in its chunk: one call per attempt, the first and two retries.
    assert_eq!(
        dead(&["--chunk-size", "1"]),
        "stage `faulty` timed out after 100ms (after 3 attempts)"
    );
    // With a neighbour: the chunk's call, then its own, then the retries.
    assert_eq!(
        dead(&[]),
        "stage `faulty` timed out after 100ms (after 4 attempts)"
    );
    // No retries and alone: one call, nothing to count.
    let m0 = write(
        dir.path(),
        "iso.toml",
        &std::fs::read_to_string(&m)
            .unwrap()
            .replace("workers = 2", "workers = 2\nretries = 0"),
    );
    assert_eq!(m0, m);
    assert_eq!(
        dead(&["--chunk-size", "1"]),
        "stage `faulty` timed out after 100ms"
    );
}

#[test]
fn a_memory_bomb_on_one_event_is_stopped_and_isolated() {
    let (out, dead, _) = run_faulty(
        "limits = { memory = \"32MiB\" }",
        3000,
        &[(10, "{\"n\":-3}")],
    );
    assert_eq!(out, expected_outputs(3000, &[10]));
    let bomb: Vec<_> = dead.iter().filter(|d| d["line"] == 11).collect();
    assert_eq!(bomb.len(), 1, "{dead:#?}");
    assert_eq!(
        bomb[0]["error"],
        "stage `faulty` ran out of memory (limit 33554432 bytes); raise its `limits.memory` if the event needs more"
    );
}

#[test]
fn guest_prints_reach_the_host_log_tagged_with_the_stage() {
    let (_, _, stderr) = run_faulty("", 20, &[]);
    assert!(stderr.contains("[faulty] faulty saw n=7"), "{stderr}");
}

#[test]
fn a_chunk_too_slow_for_the_time_limit_is_split_not_dead_lettered() {
    // Forty slow events (about 10 ms each) in one chunk take far longer than
    // the 150 ms limit, but each alone is well within it: nothing may fail.
    let special: Vec<(usize, &str)> = (0..40).map(|i| (i, "{\"n\":-5}")).collect();
    let (out, dead, stderr) = run_faulty("limits = { timeout = \"150ms\" }", 40, &special);
    assert!(dead.is_empty(), "no event is at fault: {dead:#?}\n{stderr}");
    assert_eq!(out.len(), 40);
    assert!(out.iter().all(|o| o["n"] == -5));
}
