//! Hot reload (`run --watch`): plugins swapped under a running stream,
//! broken plugins refused, manifest edits applied or refused.
//!
//! Versions v1, v2, v3 of one module are made by patching the tag the
//! `version_tag` plugin carries in its data (see its docs): each has its
//! own content hash, and its outputs say which one ran. Nothing here
//! sleeps to let something happen: every step waits for the log line or
//! the output that shows it happened.

use crate::util::{plugin, toml_path, wasmpipe, write};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any awaited condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(120);

/// A `wasmpipe run --watch` process fed through stdin, its log collected.
pub struct Watched {
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<(Mutex<String>, Condvar)>,
    pub out: PathBuf,
}

impl Watched {
    /// Starts `wasmpipe run --watch <manifest> -o <dir>/out.jsonl`.
    pub fn start(manifest: &Path, dir: &Path, args: &[&str]) -> Watched {
        Watched::start_with(wasmpipe(), manifest, dir, args)
    }

    /// The same, from `cmd` (the `wasmpipe` binary with its environment).
    pub fn start_with(mut cmd: Command, manifest: &Path, dir: &Path, args: &[&str]) -> Watched {
        let out = dir.join("out.jsonl");
        let mut child = cmd
            .args(["run", "--watch"])
            .arg(manifest)
            .arg("-o")
            .arg(&out)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start wasmpipe");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (text, cv) = &*sink;
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
                cv.notify_all();
            }
        });
        let stdin = child.stdin.take();
        let w = Watched {
            child,
            stdin,
            log,
            out,
        };
        w.wait_log("watching", 1);
        w
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until `needle` appears `count` times in the log.
    pub fn wait_log(&self, needle: &str, count: usize) {
        let (text, cv) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut t = text.lock().unwrap();
        while t.matches(needle).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {count} x `{needle}` in the log:\n{t}"
            );
            t = cv.wait_timeout(t, left).unwrap().0;
        }
    }

    /// Waits until `needle` appears in the log after its first `mark` bytes.
    pub fn wait_since(&self, mark: usize, needle: &str) {
        let (text, cv) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut t = text.lock().unwrap();
        while !t[mark..].contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for `{needle}` in the log:\n{}",
                &t[mark..]
            );
            t = cv.wait_timeout(t, left).unwrap().0;
        }
    }

    /// Writes events to the pipeline's stdin.
    pub fn feed(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the output holds at least `n` complete lines; returns
    /// the complete part of the output.
    pub fn wait_count(&self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut text = std::fs::read(&self.out).unwrap_or_default();
            let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            text.truncate(complete);
            let lines = memchr_count(&text);
            if lines >= n {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} outputs (have {lines}); log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the output holds at least `n` lines; returns them all.
    pub fn wait_outputs(&self, n: usize) -> Vec<Value> {
        self.wait_count(n)
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// The author loop on a stage that doubles `n`, named `stage` in
    /// lineage, whose source is `src`: `n` 1 and 2 in; the edit
    /// (`doubled` replaced by `tripled` in the source) goes live with a
    /// new version; then `broken` is saved, the change is rejected and the
    /// edited version keeps serving; the run ends with exit code 0.
    pub fn edit_goes_live_and_a_broken_edit_is_rejected(
        mut self,
        stage: &str,
        src: &Path,
        (doubled, tripled): (&str, &str),
        broken: &str,
    ) {
        self.feed("{\"n\":1}\n{\"n\":2}\n");
        let outs = self.wait_outputs(2);
        assert_eq!(outs[1]["n"], 4);
        let first = outs[1]["_versions"][stage].clone();

        let text = std::fs::read_to_string(src).unwrap();
        std::fs::write(src, text.replace(doubled, tripled)).unwrap();
        self.wait_log("now serving generation 1 ", 1);
        self.feed("{\"n\":5}\n");
        let outs = self.wait_outputs(3);
        assert_eq!(outs[2]["n"], 15, "the edited source is live");
        assert_ne!(outs[2]["_versions"][stage], first);

        // The old version keeps serving.
        std::fs::write(src, broken).unwrap();
        self.wait_log("change rejected", 1);
        self.feed("{\"n\":7}\n");
        assert_eq!(self.wait_outputs(4)[3]["n"], 21);
        let (code, log) = self.finish();
        assert_eq!(code, 0, "{log}");
        // Only folders that exist are watched (a JavaScript or Python stage
        // has no `src/`), so there is nothing to warn about.
        assert!(!log.contains("cannot watch"), "{log}");
    }

    /// Closes stdin (the end of the input), waits for the exit code.
    pub fn finish(mut self) -> (i32, String) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let (text, _) = &*self.log;
        // The log thread ends with the process; give it the last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !text.lock().unwrap().contains("dead letters") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        (status.code().unwrap_or(-1), self.log())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn memchr_count(text: &[u8]) -> usize {
    text.iter().filter(|&&b| b == b'\n').count()
}

/// The bytes of version `tag` (two characters) of the `version_tag` plugin.
pub fn version(tag: &str) -> Vec<u8> {
    let bytes = std::fs::read(plugin("version_tag")).unwrap();
    let marker = b"wasmpipe-version-tag:v1";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the version marker is in the module");
    let mut out = bytes.clone();
    out[at + 21..at + 23].copy_from_slice(tag.as_bytes());
    out
}

/// The short version (12 hex digits of the SHA-256) of module `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))[..12].to_string()
}

/// Events `{"id": n}` for n in `range`.
fn events(range: std::ops::Range<u64>) -> String {
    let mut s = String::with_capacity((range.end - range.start) as usize * 16);
    for i in range {
        s.push_str("{\"id\":");
        s.push_str(&i.to_string());
        s.push_str("}\n");
    }
    s
}

/// Puts `bytes` at `path` the way editors and build tools do: written
/// beside it, then renamed over it (one file event, never a partial file).
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn manifest(dir: &Path, stages: &str, runtime: &str) -> PathBuf {
    let text =
        format!("[pipeline]\nname = \"hot\"\n\n{stages}\n[runtime]\nlineage = true\n{runtime}");
    let path = dir.join("hot.toml");
    put(&path, text.as_bytes());
    path
}

fn tag_stage(name: &str, plugin: &Path, extra: &str) -> String {
    format!(
        "[[stage]]\nname = \"{name}\"\nkind = \"map\"\nplugin = {}\n{extra}\n",
        toml_path(plugin)
    )
}

/// The one version of stage `stage` an output carries.
fn version_of<'a>(out: &'a Value, stage: &str) -> &'a str {
    let v = out["_versions"]
        .as_object()
        .unwrap_or_else(|| panic!("no `_versions` in {out}"));
    v[stage]
        .as_str()
        .unwrap_or_else(|| panic!("no version of `{stage}` in {out}"))
}

