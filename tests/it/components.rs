//! Stages written in JavaScript, TypeScript and Python, built into
//! `wasmpipe:stage` components: everything a Rust stage has, from the
//! outside. Failures stay with their events (an exception, an endless loop,
//! a memory bomb, a sleep in a WASI call, runaway recursion), the author
//! loop works from `wasmpipe new` to a running pipeline, `run --watch`
//! swaps an edited stage, and `serve` runs them as it runs Rust stages.
//!
//! Building needs the toolchains `plugin-sdk/toolchains install` sets up
//! (`.ci/run` does). The fixtures are copied out of the repository and
//! built once per test process; the compiled-module cache is shared.

use crate::reload::Watched;
use crate::util::http::{Server, get, post, wait_job};
use crate::util::{Run, fixture, read_jsonl, repo, run, run_bounded, toml_path, wasmpipe, write};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The stage directory `tests/fixtures/<name>` copied to a build folder of
/// this test run, built with `wasmpipe build`; returns (directory, .wasm).
fn built(name: &str) -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<Mutex<BTreeMap<String, (PathBuf, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(b) = built.get(name) {
        return b.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("component-stages")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        let to = dir.join(p.file_name().unwrap());
        let text = std::fs::read(&p).unwrap();
        // Rewritten only when changed: the build is skipped for a stage
        // whose sources are older than its component.
        if std::fs::read(&to).ok().as_ref() != Some(&text) {
            std::fs::write(&to, text).unwrap();
        }
    }
    let r: Run = wasmpipe().arg("build").arg(&dir).output().unwrap().into();
    let r = r.expect_code(0);
    let wasm = PathBuf::from(r.stdout.trim());
    assert!(wasm.is_file(), "{}", r.stderr);
    built.insert(name.into(), (dir.clone(), wasm.clone()));
    (dir, wasm)
}

/// A manifest running the hostile fixture `name` as stage `s`.
fn hostile_manifest(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let (_, wasm) = built(name);
    hostile_manifest_of(dir, &wasm, extra)
}

/// A manifest running `plugin` (a component, or a stage's folder) as the
/// hostile stage `s`.
fn hostile_manifest_of(dir: &Path, wasm: &Path, extra: &str) -> PathBuf {
    write(
        dir,
        "hostile.toml",
        &format!(
            "[pipeline]\nname = \"hostile\"\n\n[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\nparams = {{ tag = \"t1\" }}\nlimits = {{ timeout = \"1s\", memory = \"256MiB\" }}\n\n[runtime]\nretries = 0\n{extra}",
            toml_path(wasm)
        ),
    )
}

/// Runs `name` over 24 events, every fourth a plain one, the others
/// misbehaving as `bad` says, and checks that each bad event alone is a
/// dead letter with the words `bad` gives, and every good one an output:
/// as a component (`run`), then as a development build (`run --watch`,
/// the stage's folder appended to the development interpreter), which
/// must contain every failure as well.
fn each_failure_stays_with_its_event(name: &str, bad: &[(Value, &str)]) {
    let (dir, wasm) = built(name);
    each_failure_stays_with_its_event_in(name, &wasm, false, bad);
    each_failure_stays_with_its_event_in(name, &dir, true, bad);
}

fn each_failure_stays_with_its_event_in(
    name: &str,
    plugin: &Path,
    development: bool,
    bad: &[(Value, &str)],
) {
    let name = &format!(
        "{name}{}",
        if development {
            " (development build)"
        } else {
            ""
        }
    );
    let tmp = tempfile::tempdir().unwrap();
    let m = hostile_manifest_of(tmp.path(), plugin, "");
    let mut input = String::new();
    let mut expected_dead = BTreeMap::new();
    let mut good = Vec::new();
    for i in 0..24usize {
        let ev = if i % 4 == 0 || i / 4 >= bad.len() {
            good.push((i, i as i64));
            json!({"n": i})
        } else {
            let (e, words) = &bad[(i / 4 + i % 4) % bad.len()];
            expected_dead.insert(i, *words);
            e.clone()
        };
        input.push_str(&ev.to_string());
        input.push('\n');
    }
    input.push_str("{\"n\": oops\n");
    expected_dead.insert(24, "invalid event JSON");
    let data = write(tmp.path(), "in.jsonl", &input);
    let out = tmp.path().join("out.jsonl");
    let dead = tmp.path().join("dead.jsonl");
    let mut cmd = wasmpipe();
    cmd.arg("run").arg(&m);
    if development {
        // `--watch` reads stdin to its end.
        cmd.arg("--watch")
            .stdin(std::fs::File::open(&data).unwrap());
    } else {
        cmd.arg("-i").arg(&data);
    }
    let r = run_bounded(
        cmd.arg("-o")
            .arg(&out)
            .arg("--dead-letters")
            .arg(&dead)
            .args(["-w", "2", "--chunk-size", "5", "--meta", "host=h9"]),
        Duration::from_secs(240),
    );
    assert_eq!(r.code, 3, "{name}: {}", r.stderr);
    let outs = read_jsonl(&out);
    let expect_out: Vec<Value> = good
        .iter()
        .map(|&(_, n)| json!({"n": n * 2, "tag": "t1", "host": "h9"}))
        .collect();
    assert_eq!(outs, expect_out, "{name}: outputs");
    let dead = read_jsonl(&dead);
    let got: BTreeMap<usize, String> = dead
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().unwrap() as usize,
                d["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected_dead.keys().collect::<Vec<_>>(),
        "{name}: the dead letters are exactly the bad events: {got:#?}"
    );
    for (i, words) in &expected_dead {
        assert!(
            got[i].contains(words),
            "{name}: event {i} should die saying `{words}`: {}",
            got[i]
        );
    }
    // The version that ran is the file's: the development build when
    // watching, which names the code in it.
    let ran = if development {
        let stage = plugin.file_name().unwrap().to_string_lossy();
        plugin.join(format!(".wasmpipe/{stage}.dev.wasm"))
    } else {
        plugin.to_path_buf()
    };
    let version = hex::encode(sha2::Sha256::digest(std::fs::read(&ran).unwrap()));
    for d in &dead {
        assert_eq!(d["stage"], "s", "{d}");
        assert_eq!(d["versions"]["s"], version[..12], "{name}: {d}");
    }
}

