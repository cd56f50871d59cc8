//! The stage author's loop: `wasmpipe new`, `build`, `test`, from an empty
//! directory as the README shows, and `run --watch` over a crate directory
//! rebuilding and swapping the stage when its source changes.
//!
//! The scaffolded crates are built into one cargo target directory shared
//! by these tests (and kept between runs), so the SDK's dependencies are
//! compiled once.

use crate::reload::Watched;
use crate::util::{Run, wasmpipe};
use std::path::{Path, PathBuf};

/// `wasmpipe <args>` run in `dir`, building crates into the shared target.
fn in_dir(dir: &Path, args: &[&str]) -> Run {
    author_cmd(dir)
        .args(args)
        .output()
        .expect("cannot run wasmpipe")
        .into()
}

fn author_cmd(dir: &Path) -> std::process::Command {
    let mut cmd = wasmpipe();
    cmd.current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS");
    cmd
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("stage-crates")
}

#[test]
fn new_build_and_test_work_from_an_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let r = in_dir(dir, &["new", "level-up", "--kind", "map"]).expect_code(0);
    assert!(r.stdout.contains("wasmpipe build level-up"), "{}", r.stdout);
    for f in [
        "Cargo.toml",
        ".cargo/config.toml",
        "src/lib.rs",
        "samples.jsonl",
        "expected.jsonl",
        "pipeline.toml",
    ] {
        assert!(dir.join("level-up").join(f).is_file(), "{f} was created");
    }
    let config = std::fs::read_to_string(dir.join("level-up/.cargo/config.toml")).unwrap();
    assert!(config.contains("target = \"wasm32-wasip1\""), "{config}");
    let r = in_dir(dir, &["new", "level-up", "--kind", "map"]).expect_code(1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = in_dir(dir, &["new", "1bad", "--kind", "map"]).expect_code(1);
    assert!(r.stderr.contains("starts with a letter"), "{}", r.stderr);

    // `wasmpipe build` prints the path of the module it built.
    let r = in_dir(dir, &["build", "level-up"]).expect_code(0);
    let wasm = PathBuf::from(r.stdout.trim());
    assert!(wasm.ends_with("level_up.wasm"), "{}", r.stdout);
    assert!(wasm.is_file());
    assert!(r.stderr.contains("a map stage"), "{}", r.stderr);

    // `wasmpipe test` on the module and on the crate directory.
    let args = |plugin: &str, expect: &str| {
        vec![
            "test".to_string(),
            plugin.to_string(),
            "--input".into(),
            "level-up/samples.jsonl".into(),
            "--expect".into(),
            expect.to_string(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        in_dir(dir, &a)
    };
    let r = run(args(wasm.to_str().unwrap(), "level-up/expected.jsonl")).expect_code(0);
    assert!(r.stdout.contains("ok: 3 outputs match"), "{}", r.stdout);
    let r = run(args("level-up", "level-up/expected.jsonl")).expect_code(0);
    assert!(r.stdout.contains("ok: 3 outputs match"), "{}", r.stdout);

    // A wrong expectation: a diff and exit code 4.
    std::fs::write(dir.join("wrong.jsonl"), "{\"n\":2}\n{\"n\":5}\n{\"n\":6}\n").unwrap();
    let r = run(args("level-up", "wrong.jsonl")).expect_code(4);
    assert!(
        r.stdout
            .contains("  {\"n\":2}\n- {\"n\":5}\n+ {\"n\":4}\n  {\"n\":6}\n"),
        "{}",
        r.stdout
    );

    // Without --expect: outputs on stdout, dead letters on stderr, exit 3.
    std::fs::write(dir.join("odd.jsonl"), "{\"n\":1}\n{\"n\":\"x\"}\n").unwrap();
    let r = in_dir(dir, &["test", "level-up", "-i", "odd.jsonl"]).expect_code(3);
    assert_eq!(r.stdout, "{\"n\":2}\n");
    assert!(r.stderr.contains("\"line\":2"), "{}", r.stderr);

    // The scaffold's unit test passes natively.
    let host = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .unwrap();
    let host = String::from_utf8(host.stdout).unwrap();
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_string();
    let out = std::process::Command::new(env!("CARGO"))
        .args(["test", "--release", "--target", &host])
        .current_dir(dir.join("level-up"))
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test tests::doubles ... ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_kind_scaffolds_a_stage_that_passes_its_own_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for kind in ["filter", "flat_map", "reduce"] {
        let name = format!("my_{kind}");
        in_dir(dir, &["new", &name, "--kind", kind]).expect_code(0);
        let samples = format!("{name}/samples.jsonl");
        let expected = format!("{name}/expected.jsonl");
        let r = in_dir(
            dir,
            &[
                "test", &name, "--kind", kind, "-i", &samples, "--expect", &expected,
            ],
        )
        .expect_code(0);
        assert!(r.stdout.starts_with("ok: "), "{kind}: {}", r.stdout);
    }
}

#[test]
fn a_crate_plugin_is_rebuilt_and_swapped_when_its_source_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    in_dir(dir, &["new", "tripler", "--kind", "map"]).expect_code(0);
    let crate_dir = dir.join("tripler");
    let m = crate_dir.join("pipeline.toml");
    // The scaffolded manifest points at the crate itself (`plugin = "."`).
    Watched::start_with(author_cmd(dir), &m, dir, &[])
        .edit_goes_live_and_a_broken_edit_is_rejected(
            "tripler",
            &crate_dir.join("src/lib.rs"),
            ("checked_mul(2)", "checked_mul(3)"),
            // A source that does not compile.
            "this is not rust",
        );
}

#[test]
fn new_and_build_help_speak_of_every_language() {
    let tmp = tempfile::tempdir().unwrap();
    for command in ["new", "build"] {
        let r = in_dir(tmp.path(), &[command, "--help"]).expect_code(0);
        for word in [
            "Rust",
            "stage.js",
            "stage.ts",
            "stage.py",
            "plugin-sdk/toolchains install",
        ] {
            assert!(
                r.stdout.contains(word),
                "{command} --help: {word}\n{}",
                r.stdout
            );
        }
    }
}