#[test]
fn a_million_events_streamed_through_swaps_each_run_by_exactly_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let tags = ["v1", "v2", "v3"];
    let bytes: Vec<Vec<u8>> = tags.iter().map(|t| version(t)).collect();
    let hashes: Vec<String> = bytes.iter().map(|b| short_hash(b)).collect();
    let live = dir.path().join("tag.wasm");
    std::fs::write(&live, &bytes[0]).unwrap();
    let m = manifest(
        dir.path(),
        &tag_stage("tag", &live, ""),
        "chunk_size = 1000\nworkers = 2\n",
    );
    // v1 -> v2 -> v3 -> v2, three times over, then back to v1.
    let phases = [0, 1, 2, 1, 2, 1, 2, 1, 0, 1];
    let total = 1_000_000u64;
    let per = total / phases.len() as u64;
    let mut w = Watched::start(&m, dir.path(), &[]);
    for (k, &v) in phases.iter().enumerate() {
        if k > 0 {
            put(&live, &bytes[v]);
            w.wait_log(&format!("now serving generation {k} "), 1);
        }
        let (from, to) = (k as u64 * per, (k as u64 + 1) * per);
        w.feed(&events(from..to));
        // Every event of the phase is out before the next swap, so each
        // phase's events must have run on the phase's version.
        w.wait_count(to as usize);
    }
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("rejected"), "{log}");
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut chunk_version: std::collections::HashMap<u64, String> = Default::default();
    let mut last_chunk = 0;
    let mut changes = Vec::new();
    let mut n = 0u64;
    for line in text.lines() {
        let out: Value = serde_json::from_str(line).unwrap();
        assert_eq!(out["id"], n, "every event exactly once, in input order");
        let versions = out["_versions"].as_object().unwrap();
        assert_eq!(versions.len(), 1, "one version per output: {out}");
        let ver = version_of(&out, "tag");
        let phase = phases[(n / per) as usize];
        assert_eq!(ver, hashes[phase], "event {n} ran on its phase's version");
        assert_eq!(
            out["tag"], tags[phase],
            "and that version's code ran it: {out}"
        );
        let chunk = out["chunk"].as_u64().unwrap();
        assert!(chunk >= last_chunk, "chunks in input order");
        last_chunk = chunk;
        let seen = chunk_version
            .entry(chunk)
            .or_insert_with(|| ver.to_string());
        assert_eq!(seen, ver, "chunk {chunk} ran on one version only");
        if changes.last().is_none_or(|(_, v): &(u64, String)| v != ver) {
            changes.push((chunk, ver.to_string()));
        }
        n += 1;
    }
    assert_eq!(n, total);
    let expected: Vec<&str> = phases.iter().map(|&p| hashes[p].as_str()).collect();
    let got: Vec<&str> = changes.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(got, expected, "versions changed exactly at the swaps");
}