/// An out-of-memory dead letter of the hostile stages (256 MiB limit).
const OOM: &str = "stage `s` ran out of memory (limit 268435456 bytes); raise its `limits.memory` if the event needs more";

#[test]
fn a_javascript_stage_confines_exceptions_loops_memory_bombs_and_recursion_to_their_event() {
    each_failure_stays_with_its_event(
        "js_hostile",
        &[
            (json!({"throw": "no such user"}), "no such user"),
            (json!({"loop": true}), "timed out after 1s"),
            // SpiderMonkey's allocator fails inside the limit and throws
            // its "out of memory" on that event, said as a Rust stage's is.
            (json!({"bomb": 7}), OOM),
            (json!({"recurse": true}), "recursion"),
        ],
    );
}

#[test]
fn a_python_stage_confines_exceptions_loops_sleeps_and_memory_bombs_to_their_event() {
    each_failure_stays_with_its_event(
        "py_hostile",
        &[
            (json!({"throw": "no such user"}), "no such user"),
            (json!({"loop": true}), "timed out after 1s"),
            // Asleep in a WASI poll, not in wasm code: the host's bounded
            // poll ends it at the time limit.
            (json!({"sleep": 600}), "timed out after 1s"),
            // CPython's allocator fails inside the limit: a MemoryError,
            // raised on that event like any exception, said as a Rust
            // stage's out of memory is.
            (json!({"bomb": true}), OOM),
            (json!({"recurse": true}), "recursion"),
        ],
    );
}

#[test]
fn an_instance_whose_memory_only_grows_is_replaced_before_it_runs_out() {
    // Each event keeps 4 MiB for the instance's life; 40 of them are
    // 160 MiB, over twice the 64 MiB limit. Instances past half their
    // limit are replaced between calls, so none of them runs out.
    let tmp = tempfile::tempdir().unwrap();
    let (_, wasm) = built("js_hostile");
    let m = write(
        tmp.path(),
        "leak.toml",
        &format!(
            "[pipeline]\nname = \"leak\"\n\n[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\nparams = {{ tag = \"t\" }}\nlimits = {{ memory = \"64MiB\" }}\n",
            toml_path(&wasm)
        ),
    );
    let input: String = (0..40)
        .map(|i| format!("{{\"n\":{i},\"leak\":4194304}}\n"))
        .collect();
    let data = write(tmp.path(), "in.jsonl", &input);
    let r = run(&[
        "run",
        m.to_str().unwrap(),
        "-i",
        data.to_str().unwrap(),
        "-w",
        "1",
        "--chunk-size",
        "1",
        "--meta",
        "host=h",
    ])
    .expect_code(0);
    assert_eq!(r.stdout.lines().count(), 40, "{}", r.stderr);
}

