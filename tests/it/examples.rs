//! Every example in `examples/` produces exactly its `expected.jsonl` (and,
//! where present, `expected-dead.jsonl`), with one worker and with two, and
//! with chunks small enough that the work really is split.

use crate::util::{assert_text_eq, plugin, repo, run_manifest};

fn examples() -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 4,
        "the adder, enrich, errors and wordcount examples"
    );
    dirs
}

#[test]
fn every_example_matches_its_expected_output_with_one_and_two_workers() {
    plugin("double"); // builds the plugins the manifests point at
    for dir in examples() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let manifest = dir.join(format!("{name}.toml"));
        let expected = std::fs::read_to_string(dir.join("expected.jsonl")).expect("expected.jsonl");
        let expected_dead =
            std::fs::read_to_string(dir.join("expected-dead.jsonl")).unwrap_or_default();
        for (workers, chunk) in [("1", "4096"), ("2", "3"), ("2", "4096")] {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("out.jsonl");
            let dead = tmp.path().join("dead.jsonl");
            let r = run_manifest(
                &manifest,
                &[
                    "-q",
                    "-w",
                    workers,
                    "--chunk-size",
                    chunk,
                    "-o",
                    out.to_str().unwrap(),
                    "--dead-letters",
                    dead.to_str().unwrap(),
                    "--meta",
                    "host=example-host",
                    "--meta",
                    "received_at=2026-11-27T12:00:00.000Z",
                ],
            );
            assert_eq!(
                r.code,
                if expected_dead.is_empty() { 0 } else { 3 },
                "{name}: {}",
                r.stderr
            );
            let what = format!("example `{name}` with {workers} workers, chunks of {chunk}");
            assert_text_eq(&std::fs::read_to_string(&out).unwrap(), &expected, &what);
            assert_text_eq(
                &without_versions(&std::fs::read_to_string(&dead).unwrap_or_default()),
                &expected_dead,
                &format!("{what}: dead letters"),
            );
        }
    }
}

/// Dead letters with their `versions` field (the content hash of each
/// stage, which changes with every build of the plugins) removed, after
/// checking it is there.
fn without_versions(text: &str) -> String {
    text.lines()
        .map(|l| {
            let at = l
                .rfind(",\"versions\":{")
                .unwrap_or_else(|| panic!("a dead letter without `versions`: {l}"));
            format!("{}}}\n", &l[..at])
        })
        .collect()
}

#[test]
fn the_adder_sums_ten_million_lines_exactly_in_bounded_memory() {
    // The sum of 2*(i % 1_000_000) over 10M lines, computed here.
    let lines = 10_000_000u64;
    let expected: u64 = (0..lines).map(|i| 2 * (i % 1_000_000)).sum();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("numbers.jsonl");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 0..lines {
            writeln!(w, "{{\"n\":{}}}", i % 1_000_000).unwrap();
        }
    }
    let manifest = repo().join("examples/adder/adder.toml");
    plugin("double");
    let out_path = tmp.path().join("out.txt");
    // Waited for by `wait4` below, which std does not know about.
    #[allow(clippy::zombie_processes)]
    let child = crate::util::wasmpipe()
        .args(["run", "-q", "-i", input.to_str().unwrap()])
        .arg(&manifest)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    let (status, peak) = wait_with_peak_rss(child.id());
    assert_eq!(status, 0, "wasmpipe failed");
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap().trim(),
        expected.to_string()
    );
    assert!(
        peak < 200 << 20,
        "peak RSS of the run was {} MiB, above 200 MiB",
        peak >> 20
    );
}

/// Waits for child `pid` and returns its exit code and its own peak RSS in
/// bytes (`wait4` reports the child's usage alone, unlike `RUSAGE_CHILDREN`,
/// which would mix in every other child of this test process).
fn wait_with_peak_rss(pid: u32) -> (i32, u64) {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `pid` is our child, not yet waited for; the pointers are valid.
    let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, usage.as_mut_ptr()) };
    assert_eq!(rc, pid as i32, "wait4 failed");
    // SAFETY: filled in by the successful wait4.
    let usage = unsafe { usage.assume_init() };
    (libc::WEXITSTATUS(status), usage.ru_maxrss as u64 * 1024)
}
