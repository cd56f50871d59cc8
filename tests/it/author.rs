//! The stage author's loop: `wasmpipe new`, `build`, `test`, from an empty
//! directory as the README shows, and `run --watch` over a crate directory
//! rebuilding and swapping the stage when its source changes.
//!
//! The scaffolded crates are built into one cargo target directory shared
//! by these tests (and kept between runs), so the SDK's dependencies are
//! compiled once.

use crate::reload::Watched;
use crate::util::{Run, plugin, run_bounded, toml_path, wasmpipe, write};
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
    assert!(
        r.stderr
            .contains("testing stage `level-up` as configured in level-up/pipeline.toml"),
        "{}",
        r.stderr
    );

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
            "wasmpipe toolchains install",
        ] {
            assert!(
                r.stdout.contains(word),
                "{command} --help: {word}\n{}",
                r.stdout
            );
        }
    }
}

#[test]
fn test_names_the_stage_and_takes_its_params_from_the_manifest_that_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let enrich = plugin("enrich");
    let stage = tmp.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    write(
        &stage,
        "pipeline.toml",
        &format!(
            "[pipeline]\nname = \"logs\"\n\n[[stage]]\nname = \"geo\"\nkind = \"map\"\nplugin = {}\nparams = {{ region = \"eu-west-1\", env = \"staging\" }}\n",
            toml_path(&enrich)
        ),
    );
    let input = write(
        tmp.path(),
        "in.jsonl",
        "{\"level\":\"info\"}\n{\"level\":\"fatal\"}\n",
    );
    let test = |dir: &Path, extra: &[&str]| -> Run {
        wasmpipe()
            .current_dir(dir)
            .arg("test")
            .arg(&enrich)
            .arg("-i")
            .arg(&input)
            .args(extra)
            .output()
            .unwrap()
            .into()
    };
    let out = |r: &Run| -> serde_json::Value { serde_json::from_str(r.stdout.trim()).unwrap() };

    // In the folder of a manifest that runs it: that stage's name, params
    // and pipeline.
    let r = test(&stage, &[]).expect_code(3);
    assert_eq!(
        (&out(&r)["region"], &out(&r)["env"]),
        (&"eu-west-1".into(), &"staging".into()),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("\"pipeline\":\"logs\",\"stage\":\"geo\""),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("testing stage `geo` as configured in pipeline.toml"),
        "{}",
        r.stderr
    );
    // --params replaces them.
    let r = test(&stage, &["--params", "{\"region\":\"us-east-1\"}"]).expect_code(3);
    assert_eq!(
        (&out(&r)["region"], &out(&r)["env"]),
        (&"us-east-1".into(), &"prod".into())
    );
    // The same manifest named from elsewhere.
    let manifest = stage.join("pipeline.toml");
    let r = test(tmp.path(), &["--manifest", manifest.to_str().unwrap()]).expect_code(3);
    assert_eq!(out(&r)["region"], "eu-west-1", "{}", r.stderr);

    // Two stages run it: --stage says which.
    write(
        tmp.path(),
        "two.toml",
        &format!(
            "[pipeline]\nname = \"two\"\n\n[[stage]]\nname = \"eu\"\nkind = \"map\"\nplugin = {p}\nparams = {{ region = \"eu-west-1\" }}\n\n[[stage]]\nname = \"us\"\nkind = \"map\"\nplugin = {p}\nparams = {{ region = \"us-east-1\" }}\n",
            p = toml_path(&enrich)
        ),
    );
    let r = test(tmp.path(), &["--manifest", "two.toml"]).expect_code(1);
    assert!(
        r.stderr.contains("stages `eu`, `us` of two.toml all run")
            && r.stderr.contains("choose one with --stage"),
        "{}",
        r.stderr
    );
    let r = test(tmp.path(), &["--manifest", "two.toml", "--stage", "us"]).expect_code(3);
    assert_eq!(out(&r)["region"], "us-east-1");
    assert!(
        r.stderr.contains("\"pipeline\":\"two\",\"stage\":\"us\""),
        "{}",
        r.stderr
    );

    // With no manifest, the stage and its pipeline are named after the
    // module, not "test".
    let stamp = plugin("stamp");
    let r: Run = wasmpipe()
        .current_dir(tmp.path())
        .arg("test")
        .arg(&stamp)
        .arg("-i")
        .arg(write(tmp.path(), "one.jsonl", "{\"a\":1}\n[1]\n"))
        .output()
        .unwrap()
        .into();
    let r = r.expect_code(3);
    assert_eq!(out(&r)["request"]["pipeline"], "stamp", "{}", r.stdout);
    assert!(
        r.stderr
            .contains("\"pipeline\":\"stamp\",\"stage\":\"stamp\""),
        "{}",
        r.stderr
    );
}

