//! What a hostile guest or a careless command line must not do to the
//! host: outlive its time limit by blocking in a host call, or make the
//! CLI delete or empty a path it did not create.

use crate::util::{fixture, plugin, read_jsonl, run_bounded, toml_path, wasmpipe, write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Far above what any of these runs needs, far below "hangs for ever".
const BOUND: Duration = Duration::from_secs(60);

/// `wasmpipe run <manifest> <args>`, bounded by [`BOUND`].
fn run_pipeline(manifest: &Path, args: &[&str]) -> crate::util::Run {
    run_bounded(wasmpipe().arg("run").arg(manifest).args(args), BOUND)
}

fn manifest(dir: &Path, plugin: &Path, extra: &str) -> PathBuf {
    manifest_with(dir, plugin, extra, "")
}

fn manifest_with(dir: &Path, plugin: &Path, extra: &str, runtime: &str) -> PathBuf {
    let text = format!(
        "[pipeline]\nname = \"hard\"\n\n[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\n{extra}\n[runtime]\nchunk_size = 2\nworkers = 2\n{runtime}",
        toml_path(plugin)
    );
    write(dir, "m.toml", &text)
}

#[test]
fn a_guest_asleep_in_poll_oneoff_is_stopped_by_its_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_with(
        dir.path(),
        &fixture("sleeper.wat"),
        "limits = { timeout = \"200ms\" }\n",
        "retries = 1\nretry_backoff = \"10ms\"\n",
    );
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
    let r = run_pipeline(&m, &["-q", "-i", inp.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let dead = read_jsonl(&dir.path().join("hard.dead.jsonl"));
    assert_eq!(dead.len(), 3, "{dead:?}");
    // Chunks of two without a cursor: events 0 and 1 time out together,
    // then alone, in each of two rounds; event 2 alone, twice.
    for (i, d) in dead.iter().enumerate() {
        assert_eq!(d["index"], i as u64);
        let calls = if i < 2 { 4 } else { 2 };
        assert_eq!(
            d["error"],
            format!("stage `s` timed out after 200ms (after {calls} attempts)"),
            "{d}"
        );
    }
}

#[test]
fn a_guest_asleep_while_loading_is_refused_as_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        &fixture("sleeper_load.wat"),
        "limits = { timeout = \"300ms\" }\n",
    );
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n");
    for cmd in ["run", "check"] {
        let r = run_bounded(
            wasmpipe().arg(cmd).arg(&m).args(if cmd == "run" {
                vec!["-q", "-i", inp.to_str().unwrap()]
            } else {
                vec![]
            }),
            BOUND,
        );
        assert_eq!(r.code, 1, "{cmd}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("in `wasmpipe_metadata` timed out after 300ms"),
            "{cmd}: {}",
            r.stderr
        );
    }
    // `inspect` has no manifest: the default limit applies, and it ends.
    let r = run_bounded(
        wasmpipe().arg("inspect").arg(fixture("sleeper_load.wat")),
        BOUND,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("timed out after 10s"), "{}", r.stderr);
}

fn failing_run(dir: &Path, dead_letters: &Path) -> crate::util::Run {
    let m = manifest(dir, &plugin("faulty"), "");
    let inp = write(dir, "in.jsonl", "{\"n\":-1}\n{\"n\":2}\n");
    run_pipeline(
        &m,
        &[
            "-q",
            "-i",
            inp.to_str().unwrap(),
            "-o",
            dir.join("out.jsonl").to_str().unwrap(),
            "--dead-letters",
            dead_letters.to_str().unwrap(),
        ],
    )
}

#[test]
fn dead_letters_through_a_symlink_keep_the_link_and_fill_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = write(dir.path(), "target.jsonl", "stale line\n");
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let r = failing_run(dir.path(), &link);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    let dead = read_jsonl(&target);
    assert_eq!(
        dead.len(),
        1,
        "the stale line is gone, one dead letter: {dead:?}"
    );
    assert_eq!(dead[0]["index"], 0);
}

#[test]
fn dead_letters_to_a_fifo_are_written_to_it_and_the_fifo_stays() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("dead.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A clean run never opens it; a run with dead letters writes to it.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let r = failing_run(dir.path(), &fifo);
    // Whatever the run did, release the reader (EOF) so the test cannot hang.
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    assert_eq!(r.code, 3, "{}", r.stderr);
    let text = reader.join().unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"index\":0"), "{text}");
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&kind),
        "the FIFO was replaced"
    );
}

#[test]
fn dead_letters_to_a_directory_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    write(&sub, "keep.txt", "keep");
    let r = failing_run(dir.path(), &sub);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("it is a directory"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(sub.join("keep.txt")).unwrap(),
        "keep"
    );
}