#[test]
fn console_log_and_print_go_to_the_host_log_tagged_with_the_stage() {
    for name in ["js_hostile", "py_hostile"] {
        let tmp = tempfile::tempdir().unwrap();
        let m = hostile_manifest(tmp.path(), name, "");
        let data = write(
            tmp.path(),
            "in.jsonl",
            "{\"n\":1,\"log\":\"hello from the guest\"}\n",
        );
        let r = run(&["run", m.to_str().unwrap(), "-i", data.to_str().unwrap()]).expect_code(0);
        assert!(
            r.stderr.contains("[s] hello from the guest"),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(
            serde_json::from_str::<Value>(r.stdout.trim()).unwrap()["n"],
            2
        );
    }
}

#[test]
fn a_component_that_is_not_a_stage_is_refused_with_the_reason() {
    let r = run(&["inspect", fixture("empty_component.wat").to_str().unwrap()]).expect_code(1);
    assert!(
        r.stderr
            .contains("does not export `wasmpipe:stage/stage@0.1.0`"),
        "{}",
        r.stderr
    );
    // A memory limit below what the interpreter needs at start refuses
    // the pipeline, saying which stage.
    let tmp = tempfile::tempdir().unwrap();
    let (_, wasm) = built("js_hostile");
    let m = write(
        tmp.path(),
        "small.toml",
        &format!(
            "[pipeline]\nname = \"small\"\n\n[[stage]]\nname = \"tiny\"\nkind = \"map\"\nplugin = {}\nlimits = {{ memory = \"2MiB\" }}\n",
            toml_path(&wasm)
        ),
    );
    let data = write(tmp.path(), "in.jsonl", "{\"n\":1}\n");
    let r = run(&["run", m.to_str().unwrap(), "-i", data.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("stage `tiny`"), "{}", r.stderr);
}

#[test]
fn building_without_the_toolchain_says_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let js = tmp.path().join("nojs");
    std::fs::create_dir_all(&js).unwrap();
    std::fs::write(
        js.join("stage.js"),
        "export function map(e) { return e; }\n",
    )
    .unwrap();
    let py = tmp.path().join("nopy");
    std::fs::create_dir_all(&py).unwrap();
    std::fs::write(py.join("stage.py"), "from wasmpipe import map\n").unwrap();
    let bare = |dir: &Path| -> Run {
        wasmpipe()
            .arg("build")
            .arg(dir)
            .env("WASMPIPE_TOOLCHAINS", tmp.path().join("none"))
            .env("PATH", "/nonexistent")
            .output()
            .unwrap()
            .into()
    };
    let r = bare(&js).expect_code(1);
    assert!(r.stderr.contains("Node.js 20 or later"), "{}", r.stderr);
    let r: Run = wasmpipe()
        .arg("build")
        .arg(&js)
        .env("WASMPIPE_TOOLCHAINS", tmp.path().join("none"))
        .output()
        .unwrap()
        .into();
    let r = r.expect_code(1);
    assert!(
        r.stderr
            .contains("`@bytecodealliance/componentize-js` is not installed")
            && r.stderr.contains("npm install"),
        "{}",
        r.stderr
    );
    let r = bare(&py).expect_code(1);
    assert!(
        r.stderr.contains("pip install componentize-py==0.25.1"),
        "{}",
        r.stderr
    );
    // Nothing was installed behind the user's back.
    assert!(!js.join("node_modules").exists());
    assert!(!tmp.path().join("none").exists());
}

/// `wasmpipe <args>` in `dir`.
fn in_dir(dir: &Path, args: &[&str]) -> Run {
    wasmpipe()
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
        .into()
}

#[test]
fn new_then_run_takes_two_commands_in_js_ts_and_python_and_the_native_tests_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (lang, kind, expected) in [
        ("js", "map", "{\"n\":2}\n{\"n\":4}\n{\"n\":6}\n"),
        ("ts", "filter", "{\"n\":2}\n"),
        ("python", "reduce", "6\n"),
    ] {
        let name = format!("hello-{lang}");
        let r = in_dir(dir, &["new", &name, "--kind", kind, "--lang", lang]).expect_code(0);
        assert!(r.stdout.contains("wasmpipe run"), "{}", r.stdout);
        // The native test, as `new` says to run it.
        let test_commands: Vec<String> = r
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("(cd "))
            .map(|l| l.split("   # ").next().unwrap().to_string())
            .collect();
        assert!(!test_commands.is_empty(), "{}", r.stdout);
        let stage = dir.join(&name);
        // What runs leave beside the stage is not committed with it; nor
        // is what installs fill.
        let ignored = std::fs::read_to_string(stage.join(".gitignore")).unwrap();
        let installed = if lang == "python" {
            "/.venv/"
        } else {
            "/node_modules/"
        };
        for line in ["wasmpipe.db", "wasmpipe.db-wal", "*.dead.jsonl", installed] {
            assert!(ignored.lines().any(|l| l == line), "{lang}: {ignored}");
        }
        if lang != "python" {
            // The toolchain is the machine's: `npm install <package>` in
            // the stage installs that package alone.
            let package = std::fs::read_to_string(stage.join("package.json")).unwrap();
            assert!(!package.contains("dependencies"), "{package}");
        }
        let r = in_dir(
            dir,
            &[
                "run",
                &format!("{name}/pipeline.toml"),
                "-i",
                &format!("{name}/samples.jsonl"),
                "-q",
            ],
        )
        .expect_code(0);
        // `-q` keeps the build's progress quiet too.
        assert!(
            !r.stderr.contains("built stage") && !r.stderr.contains("Component built"),
            "{lang}: {}",
            r.stderr
        );
        // The scaffolded pipeline records lineage (`_versions`).
        let outputs: String = r
            .stdout
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                if let Some(o) = v.as_object_mut() {
                    assert!(o.remove("_versions").is_some(), "{lang}: lineage in {l}");
                }
                format!("{v}\n")
            })
            .collect();
        assert_eq!(outputs, expected, "{lang}: {}", r.stderr);
        assert_eq!(
            std::fs::read_to_string(stage.join("expected.jsonl")).unwrap(),
            expected
        );
        // `wasmpipe test` against the scaffolded expectations.
        let r = in_dir(
            &stage,
            &[
                "test",
                ".",
                "--input",
                "samples.jsonl",
                "--expect",
                "expected.jsonl",
            ],
        )
        .expect_code(0);
        assert!(r.stdout.starts_with("ok: "), "{lang}: {}", r.stdout);
        // The native test runs the function without wasm (TypeScript's
        // after `tsc`, with the toolchain's TypeScript and @types/node;
        // Python's with the stage's own interpreter), and fails when the
        // function is wrong.
        for c in &test_commands {
            shell(dir, c).expect_code(0);
        }
        let source = match lang {
            "js" => "stage.js",
            "ts" => "stage.ts",
            _ => "stage.py",
        };
        let text = std::fs::read_to_string(stage.join(source)).unwrap();
        let broken = match kind {
            "map" => text.replace("n: event.n * 2", "n: event.n * 3"),
            "filter" => text.replace("=== 0", "=== 1"),
            _ => text.replace("acc + event[\"n\"]", "acc - event[\"n\"]"),
        };
        assert_ne!(broken, text, "{lang}: the template changed");
        std::fs::write(stage.join(source), broken).unwrap();
        let r = shell(dir, test_commands.last().unwrap());
        assert_ne!(r.code, 0, "{lang}: a wrong function fails its test");
        assert!(
            r.stdout.contains("fail") || r.stderr.contains("FAIL"),
            "{lang}: {}\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// `sh -c command` in `dir`.
fn shell(dir: &Path, command: &str) -> Run {
    std::process::Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .output()
        .unwrap()
        .into()
}

/// node's test runner or pytest in `stage`, with the toolchain's tools.
fn native_test(stage: &Path, lang: &str) -> Run {
    let toolchains = toolchains();
    let mut cmd = match lang {
        "js" => {
            let mut c = std::process::Command::new("node");
            c.arg("--test");
            c
        }
        "ts" => {
            let mut c = std::process::Command::new("node");
            c.args([
                "--import",
                "./.wasmpipe/ts-hooks.mjs",
                "--test",
                "stage.test.ts",
            ]);
            c
        }
        _ => {
            let mut c = std::process::Command::new(toolchains.join("python/bin/python"));
            c.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]);
            c
        }
    };
    cmd.current_dir(stage).output().unwrap().into()
}

