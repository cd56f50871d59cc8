//! Snapshot tests of manifest errors: every `tests/ui/*.toml` is checked
//! with `wasmpipe check` and its stderr compared with the `.err` file beside
//! it. `BLESS=1 cargo test --release manifest_errors` rewrites the snapshots.

use crate::util::{assert_text_eq, plugin, repo, wasmpipe};

#[test]
fn bad_manifests_match_their_snapshots() {
    plugin("enrich"); // some cases load real stages, to check their params
    let dir = repo().join("tests/ui");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/ui exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the manifest error cases in {dir:?}"
    );
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases {
        let name = case
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let out = wasmpipe()
            .arg("check")
            .arg(&name)
            .current_dir(&dir)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "{name} should be refused");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let snap = case.with_extension("err");
        if bless {
            std::fs::write(&snap, &stderr).expect("write snapshot");
            continue;
        }
        let expected = std::fs::read_to_string(&snap)
            .unwrap_or_else(|_| panic!("no snapshot {snap:?}; run with BLESS=1"));
        if stderr != expected {
            failures.push((name, stderr, expected));
        }
    }
    if let Some((name, actual, expected)) = failures.first() {
        assert_text_eq(
            actual,
            expected,
            &format!("{} snapshot(s) differ; first: {name}", failures.len()),
        );
    }
}

#[test]
fn every_error_points_at_file_line_and_column() {
    let dir = repo().join("tests/ui");
    for e in std::fs::read_dir(&dir).expect("tests/ui exists") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|e| e == "err") {
            let text = std::fs::read_to_string(&p).expect("readable");
            let toml = p.with_extension("toml");
            let name = toml
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                text.contains(&format!("--> {name}:")),
                "{p:?} does not locate the error in {name}:\n{text}"
            );
            assert!(text.contains("= hint:"), "{p:?} has no hint:\n{text}");
        }
    }
}