#[test]
fn an_output_that_is_the_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &plugin("double"), "");
    let text = "{\"n\":1}\n{\"n\":2}\n";
    let inp = write(dir.path(), "in.jsonl", text);
    let link = dir.path().join("same.jsonl");
    std::os::unix::fs::symlink(&inp, &link).unwrap();
    for (flag, path) in [("-o", &inp), ("-o", &link), ("--dead-letters", &link)] {
        let r = run_pipeline(
            &m,
            &[
                "-q",
                "-i",
                inp.to_str().unwrap(),
                flag,
                path.to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, 1, "{flag} {path:?}: {}", r.stderr);
        assert!(r.stderr.contains("is the input file"), "{}", r.stderr);
        assert_eq!(std::fs::read_to_string(&inp).unwrap(), text);
    }
}

#[test]
fn bad_bytes_in_a_file_become_dead_letters_and_never_reach_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &plugin("faulty"), "");
    let deep = format!("{{\"n\":3,\"x\":{}{}}}", "[".repeat(300), "]".repeat(300));
    let mut input = b"\xEF\xBB\xBF{\"n\":1}\n{\"n\":2,\"x\":\"\xc3(\"}\n".to_vec();
    input.extend_from_slice(deep.as_bytes());
    input.extend_from_slice(b"\n{\"n\":4}\n");
    let inp = dir.path().join("in.jsonl");
    std::fs::write(&inp, &input).unwrap();
    let out = dir.path().join("out.jsonl");
    let r = run_pipeline(
        &m,
        &[
            "-q",
            "-i",
            inp.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let text = std::fs::read(&out).unwrap();
    let text = String::from_utf8(text).expect("the output is UTF-8");
    let ns: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    // The deep event reaches the stage, which reads only `n` from it.
    assert_eq!(
        ns,
        [1, 3, 4],
        "the BOM is skipped, the bad bytes are not output"
    );
    let dead_text = std::fs::read_to_string(dir.path().join("hard.dead.jsonl"))
        .expect("dead letters are UTF-8");
    let dead = read_jsonl(&dir.path().join("hard.dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead_text}");
    assert_eq!(
        (dead[0]["index"].as_u64(), dead[0]["line"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(
        dead[0]["stage"].is_null(),
        "refused by the source: {}",
        dead[0]
    );
    assert_eq!(
        dead[0]["error"],
        "event is not valid UTF-8 (byte 12 of the event)"
    );
    assert_eq!(
        dead[0]["event_hex"],
        hex::encode(b"{\"n\":2,\"x\":\"\xc3(\"}"),
        "the bytes are kept"
    );
}

#[test]
fn output_past_its_limit_splits_the_chunk_and_dead_letters_only_the_overflowing_event() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        &plugin("words"),
        "limits = { output = \"1KiB\" }\n",
    )
    .to_path_buf();
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("kind = \"map\"", "kind = \"flat_map\"")
        .replace("chunk_size = 2", "chunk_size = 100");
    std::fs::write(&m, text).unwrap();
    // 60 events of 5 words (~80 output bytes each): a chunk's output is
    // far past 1 KiB, each event's is not. One event of 200 words is.
    let mut input = String::new();
    for i in 0..60 {
        input.push_str(&format!("{{\"text\":\"a{i} b c d e\"}}\n"));
    }
    input.insert_str(0, &format!("{{\"text\":\"{}\"}}\n", "w ".repeat(200)));
    let inp = write(dir.path(), "in.jsonl", &input);
    let out = dir.path().join("out.jsonl");
    let r = run_pipeline(
        &m,
        &[
            "-q",
            "-i",
            inp.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(
        read_jsonl(&out).len(),
        300,
        "every event that fits is output"
    );
    let dead = read_jsonl(&dir.path().join("hard.dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["index"], 0);
    assert_eq!(
        dead[0]["error"],
        "stage `s` produced more than 1024 bytes of output in one call (limits.output)"
    );
}

#[test]
fn a_guest_that_logs_without_measure_is_rate_limited_and_its_long_lines_cut() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &fixture("chatty.wat"), "");
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n");
    let r = run_pipeline(&m, &["-q", "-i", inp.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let short = r.stderr.lines().filter(|l| l.ends_with("[s] x")).count();
    assert!(short < 1000, "{short} of 1000 lines logged");
    assert!(
        r.stderr
            .contains("log lines dropped: more than 200 a second"),
        "{}",
        &r.stderr[r.stderr.len().saturating_sub(500)..]
    );
    let long = r
        .stderr
        .lines()
        .find(|l| l.contains("yyyy"))
        .expect("the long line");
    assert!(
        long.contains("[line cut at 16 KiB, 3617 bytes dropped]"),
        "{}",
        &long[long.len() - 80..]
    );
    assert!(long.len() < 17 << 10, "{} bytes", long.len());
}

#[test]
fn a_start_function_that_never_ends_is_refused_as_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        &fixture("spin_start.wat"),
        "limits = { timeout = \"200ms\" }\n",
    );
    let r = run_bounded(wasmpipe().arg("check").arg(&m), BOUND);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("in its start function timed out after 200ms"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_lying_origin_table_outputs_nothing_twice_and_blames_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &fixture("liar.wat"), "");
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
    let out = dir.path().join("out.jsonl");
    let r = run_pipeline(
        &m,
        &[
            "-q",
            "-i",
            inp.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    // Every call lies, down to single events: no output at all, each
    // event once, as a dead letter saying why.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    let dead = read_jsonl(&dir.path().join("hard.dead.jsonl"));
    let idx: Vec<u64> = dead.iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(idx, [0, 1, 2], "{dead:?}");
    for d in &dead {
        assert_eq!(
            d["error"], "stage `s` broke the wasmpipe ABI: origin 1 is outside the 1-event input",
            "{d}"
        );
    }
}

#[test]
fn an_output_length_past_the_guests_memory_is_an_abi_violation_not_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &fixture("huge_output.wat"), "");
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n{\"a\":2}\n");
    let out = dir.path().join("out.jsonl");
    let r = run_pipeline(
        &m,
        &[
            "-q",
            "-i",
            inp.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let dead = read_jsonl(&dir.path().join("hard.dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        let e = d["error"].as_str().unwrap();
        assert!(
            e.starts_with("stage `s` broke the wasmpipe ABI: the output descriptor claims 4294967295 bytes at offset")
                && e.contains("past the end of the stage's 131072-byte memory"),
            "{e}"
        );
        assert!(!e.contains("limits.output"), "{e}");
    }
}

#[test]
fn a_reduce_that_outgrows_its_memory_keeps_the_last_accumulator_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    // `grow` adds 8 MiB to its accumulator per event; 64 MiB is the limit.
    let text = format!(
        "[pipeline]\nname = \"g\"\n[[stage]]\nname = \"grow\"\nkind = \"reduce\"\nplugin = {}\n",
        toml_path(&plugin("grow"))
    );
    let m = write(dir.path(), "g.toml", &text);
    let inp = write(dir.path(), "in.jsonl", &"{\"mb\":8}\n".repeat(10));
    let out = dir.path().join("out.json");
    let run = |workers: &str| {
        run_bounded(
            wasmpipe()
                .args(["run", "-q", "--chunk-size", "1", "-w", workers])
                .arg(&m)
                .arg("-i")
                .arg(&inp)
                .arg("-o")
                .arg(&out),
            Duration::from_secs(120),
        )
    };
    let r = run("1");
    assert_eq!(r.code, 3, "{}", r.stderr);
    let result: String = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(
        !result.is_empty() && result.len().is_multiple_of(8 << 20),
        "{} bytes",
        result.len()
    );
    let kept = result.len() / (8 << 20);
    let dead = read_jsonl(&dir.path().join("g.dead.jsonl"));
    assert_eq!(kept + dead.len(), 10, "every event folded or a dead letter");
    for d in &dead {
        assert_eq!(
            d["error"],
            "stage `grow` ran out of memory (limit 67108864 bytes); raise its `limits.memory` if the event needs more",
            "{d}"
        );
    }
    let idx: Vec<u64> = dead.iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(idx, (kept as u64..10).collect::<Vec<_>>());
    // With two workers, shares that do not fit together are said so.
    let r = run("2");
    if r.code == 1 {
        assert!(
            r.stderr.contains("cannot combine the results of 2 workers")
                && r.stderr.contains("--workers 1"),
            "{}",
            r.stderr
        );
    } else {
        assert_eq!(r.code, 3, "{}", r.stderr);
    }
}

#[test]
fn a_dead_letter_too_deep_to_embed_is_kept_as_text_any_json_tool_reads() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &plugin("faulty"), "");
    // 1013 is unlucky for `faulty`: a dead letter, with a deep field.
    let deep = format!(
        "{{\"n\":1013,\"x\":{}{}}}\n",
        "[".repeat(300),
        "]".repeat(300)
    );
    let inp = write(dir.path(), "in.jsonl", &deep);
    let r = run_pipeline(&m, &["-q", "-i", inp.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    // `read_jsonl` parses with serde_json, whose nesting limit is 128.
    let dead = read_jsonl(&dir.path().join("hard.dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event"], deep.trim_end(), "the event, as text");
}

#[test]
fn a_guest_that_exits_through_wasi_is_a_dead_letter_that_leads_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &fixture("exiting.wat"), "");
    let inp = write(dir.path(), "in.jsonl", "{\"a\":1}\n");
    let r = run_pipeline(&m, &["-q", "-i", inp.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let dead = read_jsonl(&dir.path().join("hard.dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0]["error"],
        "stage `s` trapped: the stage exited with status 3"
    );
}