/// Where `plugin-sdk/toolchains` installed the tools.
fn toolchains() -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(repo().join("plugin-sdk/toolchains"))
        .arg("dir")
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn a_typescript_stage_bundles_its_helpers_and_npm_packages_and_refuses_imports_it_cannot_have() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = tmp.path().join("labels");
    let files = [
        (
            "stage.ts",
            "import type { Context } from './wasmpipe';\nimport { parity } from './lib/parity.ts';\nimport { LABELS } from './lib/labels.js';\nimport { shout, more } from 'shout';\nexport const later = more;\nimport pad from 'pad-cjs';\n\nexport function map(event: { n: number }, ctx: Context) {\n  return { ...event, parity: shout(LABELS[parity(event.n)]), id: pad(event.n) };\n}\n",
        ),
        // `./modulus.js` names `modulus.ts`, as TypeScript resolves it.
        (
            "lib/parity.ts",
            "import { MODULUS } from './modulus.js';\nexport function parity(n: number): number {\n  return n % MODULUS;\n}\n",
        ),
        ("lib/modulus.ts", "export const MODULUS: number = 2;\n"),
        // A JavaScript helper beside the TypeScript ones.
        ("lib/labels.js", "export const LABELS = ['even', 'odd'];\n"),
        // Two installed npm packages: an ES module whose `browser`
        // condition is the one a component takes, and a CommonJS one.
        (
            "node_modules/shout/package.json",
            r#"{"name": "shout", "version": "1.0.0", "type": "module", "exports": {"browser": "./web.js", "default": "./node.js"}}"#,
        ),
        (
            "node_modules/shout/web.js",
            "export const shout = (s) => s.toUpperCase() + '!';\nexport const more = () => import('./more.js');\n",
        ),
        // A dynamic import stays inside the one module componentize-js takes.
        ("node_modules/shout/more.js", "export const more = 1;\n"),
        (
            "node_modules/shout/node.js",
            "import fs from 'node:fs';\nexport const shout = (s) => fs.readFileSync(s);\n",
        ),
        (
            "node_modules/pad-cjs/package.json",
            r#"{"name": "pad-cjs", "version": "1.0.0", "main": "index.js"}"#,
        ),
        (
            "node_modules/pad-cjs/index.js",
            "module.exports = function pad(n) { return String(n).padStart(3, '0'); };\n",
        ),
        (
            "stage.test.ts",
            "import { test } from 'node:test';\nimport assert from 'node:assert/strict';\nimport { parity } from './lib/parity.ts';\n\ntest('parity', () => {\n  assert.equal(parity(3), 1);\n});\n",
        ),
        (
            "pipeline.toml",
            "[pipeline]\nname = \"labels\"\n\n[[stage]]\nname = \"labels\"\nkind = \"map\"\nplugin = \".\"\n",
        ),
        ("samples.jsonl", "{\"n\":1}\n{\"n\":2}\n"),
    ];
    for (name, text) in files {
        let path = stage.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let r = in_dir(
        &stage,
        &["run", "pipeline.toml", "-i", "samples.jsonl", "-o", "-"],
    )
    .expect_code(0);
    let outputs: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        outputs,
        [
            json!({"n": 1, "parity": "ODD!", "id": "001"}),
            json!({"n": 2, "parity": "EVEN!", "id": "002"})
        ],
        "{}",
        r.stderr
    );
    // The build wrote the loader the native test runs with, which also
    // takes `./modulus.js` for `modulus.ts`.
    native_test(&stage, "ts").expect_code(0);

    // An import the bundle cannot have is refused where it is written,
    // with what to do; the line is the first of the file.
    let source = stage.join("stage.ts");
    let text = std::fs::read_to_string(&source).unwrap();
    for (import, said) in [
        ("import { gone } from './lib/gone.ts';\n", "no such file"),
        (
            "import { gone } from 'left-pad';\n",
            "the npm package `left-pad` is not installed: run `npm install left-pad`",
        ),
        (
            "import { gone } from 'node:fs';\n",
            "`node:fs` is one of Node's own modules",
        ),
        (
            "import { gone } from 'crypto';\n",
            "`crypto` is one of Node's own modules",
        ),
    ] {
        std::fs::write(
            &source,
            format!("{import}{}", text.replace("LABELS[", "gone + LABELS[")),
        )
        .unwrap();
        let r = in_dir(&stage, &["run", "pipeline.toml", "-i", "samples.jsonl"]).expect_code(1);
        assert!(
            r.stderr.contains("stage.ts:1:22") && r.stderr.contains(said),
            "{import}: {}",
            r.stderr
        );
        // The stage's code is what is wrong, not a tool.
        assert!(
            r.stderr
                .contains("stage.ts does not build: fix the errors above and save it again")
                && !r.stderr.contains("componentize-js"),
            "{import}: {}",
            r.stderr
        );
    }
}