#[test]
fn a_broken_plugin_never_replaces_the_running_one_and_a_fix_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = version("v1");
    let v2 = version("v2");
    let live = dir.path().join("tag.wasm");
    std::fs::write(&live, &v1).unwrap();
    let samples = write(dir.path(), "samples.jsonl", "{\"id\":1}\n{\"id\":2}\n");
    let m = manifest(
        dir.path(),
        &tag_stage("tag", &live, &format!("samples = {}", toml_path(&samples))),
        "",
    );
    let wrong_abi = std::fs::read(crate::util::fixture("wrong_abi.wat")).unwrap();
    let filter = std::fs::read(plugin("errors_only")).unwrap();
    let broken: [(&str, &[u8], &str); 5] = [
        (
            "not a wasm file",
            b"hello, not wasm\n",
            "not a valid WebAssembly module",
        ),
        ("bad ABI", &wrong_abi, "ABI version 9"),
        ("traps on samples", &version("tp"), "traps on every event"),
        ("wrong kind", &filter, "exports a `filter` stage"),
        (
            "half-written",
            &v2[..v2.len() / 2],
            "not a valid WebAssembly module",
        ),
    ];
    let mut w = Watched::start(&m, dir.path(), &[]);
    let mut sent = 0u64;
    for (i, (what, bytes, reason)) in broken.iter().enumerate() {
        let mark = w.log().len();
        if *what == "half-written" {
            // Written in place, as a slow writer would leave it.
            std::fs::write(&live, bytes).unwrap();
        } else {
            put(&live, bytes);
        }
        w.wait_log("change rejected", i + 1);
        // The reason, which may be on a later line of the message.
        w.wait_since(mark, reason);
        w.feed(&events(sent..sent + 10));
        sent += 10;
        for out in w.wait_outputs(sent as usize) {
            assert_eq!(version_of(&out, "tag"), short_hash(&v1), "{what}: {out}");
            assert_eq!(out["tag"], "v1");
        }
    }
    // Finishing the half-written file is the fix.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    f.write_all(&v2[v2.len() / 2..]).unwrap();
    drop(f);
    w.wait_log("now serving generation 1 ", 1);
    w.feed(&events(sent..sent + 10));
    let outs = w.wait_outputs(sent as usize + 10);
    for out in &outs[sent as usize..] {
        assert_eq!(version_of(out, "tag"), short_hash(&v2), "{out}");
        assert_eq!(out["tag"], "v2");
    }
    // A dead letter names the version that failed it.
    w.feed("{\"id\":\"not a number\"}\n");
    let dead_path = dir.path().join("hot.dead.jsonl");
    let deadline = Instant::now() + PATIENCE;
    while crate::util::read_jsonl(&dead_path).is_empty() {
        assert!(Instant::now() < deadline, "no dead letter:\n{}", w.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let dead = crate::util::read_jsonl(&dead_path);
    assert_eq!(dead[0]["versions"]["tag"], short_hash(&v2), "{}", dead[0]);
    assert_eq!(dead[0]["index"], sent + 10);
    let (code, log) = w.finish();
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("1 dead letters"), "{log}");
}

