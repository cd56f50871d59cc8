//! The command line: inspect, check, exit codes, sources (stdin, JSON
//! arrays), the compiled-module cache.

use crate::util::{plugin, run, run_manifest, toml_path, wasmpipe, write};
use std::io::Write as _;
use std::process::Stdio;

fn double_manifest(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        "[pipeline]\nname = \"cli\"\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {}\n",
        toml_path(&plugin("double"))
    );
    write(dir, "cli.toml", &text)
}

#[test]
fn inspect_prints_the_plugin_metadata() {
    let r = run(&["inspect", "--json", plugin("word_count").to_str().unwrap()]).expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["metadata"]["kind"], "reduce");
    assert_eq!(v["metadata"]["name"], "word_count");
    assert_eq!(v["metadata"]["abi"], 1);
    assert!(
        v["metadata"]["sdk"]
            .as_str()
            .unwrap()
            .starts_with("wasmpipe-sdk")
    );
    assert_eq!(
        v["version"].as_str().unwrap().len(),
        64,
        "sha-256 content hash"
    );
    assert_eq!(
        v["metadata"]["events"],
        serde_json::json!(["json", "msgpack"])
    );
    let r = run(&["inspect", plugin("double").to_str().unwrap()]).expect_code(0);
    assert!(r.stdout.contains("kind:     map"), "{}", r.stdout);
    assert!(r.stdout.contains("events:   json, msgpack"), "{}", r.stdout);
    // A module that lists no encodings takes JSON lines only.
    let r = run(&[
        "inspect",
        crate::util::fixture("echo.wat").to_str().unwrap(),
    ])
    .expect_code(0);
    assert!(r.stdout.contains("events:   json\n"), "{}", r.stdout);
}

#[test]
fn check_loads_every_stage_and_reports_compiled_then_cached() {
    let dir = tempfile::tempdir().unwrap();
    let m = double_manifest(dir.path());
    let cache = dir.path().join("cache");
    let check = || {
        wasmpipe()
            .arg("check")
            .arg(&m)
            .env("WASMPIPE_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let first = String::from_utf8(check().stdout).unwrap();
    assert!(
        first.contains("ok: pipeline `cli` with 1 stages"),
        "{first}"
    );
    assert!(first.contains("compiled"), "{first}");
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "one compiled module in the cache");
    // Beside it, its compiled functions, for the next module that shares
    // some (a new version, another stage in the same language).
    let functions = std::fs::read_dir(cache.join("functions")).unwrap().count();
    assert!(functions > 0, "compiled functions are cached");
    let second = String::from_utf8(check().stdout).unwrap();
    assert!(
        second.contains("cached"),
        "the second run skips compilation: {second}"
    );
}

#[test]
fn the_cache_stays_under_its_bound_removing_the_least_recently_used_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    // A cache folder the user keeps other things in.
    std::fs::write(cache.join("README.txt"), vec![b'x'; 4 << 20]).unwrap();
    let manifest = |name: &str| {
        write(
            dir.path(),
            &format!("{name}.toml"),
            &format!(
                "[pipeline]\nname = \"{name}\"\n\n[[stage]]\nname = \"{name}\"\nkind = \"map\"\nplugin = {}\n",
                toml_path(&plugin(name))
            ),
        )
    };
    let check = |m: &std::path::Path| {
        let out = wasmpipe()
            .arg("check")
            .arg(m)
            .env("WASMPIPE_CACHE_DIR", &cache)
            // Below two compiled modules: each new one evicts the other.
            .env("WASMPIPE_CACHE_MAX", "1MiB")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let modules = || -> Vec<String> {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cwasm"))
            .collect()
    };
    let (double, stamp) = (manifest("double"), manifest("stamp"));
    check(&double);
    let first = modules();
    assert_eq!(first.len(), 1);
    let (_, log) = check(&stamp);
    let second = modules();
    assert_eq!(second.len(), 1, "the older module went: {log}");
    assert_ne!(first, second);
    assert!(log.contains("used least recently"), "{log}");
    // The user's file is not the cache's to remove.
    assert_eq!(
        std::fs::metadata(cache.join("README.txt")).unwrap().len(),
        4 << 20
    );
    // The evicted module is compiled again; the kept one is a hit.
    assert!(check(&double).0.contains("compiled"));
    assert!(check(&double).0.contains("cached"));
}

#[test]
fn stdin_to_stdout_and_exit_code_zero() {
    let dir = tempfile::tempdir().unwrap();
    let m = double_manifest(dir.path());
    let mut child = wasmpipe()
        .args(["run", "-q", "-w", "2", "--chunk-size", "7"])
        .arg(&m)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (0..100).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: String = (0..100).map(|i| format!("{{\"n\":{}}}\n", i * 2)).collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[test]
fn a_json_array_source_is_split_into_events() {
    let dir = tempfile::tempdir().unwrap();
    let m = double_manifest(dir.path());
    let inp = write(
        dir.path(),
        "in.json",
        "[\n  {\"n\": 1},\n  {\n    \"n\": 2\n  },\n  {\"n\": 3}\n]\n",
    );
    let r = run_manifest(&m, &["-i", inp.to_str().unwrap(), "-q"]).expect_code(0);
    assert_eq!(r.stdout, "{\"n\":2}\n{\"n\":4}\n{\"n\":6}\n");
}

#[test]
fn a_broken_json_array_fails_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let m = double_manifest(dir.path());
    let inp = write(dir.path(), "in.json", "[{\"n\": 1}\n {\"n\": 2}]");
    let r = run_manifest(&m, &["-i", inp.to_str().unwrap(), "-q"]).expect_code(1);
    assert!(
        r.stderr
            .contains("in.json:2:2: expected `,` or `]` after an array element"),
        "{}",
        r.stderr
    );
}

#[test]
fn dead_letters_give_exit_code_three_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let m = double_manifest(dir.path());
    let inp = write(
        dir.path(),
        "in.jsonl",
        "{\"n\":1}\n{\"n\":\"two\"}\n{\"n\":3}\n",
    );
    let r = run_manifest(&m, &["-i", inp.to_str().unwrap()]).expect_code(3);
    assert_eq!(r.stdout, "{\"n\":2}\n{\"n\":6}\n");
    assert!(r.stderr.contains("1 dead letters"), "{}", r.stderr);
    assert!(
        r.stderr.contains("double"),
        "the summary names each stage: {}",
        r.stderr
    );
}

#[test]
fn a_missing_manifest_is_an_error_with_exit_code_one() {
    let r = run(&["run", "/nonexistent/wasmpipe.toml"]).expect_code(1);
    assert!(r.stderr.contains("cannot read manifest"), "{}", r.stderr);
}

/// `run -o` onto a disk that fills up: exit 1 with the disk's error and
/// how far the output got, never a silent short file.
#[test]
fn an_output_on_a_full_disk_stops_the_run_saying_how_far_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let m = double_manifest(dir.path());
    let input: String = (0..200_000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let input = write(dir.path(), "in.jsonl", &input);
    let full = dir.path().join("full");
    let _disk = crate::serve::Tmpfs::mount(&full, "1m");
    let out = full.join("out.jsonl");
    let r = run_manifest(
        &m,
        &["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    // The numbers it gives are true of the file: no more lines than it
    // says, and it says fewer than the input's.
    let said: u64 = r
        .stderr
        .split("at most ")
        .nth(1)
        .and_then(|t| t.split(" lines").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.stderr));
    let lines = std::fs::read_to_string(&out).unwrap().lines().count() as u64;
    assert!(
        lines <= said && said < 200_000,
        "{lines} lines, said {said}: {}",
        r.stderr
    );
}