#[test]
fn a_python_stage_imports_the_packages_of_its_own_virtual_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = tmp.path().join("versions");
    // What `python -m venv .venv && .venv/bin/pip install ...` leaves, for
    // a pure-Python package (written by hand: the tests use no network).
    let site = stage.join(".venv/lib/python3.12/site-packages");
    let files = [
        (
            stage.join("stage.py"),
            "from wasmpipe import map\nimport semverish\n\n@map\ndef major(event, ctx):\n    return {**event, \"major\": semverish.major(event[\"v\"])}\n",
        ),
        (
            site.join("semverish/__init__.py"),
            "from .parse import major\n",
        ),
        (
            site.join("semverish/parse.py"),
            "def major(v):\n    return int(v.split('.')[0])\n",
        ),
        (
            stage.join("pipeline.toml"),
            "[pipeline]\nname = \"versions\"\n\n[[stage]]\nname = \"versions\"\nkind = \"map\"\nplugin = \".\"\n",
        ),
        (
            stage.join("samples.jsonl"),
            "{\"v\":\"3.12.1\"}\n{\"v\":\"10.0\"}\n",
        ),
    ];
    for (path, text) in files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let run = || {
        in_dir(
            &stage,
            &["run", "pipeline.toml", "-i", "samples.jsonl", "-o", "-"],
        )
    };
    let majors = |r: &Run| -> Vec<Value> {
        r.stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["major"].clone())
            .collect()
    };
    let r = run().expect_code(0);
    assert_eq!(majors(&r), [json!(3), json!(10)], "{}", r.stderr);

    // An upgrade (pip replaces the package's folder) rebuilds the stage,
    // though none of its sources changed.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::remove_dir_all(site.join("semverish")).unwrap();
    std::fs::create_dir_all(site.join("semverish")).unwrap();
    std::fs::write(
        site.join("semverish/__init__.py"),
        "def major(v):\n    return 'v' + v.split('.')[0]\n",
    )
    .unwrap();
    let r = run().expect_code(0);
    assert_eq!(majors(&r), [json!("v3"), json!("v10")], "{}", r.stderr);

    // A package that is not installed: componentize-py's own words, not
    // buried in a Rust backtrace when the user has asked wasmpipe for one.
    std::fs::write(
        stage.join("stage.py"),
        "from wasmpipe import map\nimport tagged\n\n@map\ndef major(event, ctx):\n    return event\n",
    )
    .unwrap();
    let r: Run = wasmpipe()
        .args(["run", "pipeline.toml", "-i", "samples.jsonl"])
        .env("RUST_BACKTRACE", "1")
        .current_dir(&stage)
        .output()
        .unwrap()
        .into();
    let r = r.expect_code(1);
    assert!(
        r.stderr.contains("No module named 'tagged'") && !r.stderr.contains("Stack backtrace"),
        "{}",
        r.stderr
    );

    // A package with a C extension: what to do, not componentize-py's
    // traceback. (The extension's bytes do not matter: nothing loads it.)
    let ext = site.join("fastparse/_speedups.cpython-312-x86_64-linux-gnu.so");
    std::fs::create_dir_all(ext.parent().unwrap()).unwrap();
    std::fs::write(&ext, b"\x7fELF").unwrap();
    std::fs::write(
        site.join("fastparse/__init__.py"),
        "from ._speedups import parse\n",
    )
    .unwrap();
    std::fs::write(
        stage.join("stage.py"),
        "from wasmpipe import map\nimport fastparse\n\n@map\ndef major(event, ctx):\n    return event\n",
    )
    .unwrap();
    let r = run().expect_code(1);
    assert!(
        r.stderr
            .contains("imports `fastparse._speedups`, a C extension")
            && r.stderr
                .contains("_speedups.cpython-312-x86_64-linux-gnu.so")
            && r.stderr.contains("use a pure-Python package")
            && !r.stderr.contains("AssertionError"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_edited_javascript_stage_is_rebuilt_and_swapped_by_run_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    in_dir(dir, &["new", "live", "--kind", "map", "--lang", "js"]).expect_code(0);
    let stage = dir.join("live");
    Watched::start(&stage.join("pipeline.toml"), dir, &[])
        .edit_goes_live_and_a_broken_edit_is_rejected(
            "live",
            &stage.join("stage.js"),
            ("n: event.n * 2", "n: event.n * 3"),
            // A syntax error.
            "export function map(event) { return {",
        );
}

#[test]
fn typescript_and_python_edits_go_live_under_run_watch_as_development_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (lang, source, (doubled, tripled), broken) in [
        (
            "ts",
            "stage.ts",
            ("n: event.n * 2", "n: event.n * 3"),
            "export function map(event: In) { return {",
        ),
        (
            "python",
            "stage.py",
            ("n = event[\"n\"] * 2", "n = event[\"n\"] * 3"),
            "from wasmpipe import map\n\n@map\ndef double(event, ctx:\n",
        ),
    ] {
        let name = format!("live-{lang}");
        in_dir(dir, &["new", &name, "--kind", "map", "--lang", lang]).expect_code(0);
        let stage = dir.join(&name);
        Watched::start(&stage.join("pipeline.toml"), &stage, &[])
            .edit_goes_live_and_a_broken_edit_is_rejected(
                &name,
                &stage.join(source),
                (doubled, tripled),
                broken,
            );
        // What ran was the development build; nothing was snapshotted.
        let work = stage.join(".wasmpipe");
        assert!(work.join(format!("{name}.dev.wasm")).is_file(), "{lang}");
        assert!(!work.join(format!("{name}.wasm")).exists(), "{lang}");
    }
}