#[test]
fn samples_a_rewritten_stage_no_longer_passes_say_which_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Samples written for another stage: `double` needs `n`.
    let samples = write(dir, "samples.jsonl", "{\"n\":1}\n{\"count\":2}\n");
    let m = write(
        dir,
        "m.toml",
        &format!(
            "[pipeline]\nname = \"s\"\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {}\nsamples = \"samples.jsonl\"\n",
            toml_path(&plugin("double"))
        ),
    );
    let check: Run = wasmpipe().arg("check").arg(&m).output().unwrap().into();
    let watch = run_bounded(
        wasmpipe()
            .args(["run", "--watch"])
            .arg(&m)
            .args(["-i", "-"])
            .stdin(std::process::Stdio::null()),
        std::time::Duration::from_secs(120),
    );
    for r in [check, watch] {
        assert_eq!(r.code, 1, "{}", r.stderr);
        for words in [
            format!(
                "stage `double` failed the sample at {}:2: event does not match",
                samples.display()
            ),
            "missing field `n`".to_string(),
            // Where `samples` is set.
            format!("--> {}:8:11", m.display()),
            format!(
                "edit or remove the sample at {}:2, or remove `samples` from stage `double` in {}",
                samples.display(),
                m.display()
            ),
        ] {
            assert!(r.stderr.contains(&words), "{words}\n{}", r.stderr);
        }
    }
}

#[test]
fn toolchains_are_set_up_by_the_binary_without_a_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tools");
    let r: Run = wasmpipe()
        .args(["toolchains", "dir"])
        .current_dir(tmp.path())
        .env("WASMPIPE_TOOLCHAINS", &dir)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.expect_code(0).stdout, format!("{}\n", dir.display()));
    // The built-in script runs: on a machine with bash and no Node.js it
    // says what to install, and installs nothing.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let bash = ["/usr/bin/bash", "/bin/bash"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bash is installed");
    std::os::unix::fs::symlink(bash, bin.join("bash")).unwrap();
    let r: Run = wasmpipe()
        .args(["toolchains", "install", "js"])
        .current_dir(tmp.path())
        .env("WASMPIPE_TOOLCHAINS", &dir)
        .env("PATH", &bin)
        .output()
        .unwrap()
        .into();
    let r = r.expect_code(1);
    assert!(
        r.stderr
            .contains("node is not installed: install Node.js 20 or later")
            && r.stderr.contains("setting up the toolchains failed"),
        "{}",
        r.stderr
    );
    assert!(!dir.exists());
    let r = in_dir(tmp.path(), &["toolchains", "install", "cobol"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // What `new` says to run is this command.
    for (lang, hint) in [
        ("js", "`wasmpipe toolchains install js`"),
        ("python", "`wasmpipe toolchains install python`"),
    ] {
        let r = in_dir(
            tmp.path(),
            &["new", &format!("s-{lang}"), "--kind", "map", "--lang", lang],
        )
        .expect_code(0);
        assert!(r.stdout.contains(hint), "{}", r.stdout);
    }
}
