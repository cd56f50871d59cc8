//! The fuzz targets' corpora as regression tests: every target of
//! `bench/fuzz` (`wasmpipe::fuzzing`) over every file of its corpus
//! (`bench/fuzz/corpus/<target>/`) and of the inputs that once broke it
//! (`bench/fuzz/regressions/<target>/`). No libFuzzer, no campaign: the
//! same functions over the same files, in a few seconds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("a readable entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[test]
fn every_fuzz_target_holds_on_its_corpus_and_regressions() {
    let dir = fuzz_dir();
    let mut failed = Vec::new();
    let mut slow = Vec::new();
    for &(name, target) in wasmpipe::fuzzing::TARGETS {
        let corpus = files(&dir.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "target `{name}` has no corpus in {:?}",
            dir.join("corpus").join(name)
        );
        let regressions = files(&dir.join("regressions").join(name));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).expect("a readable corpus file");
            let started = Instant::now();
            if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{}: {why}", file.display()));
            }
            // A hang found by a campaign fails here as slow, not as a
            // test that never ends.
            if started.elapsed() > Duration::from_secs(2) {
                slow.push(format!("{} ({:?})", file.display(), started.elapsed()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz targets failed on:\n{}",
        failed.join("\n")
    );
    assert!(
        slow.is_empty(),
        "fuzz targets were slow on:\n{}",
        slow.join("\n")
    );
}

#[test]
fn every_fuzz_target_is_built_and_every_corpus_has_its_target() {
    let dir = fuzz_dir();
    let names: Vec<&str> = wasmpipe::fuzzing::TARGETS.iter().map(|t| t.0).collect();
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("bench/fuzz/Cargo.toml");
    for name in &names {
        let source = dir.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source).unwrap_or_default();
        assert!(
            text.contains(&format!("wasmpipe::fuzzing::{name}(")),
            "{source:?} runs `wasmpipe::fuzzing::{name}`"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "bench/fuzz/Cargo.toml has a `[[bin]]` for `{name}`"
        );
    }
    for folder in ["corpus", "regressions"] {
        for entry in std::fs::read_dir(dir.join(folder)).into_iter().flatten() {
            let entry = entry.expect("a readable entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                names.contains(&name.as_str()),
                "bench/fuzz/{folder}/{name} belongs to no target of wasmpipe::fuzzing::TARGETS"
            );
        }
    }
}