#[test]
fn python_stages_import_the_standard_library_and_their_own_modules_at_run_time() {
    // A development build runs the stage's code when the instance is first
    // called, after the snapshot: modules nobody imported while it was
    // taken (textwrap, html) and the stage's own helpers must still load.
    // A component imports `html` inside the function, at run time, too.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    in_dir(dir, &["new", "helped", "--kind", "map", "--lang", "python"]).expect_code(0);
    let stage = dir.join("helped");
    std::fs::create_dir(stage.join("util")).unwrap();
    write(
        &stage.join("util"),
        "__init__.py",
        "from .words import short\n",
    );
    write(
        &stage.join("util"),
        "words.py",
        "import textwrap\n\ndef short(text):\n    return textwrap.shorten(text, 11)\n",
    );
    write(
        &stage,
        "stage.py",
        "from wasmpipe import map\nfrom util import short\n\n@map\ndef tidy(event, ctx):\n    import html\n    return {\"n\": event[\"n\"], \"s\": short(event[\"s\"]), \"h\": html.escape(event[\"s\"])}\n",
    );
    write(&stage, "samples.jsonl", "{\"n\": 1, \"s\": \"a\"}\n");
    let mut w = Watched::start(&stage.join("pipeline.toml"), &stage, &[]);
    w.feed("{\"n\": 1, \"s\": \"hello <b>world</b> again\"}\n");
    let outs = w.wait_outputs(1);
    assert_eq!(outs[0]["s"], "hello [...]", "{}", w.log());
    assert_eq!(outs[0]["h"], "hello &lt;b&gt;world&lt;/b&gt; again");
    // A helper's edit goes live as the stage's does.
    let words = stage.join("util/words.py");
    let text = std::fs::read_to_string(&words).unwrap();
    std::fs::write(&words, text.replace("11", "5")).unwrap();
    w.wait_log("now serving generation 1 ", 1);
    w.feed("{\"n\": 2, \"s\": \"hello <b>world</b> again\"}\n");
    assert_eq!(w.wait_outputs(2)[1]["s"], "[...]");
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    let input = write(&stage, "in.jsonl", "{\"n\": 3, \"s\": \"a <i>b</i>\"}\n");
    let r = run(&[
        "run",
        stage.join("pipeline.toml").to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-q",
    ])
    .expect_code(0);
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(out["h"], "a &lt;i&gt;b&lt;/i&gt;", "{}", r.stderr);
}