#[test]
fn an_invalid_manifest_edit_keeps_the_pipeline_and_a_valid_one_applies() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = version("v1");
    let live = dir.path().join("tag.wasm");
    std::fs::write(&live, &v1).unwrap();
    let stage =
        |label: &str| tag_stage("tag", &live, &format!("params = {{ label = \"{label}\" }}"));
    let m = manifest(dir.path(), &stage("a"), "");
    let mut w = Watched::start(&m, dir.path(), &[]);
    w.feed(&events(0..5));
    assert!(w.wait_outputs(5).iter().all(|o| o["label"] == "a"));

    // A misspelt field: refused with its position; outputs keep label "a".
    let bad = format!(
        "[pipeline]\nname = \"hot\"\n\n{}\n[runtime]\nlineage = true\nworkerz = 2\n",
        stage("b")
    );
    let mark = w.log().len();
    put(&m, bad.as_bytes());
    w.wait_log("manifest rejected", 1);
    let line = bad.lines().position(|l| l.starts_with("workerz")).unwrap() + 1;
    // The error names the file, line and column of the misspelt field.
    w.wait_since(mark, &format!("hot.toml:{line}:1"));
    w.feed(&events(5..10));
    assert!(w.wait_outputs(10).iter().all(|o| o["label"] == "a"));

    // A plugin that does not exist: refused too.
    let mark = w.log().len();
    manifest(
        dir.path(),
        &tag_stage("tag", &dir.path().join("nope.wasm"), ""),
        "",
    );
    w.wait_log("manifest rejected", 2);
    w.wait_since(mark, "does not exist");

    // A valid edit: new params, a new limit and a second stage, whose
    // plugin is not usable yet: the edit waits, the pipeline goes on.
    let live2 = dir.path().join("tag2.wasm");
    std::fs::write(&live2, b"not yet").unwrap();
    let second = tag_stage(
        "tag2",
        &live2,
        "params = { label = \"second\" }\nlimits = { memory = \"32MiB\" }",
    );
    manifest(dir.path(), &format!("{}{second}", stage("b")), "");
    w.wait_log("change rejected", 1);
    w.feed(&events(10..12));
    assert!(w.wait_outputs(12).iter().all(|o| o["label"] == "a"));
    // Once the plugin is there, the waiting edit applies as a whole.
    put(&live2, &v1);
    w.wait_log("now serving generation 1 ", 1);
    assert!(w.log().contains("stage `tag2`"), "{}", w.log());
    w.feed(&events(12..15));
    let outs = w.wait_outputs(15);
    for o in &outs[12..] {
        assert_eq!(o["label"], "second", "{o}");
        let v = o["_versions"].as_object().unwrap();
        assert_eq!(v.len(), 2, "both stages' versions: {o}");
        assert_eq!(v["tag"], v["tag2"]);
    }
    // Removing the second stage again.
    manifest(dir.path(), &stage("c"), "");
    w.wait_log("now serving generation 2 ", 1);
    w.feed(&events(15..20));
    let outs = w.wait_outputs(20);
    for o in &outs[15..] {
        assert_eq!(o["label"], "c", "{o}");
        assert_eq!(o["_versions"].as_object().unwrap().len(), 1, "{o}");
    }
    let (code, log) = w.finish();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("20 outputs"), "{log}");
}

#[test]
fn a_growing_file_is_followed_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("tag.wasm");
    std::fs::write(&live, version("v1")).unwrap();
    let m = manifest(dir.path(), &tag_stage("tag", &live, ""), "");
    let input = write(dir.path(), "in.jsonl", &events(0..100));
    let w = Watched::start(&m, dir.path(), &["-i", input.to_str().unwrap()]);
    w.wait_outputs(100);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    f.write_all(events(100..250).as_bytes()).unwrap();
    // A line still being written when the pipeline is stopped.
    f.write_all(b"{\"id\":250").unwrap();
    w.wait_outputs(250);
    f.write_all(b"}\n").unwrap();
    let outs = w.wait_outputs(251);
    assert_eq!(outs.len(), 251);
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o["id"], i as u64);
    }
    // SIGTERM: in-flight chunks finish, outputs are flushed, exit 0.
    // SAFETY: `kill` on our own child's pid.
    let rc = unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut w = w;
    w.stdin.take();
    let status = w.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert_eq!(crate::util::read_jsonl(&w.out).len(), 251);
}
