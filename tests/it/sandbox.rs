//! The sandbox: a stage reaches no file and no environment variable unless
//! the manifest grants it, and then exactly what is granted.

use crate::util::{plugin, read_jsonl, toml_path, wasmpipe, write};
use std::path::Path;

fn probe(dir: &Path, allow: &str) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let text = format!(
        "[pipeline]\nname = \"sandbox\"\n\n[[stage]]\nname = \"faulty\"\nkind = \"map\"\nplugin = {}\n{allow}\n",
        toml_path(&plugin("faulty"))
    );
    let m = write(dir, "sandbox.toml", &text);
    let inp = write(dir, "in.jsonl", "{\"n\":-4}\n");
    let out = dir.join("out.jsonl");
    let r = wasmpipe()
        .arg("run")
        .arg(&m)
        .args([
            "-q",
            "-i",
            inp.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .env("HOME", "/home/tester")
        .output()
        .unwrap();
    assert!(
        matches!(r.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    (
        read_jsonl(&out),
        read_jsonl(&dir.join("sandbox.dead.jsonl")),
    )
}

#[test]
fn files_and_environment_are_denied_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = probe(dir.path(), "");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(dead.len(), 1);
    let err = dead[0]["error"].as_str().unwrap();
    assert!(err.contains("read /etc/passwd: denied"), "{err}");
    assert!(err.contains("env HOME: denied"), "{err}");
}

#[test]
fn granted_directories_and_variables_are_visible_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fake-etc")).unwrap();
    write(
        &dir.path().join("fake-etc"),
        "passwd",
        "tester:x:1000:1000\n",
    );
    let allow = "allow = { env = [\"HOME\"], dirs = [{ host = \"fake-etc\", guest = \"/etc\" }] }";
    let (out, dead) = probe(dir.path(), allow);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0]["passwd"], "tester:x:1000:1000\n",
        "the granted directory, not the host's /etc"
    );
    assert_eq!(out[0]["home"], "/home/tester");
}