#[test]
fn an_unchanged_stage_built_again_keeps_its_version_and_its_compiled_code() {
    // componentize-js and componentize-py do not build byte for byte the
    // same component twice; the version must not change with a touched
    // file, nor with an edit undone, and no new code is compiled.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cache = dir.join("cache");
    // Compiled components: `<sha256>-<engine>.cwasm` at the top.
    let compiled = || {
        std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    };
    for (lang, source, (from, to)) in [
        (
            "js",
            "stage.js",
            ("event.n * 2 }", "event.n * 2, edited: true }"),
        ),
        (
            "python",
            "stage.py",
            ("\"n\": n}", "\"n\": n, \"edited\": True}"),
        ),
    ] {
        let name = format!("same-{lang}");
        in_dir(dir, &["new", &name, "--kind", "map", "--lang", lang]).expect_code(0);
        let stage = dir.join(&name);
        let build = || {
            let r: Run = wasmpipe()
                .arg("build")
                .arg(&stage)
                .env("WASMPIPE_CACHE_DIR", &cache)
                .output()
                .unwrap()
                .into();
            let r = r.expect_code(0);
            r.stderr
                .split(", version ")
                .nth(1)
                .and_then(|v| v.get(..12))
                .unwrap_or_else(|| panic!("{lang}: no version in {}", r.stderr))
                .to_string()
        };
        let first = build();
        let entries = compiled();
        assert!(entries > 0, "{lang}: the build compiled its component");
        let file = stage.join(source);
        let text = std::fs::read_to_string(&file).unwrap();
        // Saved again as it was: newer, the same.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, &text).unwrap();
        assert_eq!(build(), first, "{lang}: a touched file");
        assert_eq!(compiled(), entries, "{lang}: nothing new compiled");
        // An edit is a new version; undone, the first one again.
        assert!(text.contains(from), "{lang}: the template changed");
        std::fs::write(&file, text.replace(from, to)).unwrap();
        let edited = build();
        assert_ne!(edited, first, "{lang}");
        std::fs::write(&file, &text).unwrap();
        assert_eq!(build(), first, "{lang}: an edit undone");
        assert_eq!(
            compiled(),
            entries + 1,
            "{lang}: only the edit was compiled"
        );
    }
}

#[test]
fn a_reduce_whose_accumulator_stops_being_json_fails_on_the_event_that_broke_it() {
    // The runtimes check the accumulator once per chunk; when it is not
    // JSON then, the chunk is folded again checking each event, so the
    // dead letter is still the one event, and the others count.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let js = dir.join("total-js");
    std::fs::create_dir(&js).unwrap();
    write(
        &js,
        "stage.js",
        "export const initial = 0;\nexport function reduce(acc, event) { return event.bad ? undefined : acc + event.n; }\nexport function combine(a, b) { return a + b; }\n",
    );
    let py = dir.join("total-py");
    std::fs::create_dir(&py).unwrap();
    write(
        &py,
        "stage.py",
        "from wasmpipe import reduce\n\n\n@reduce(initial=0, combine=lambda a, b: a + b)\ndef total(acc, event, ctx):\n    return {1, 2} if event.get(\"bad\") else acc + event[\"n\"]\n",
    );
    let input = write(
        dir,
        "in.jsonl",
        "{\"n\":1}\n{\"n\":2}\n{\"n\":4,\"bad\":true}\n{\"n\":8}\n{\"n\":16}\n",
    );
    for (stage, said) in [(&js, "returned undefined"), (&py, "not JSON")] {
        let m = write(
            dir,
            "total.toml",
            &format!(
                "[pipeline]\nname = \"total\"\n\n[[stage]]\nname = \"total\"\nkind = \"reduce\"\nplugin = {}\n",
                toml_path(stage)
            ),
        );
        let dead = dir.join("dead.jsonl");
        let r = run(&[
            "run",
            m.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
            "-q",
        ]);
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert_eq!(r.stdout.trim(), "27", "{stage:?}: {}", r.stderr);
        let dead = read_jsonl(&dead);
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["index"], 2, "{:?}", dead[0]);
        assert!(
            dead[0]["error"].as_str().unwrap().contains(said),
            "{stage:?}: {}",
            dead[0]
        );
    }
}

#[test]
fn run_watch_follows_a_javascript_helper_in_a_folder_and_warns_of_no_missing_src() {
    // The stage has no `src/` (the old watcher warned that it could not
    // watch it) and imports a helper from `lib/`, which is what changes.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    in_dir(dir, &["new", "helped", "--kind", "map", "--lang", "js"]).expect_code(0);
    let stage = dir.join("helped");
    std::fs::create_dir(stage.join("lib")).unwrap();
    write(
        &stage.join("lib"),
        "scale.js",
        "export function scale(n) { return n * 2; }\n",
    );
    write(
        &stage,
        "stage.js",
        "import { scale } from './lib/scale.js';\nexport function map(event) { return { ...event, n: scale(event.n) }; }\n",
    );
    Watched::start(&stage.join("pipeline.toml"), dir, &[])
        .edit_goes_live_and_a_broken_edit_is_rejected(
            "helped",
            &stage.join("lib/scale.js"),
            ("n * 2", "n * 3"),
            "export function scale(n) { return",
        );
}

#[test]
fn serve_runs_component_stages_and_stores_their_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, js) = built("js_hostile");
    let (_, py) = built("py_hostile");
    let m = write(
        tmp.path(),
        "serve.toml",
        &format!(
            "[pipeline]\nname = \"mixed\"\n\n[[stage]]\nname = \"js\"\nkind = \"map\"\nplugin = {}\nparams = {{ tag = \"a\" }}\n\n[[stage]]\nname = \"py\"\nkind = \"map\"\nplugin = {}\nparams = {{ tag = \"b\" }}\n\n[serve]\ndatabase = {}\n",
            toml_path(&js),
            toml_path(&py),
            toml_path(&tmp.path().join("serve.db"))
        ),
    );
    let s = Server::start(&m, &[]);
    let r = post(
        &s,
        "/v1/pipelines/mixed/jobs",
        "application/x-ndjson",
        "{\"n\":1}\n{\"throw\":\"bad one\"}\n{\"n\":3}\n",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(job["dead_letters"], 1, "{job}");
    let events = get(&s, "/v1/events?limit=10").json();
    let ns: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event"]["n"])
        .collect();
    // n doubled by the JavaScript stage, then again by the Python one.
    assert_eq!(ns, [&json!(4), &json!(12)], "{events}");
    let dead = get(&s, "/v1/dead-letters?limit=10").json();
    assert_eq!(dead["dead_letters"][0]["error"], "bad one", "{dead}");
    assert_eq!(dead["dead_letters"][0]["stage"], "js", "{dead}");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_keyed_reduce_in_js_and_python_groups_by_the_manifest_key_across_workers() {
    let input = "{\"k\":\"a\",\"n\":1}\n{\"k\":\"__proto__\",\"n\":2}\n{\"k\":7,\"n\":3}\n{\"k\":\"a\",\"n\":4}\n{\"n\":5}\n{\"k\":\"7\",\"n\":1}\n{\"k\":[1],\"n\":1}\n";
    for lang in ["js", "python"] {
        let tmp = tempfile::tempdir().unwrap();
        let sum = repo().join(format!("examples/adder-{lang}/sum"));
        let m = write(
            tmp.path(),
            "keyed.toml",
            &format!(
                "[pipeline]\nname = \"keyed\"\n\n[[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\nkey = \"/k\"\n",
                toml_path(&sum)
            ),
        );
        let data = write(tmp.path(), "in.jsonl", input);
        let dead = tmp.path().join("dead.jsonl");
        let r = run(&[
            "run",
            m.to_str().unwrap(),
            "-i",
            data.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
            "-w",
            "2",
            "--chunk-size",
            "2",
        ]);
        assert_eq!(r.code, 3, "{lang}: {}", r.stderr);
        // One line per group; a group named `__proto__` is a group like
        // any other.
        let groups: Vec<Value> = r
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            groups,
            [
                json!({"key": "7", "value": 4}),
                json!({"key": "__proto__", "value": 2}),
                json!({"key": "a", "value": 5})
            ],
            "{lang}: {}",
            r.stdout
        );
        let dead: Vec<String> = read_jsonl(&dead)
            .iter()
            .map(|d| d["error"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            dead,
            [
                "key `/k` not found in event",
                "key `/k` is an array; keys must be strings, numbers or booleans"
            ],
            "{lang}"
        );
    }
}
