//! The console's Deployments page in a real headless Chromium against a
//! real `wasmpipe serve` with read and write tokens: a shadow of a new
//! version of a map stage, its comparison as the page shows it (checked
//! against what the test knows of the events it posted and against the
//! API), the over-budget banner, Abort; then a canary deployed with the
//! page's form, its chunk counts, Promote, and the jobs after it. A token
//! that cannot write sees no Promote, Abort or deploy form.

use crate::browser::Browser;
use crate::util::http::{Resp, Server, all_events, request, wait_job};
use crate::util::{plugin, short_version, toml_path, write};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const READ: &str = "deploy-viewer-1";
const WRITE: &str = "deploy-operator-1";
/// Events per chunk: a job of 16 events is 4 chunks.
const CHUNK: usize = 4;

/// One map stage `s` (`faulty`: passes `{"n"}` through, dead-letters
/// `n % 1000 == 13`) with an error budget the first shadow jobs stay
/// within and a job of only unlucky events goes over.
fn manifest(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "deploy.toml",
        &format!(
            r#"[pipeline]
name = "nums"

[[stage]]
name = "s"
kind = "map"
plugin = {}
budget = {{ max_dead_letter_rate = 0.3, chunks = 2, min_events = 8 }}

[serve]
database = "deploy.db"
chunk_size = {CHUNK}

[[serve.token]]
name = "viewer"
token = "{READ}"
permissions = ["read"]

[[serve.token]]
name = "operator"
token = "{WRITE}"
permissions = ["read", "write"]
"#,
            toml_path(&plugin("faulty"))
        ),
    )
}

fn call(s: &Server, token: &str, method: &str, path: &str, ct: &str, body: Option<&[u8]>) -> Resp {
    let auth = format!("Bearer {token}");
    request(
        method,
        &s.url(path),
        &[("authorization", &auth), ("content-type", ct)],
        body,
    )
    .unwrap()
}

/// A GET with the read token that must answer 200.
fn get_json(s: &Server, path: &str) -> Value {
    let r = call(s, READ, "GET", path, "application/json", None);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.json()
}

/// Deploys `plugin("double")` as a version of `s` through the API.
fn deploy(s: &Server, query: &str) -> Value {
    let module = std::fs::read(plugin("double")).unwrap();
    let r = call(
        s,
        WRITE,
        "POST",
        &format!("/v1/deployments?{query}"),
        "application/wasm",
        Some(&module),
    );
    assert_eq!(r.status, 201, "POST /v1/deployments?{query}: {}", r.body);
    r.json()
}

/// Posts `{"n"}` events as a job and waits until it is done.
fn post_job(s: &Server, ns: &[i64]) -> i64 {
    let body: String = ns
        .iter()
        .map(|n| format!("{}\n", json!({ "n": n })))
        .collect();
    let r = call(
        s,
        WRITE,
        "POST",
        "/v1/pipelines/nums/jobs",
        "application/x-ndjson",
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json()["job"].as_i64().unwrap();
    wait_job(s, job, &[("authorization", &format!("Bearer {READ}"))]);
    job
}

/// Polls deployment `id` until `ok` holds of it; the figures of a chunk
/// are counted just after it commits, and a shadow's after it ran again.
fn wait_deployment(s: &Server, id: i64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let d = get_json(s, &format!("/v1/deployments/{id}"));
        if ok(&d) {
            return d;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "deployment {id}: waited 30 s for {what}; it is now:\n{d:#}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An attribute of the first element matching `css`.
fn attr(b: &Browser, css: &str, name: &str) -> Option<String> {
    b.exec(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        json!([css, name]),
    )
    .as_str()
    .map(str::to_string)
}

/// Waits until attribute `name` of the page's `css` is `want`.
fn wait_attr(b: &Browser, css: &str, name: &str, want: &str) {
    b.wait(&format!("{css} to have {name}={want:?}"), |b| {
        (attr(b, css, name).as_deref() == Some(want)).then_some(())
    });
}

/// What `confirm()` answers from now on; the question asked is kept in
/// `window.asked`.
fn answer_confirm(b: &Browser, yes: bool) {
    b.exec(
        "const yes = arguments[0]; window.asked = null; window.confirm = (q) => { window.asked = q; return yes; };",
        json!([yes]),
    );
}

fn asked(b: &Browser) -> Option<String> {
    b.exec("return window.asked;", json!([]))
        .as_str()
        .map(str::to_string)
}

/// With `WASMPIPE_SCREENSHOT=1`, saves the whole page as `name`.png in
/// the tests' scratch folder (to look at; nothing is checked).
fn snap(b: &Browser, name: &str) {
    if std::env::var("WASMPIPE_SCREENSHOT").as_deref() != Ok("1") {
        return;
    }
    let height = b.exec("return document.documentElement.scrollHeight;", json!([]));
    b.set_viewport(1280, height.as_u64().unwrap().clamp(900, 2400));
    let to = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    std::fs::write(&to, b.screenshot()).unwrap();
    b.set_viewport(1280, 900);
    eprintln!("saved {}", to.display());
}

fn sign_in(b: &Browser, token: &str) {
    b.wait_visible("#login-form");
    b.type_into("#login-token", token);
    b.click("#login-submit");
}

#[test]
fn deployments_page_compares_a_shadow_aborts_it_and_promotes_a_canary() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path()), &[]);
    let (faulty, double) = (
        short_version(&plugin("faulty")),
        short_version(&plugin("double")),
    );
    let d = get_json(&s, "/v1/deployments");
    assert_eq!(d["live"]["s"], faulty.as_str(), "{d}");
    assert!(d["active"].is_null(), "{d}");

    // A shadow of `double`: every chunk runs again through it, compared.
    let shadow = deploy(&s, "stage=s&mode=shadow");
    let sid = shadow["id"].as_i64().unwrap();
    assert_eq!(
        (&shadow["mode"], &shadow["state"], &shadow["created_by"]),
        (&json!("shadow"), &json!("active"), &json!("operator")),
        "{shadow}"
    );
    assert_eq!(shadow["short_version"], double.as_str());
    assert_eq!(shadow["short_base"], faulty.as_str());

    // Jobs of at most four chunks, each compared before the next is
    // posted, so that the shadow's queue never fills and no chunk is
    // skipped. The last one is all unlucky events: over the budget.
    let jobs: Vec<Vec<i64>> = vec![
        (0..16).collect(),
        (1000..1016).collect(),
        vec![13, 1013, 2013, 3013, 4013, 5013, 6013, 7013],
    ];
    let (mut chunks, mut events) = (0u64, Vec::new());
    for ns in &jobs {
        post_job(&s, ns);
        chunks += ns.len().div_ceil(CHUNK) as u64;
        events.extend_from_slice(ns);
        wait_deployment(&s, sid, &format!("{chunks} chunks compared"), |d| {
            let t = &d["tally"];
            let sh = &t["shadow"];
            let seen = ["chunks", "skipped", "failed"]
                .iter()
                .map(|k| sh[k].as_u64().unwrap_or(0))
                .sum::<u64>();
            t["live"]["chunks"] == chunks && seen == chunks
        });
    }
    // Doubling changes every event but a zero; the unlucky ones that
    // `faulty` dead-letters pass with `double`: fixed.
    let total = events.len() as u64;
    let changed = events.iter().filter(|&&n| n != 0).count() as u64;
    let fixed = events.iter().filter(|&&n| n % 1000 == 13).count() as u64;
    let d = get_json(&s, &format!("/v1/deployments/{sid}"));
    let sh = &d["tally"]["shadow"];
    assert_eq!(sh["skipped"], 0, "{d:#}");
    assert_eq!(sh["failed"], 0, "{d:#}");
    assert_eq!(sh["events"], total, "{d:#}");
    assert_eq!(sh["changed"], changed, "{d:#}");
    assert_eq!(sh["fixed_dead_letters"], fixed, "{d:#}");
    assert_eq!(sh["new_dead_letters"], 0, "{d:#}");
    assert_eq!(d["tally"]["live"]["dead_letters"], fixed, "{d:#}");
    assert_eq!(d["tally"]["candidate"]["dead_letters"], 0, "{d:#}");
    let examples = sh["examples"].as_array().unwrap().len();
    assert!(examples > 0, "{d:#}");
    let over = get_json(&s, "/v1/deployments")["over_budget"].clone();
    assert_eq!(over[0]["stage"], "s", "{over}");
    assert_eq!(over[0]["version"], faulty.as_str(), "{over}");

    let b = Browser::start();

    // The read token sees the comparison and the banner, but nothing to
    // act with.
    b.goto(&s.url("/#/deployments"));
    sign_in(&b, READ);
    b.wait_visible("#deploy-active");
    wait_attr(&b, "#deploy-id", "data-id", &sid.to_string());
    wait_attr(&b, "#deploy-changed", "data-count", &changed.to_string());
    b.wait_text(
        "#deploy-summary",
        &format!("{changed} of {total} events changed"),
    );
    let banner = b.wait_text("#over-budget", "over its budget");
    assert!(
        banner.contains(&format!("version {faulty} of stage `s`")),
        "{banner}"
    );
    assert_eq!(
        attr(&b, "#deploy-live-table [data-stage=s]", "data-version").as_deref(),
        Some(faulty.as_str())
    );
    assert!(
        b.find("#deploy-promote").is_none(),
        "a read token cannot promote"
    );
    assert!(
        b.find("#deploy-abort").is_none(),
        "a read token cannot abort"
    );
    assert!(!b.visible("#deploy-form"), "a read token cannot deploy");
    // The banner is above every view, not only this one.
    b.click("#nav-jobs");
    b.wait_visible("#jobs-table");
    b.wait_text("#over-budget", "over its budget");
    b.click("#nav-deployments");

    // The write token: the same figures, the examples, the chart, and the
    // buttons.
    b.click("#logout");
    sign_in(&b, WRITE);
    b.wait_visible("#deploy-abort");
    b.wait_visible("#deploy-promote");
    wait_attr(&b, "#deploy-changed", "data-count", &changed.to_string());
    assert_eq!(
        attr(&b, "#deploy-fixed", "data-count"),
        Some(fixed.to_string())
    );
    assert_eq!(
        attr(&b, "#deploy-new-dead", "data-count").as_deref(),
        Some("0")
    );
    assert_eq!(
        attr(&b, "#deploy-skipped", "data-count").as_deref(),
        Some("0")
    );
    for (side, dead) in [("live", fixed), ("candidate", 0)] {
        assert_eq!(
            attr(&b, &format!("#deploy-{side}-events"), "data-value"),
            Some(total.to_string()),
            "{side}"
        );
        assert_eq!(
            attr(&b, &format!("#deploy-{side}-dead"), "data-value"),
            Some(dead.to_string()),
            "{side}"
        );
    }
    assert_eq!(
        b.text("#deploy-candidate").as_deref(),
        Some(double.as_str())
    );
    assert_eq!(b.text("#deploy-base").as_deref(), Some(faulty.as_str()));
    assert_eq!(b.text("#deploy-created-by").as_deref(), Some("operator"));
    assert_eq!(b.texts("[data-test=deploy-example]").len(), examples);
    let fixed_example = b.wait_text(
        "[data-test=deploy-example][data-change=fixed]",
        "unlucky 13",
    );
    assert!(
        fixed_example.contains("{\"n\":26}") && fixed_example.contains("job "),
        "the live dead letter and the candidate's output, with its job: {fixed_example}"
    );
    let points = |side: &str| {
        b.exec(
            "return document.querySelectorAll(`#deploy-chart svg [data-test=chart-point][data-side=${arguments[0]}]`).length;",
            json!([side]),
        )
        .as_u64()
        .unwrap()
    };
    assert!(
        points("live") > 0 && points("candidate") > 0,
        "the chart has points of both sides"
    );
    // The live version went over its budget with the unlucky job: its
    // dead-letter rate peaks at 100 %.
    let peak = b.exec(
        "return Math.max(...[...document.querySelectorAll('#deploy-chart [data-side=live]')].map((p) => Number(p.dataset.rate)));",
        json!([]),
    );
    assert_eq!(peak.as_f64(), Some(1.0), "{peak}");

    snap(&b, "deployments-shadow");

    // Abort, answered "cancel": nothing happens.
    answer_confirm(&b, false);
    b.click("#deploy-abort");
    let q = asked(&b).expect("Abort asks first");
    assert!(q.contains(&format!("Abort deployment {sid}")), "{q}");
    assert_eq!(
        get_json(&s, &format!("/v1/deployments/{sid}"))["state"],
        "active"
    );
    // Answered "OK": aborted, by the write token's name.
    answer_confirm(&b, true);
    b.click("#deploy-abort");
    b.wait_text("#deploy-action-notice", "aborted by operator");
    b.wait_visible("#deploy-none");
    let row = format!("#deploy-history [data-test=deploy-row][data-id='{sid}']");
    wait_attr(&b, &row, "data-state", "aborted");
    let cells = b.text(&row).unwrap();
    assert!(cells.contains("shadow"), "{cells}");
    assert_eq!(
        b.text(&format!("{row} [data-test=deploy-ended-by]"))
            .as_deref(),
        Some("operator")
    );
    assert_eq!(
        b.text(&format!("{row} [data-test=deploy-by]")).as_deref(),
        Some("operator")
    );
    let d = get_json(&s, &format!("/v1/deployments/{sid}"));
    assert_eq!(
        (&d["state"], &d["ended_by"]),
        (&json!("aborted"), &json!("operator")),
        "{d}"
    );
    assert_eq!(
        get_json(&s, "/v1/deployments")["live"]["s"],
        faulty.as_str()
    );

    // A canary at 50 %, deployed with the page's form.
    b.wait("the deploy form to be enabled", |b| {
        (b.exec(
            "const e = document.querySelector('#deploy-submit'); return !!e && !e.disabled;",
            json!([]),
        ) == true)
            .then_some(())
    });
    b.exec(
        "const m = document.querySelector('#deploy-mode-select'); m.value = 'canary'; m.dispatchEvent(new Event('change'));",
        json!([]),
    );
    b.type_into("#deploy-percent", "50");
    b.type_into("#deploy-file", plugin("double").to_str().unwrap());
    b.click("#deploy-submit");
    b.wait_text("#deploy-action-notice", "canary on 50 %");
    let active = get_json(&s, "/v1/deployments")["active"].clone();
    let cid = active["id"].as_i64().unwrap();
    assert_eq!(
        (&active["mode"], &active["percent"], &active["created_by"]),
        (&json!("canary"), &json!(50), &json!("operator")),
        "{active}"
    );
    assert_eq!(active["short_version"], double.as_str());
    wait_attr(&b, "#deploy-id", "data-id", &cid.to_string());
    wait_attr(&b, "#deploy-mode", "data-mode", "canary");

    // Odd numbers, none of them unlucky: a chunk `faulty` ran stores them
    // as they are, one the candidate ran stores them doubled (even).
    let mut canary_jobs = Vec::new();
    let mut posted = 0u64;
    let d = loop {
        let base = 10_000 * (canary_jobs.len() as i64 + 1);
        let ns: Vec<i64> = (0..20)
            .map(|i| base + 2 * i + 1)
            .filter(|n| n % 1000 != 13)
            .collect();
        canary_jobs.push(post_job(&s, &ns));
        posted += ns.len() as u64;
        let d = wait_deployment(&s, cid, &format!("{posted} events counted"), |d| {
            let t = &d["tally"];
            t["live"]["events"].as_u64().unwrap_or(0)
                + t["candidate"]["events"].as_u64().unwrap_or(0)
                == posted
        });
        let t = &d["tally"];
        if t["candidate"]["chunks"].as_u64() > Some(0) && t["live"]["chunks"].as_u64() > Some(0) {
            break d;
        }
        assert!(canary_jobs.len() < 10, "no chunk went to one side: {d:#}");
    };
    let t = &d["tally"];
    let read_auth = format!("Bearer {READ}");
    let (mut even, mut odd) = (0u64, 0u64);
    for job in &canary_jobs {
        for e in all_events(&s, &format!("job={job}"), &[("authorization", &read_auth)]) {
            if e["event"]["n"].as_i64().unwrap() % 2 == 0 {
                even += 1;
            } else {
                odd += 1;
            }
        }
    }
    assert_eq!(
        (even, odd),
        (
            t["candidate"]["events"].as_u64().unwrap(),
            t["live"]["events"].as_u64().unwrap()
        ),
        "the canary's chunks are stored with its outputs: {t:#}"
    );
    let cand_chunks = t["candidate"]["chunks"].to_string();
    wait_attr(&b, "#deploy-candidate-chunks", "data-value", &cand_chunks);
    assert_eq!(
        attr(&b, "#deploy-live-chunks", "data-value"),
        Some(t["live"]["chunks"].to_string())
    );
    assert!(
        b.find("[data-test=deploy-example]").is_none(),
        "a canary is not compared event by event"
    );
    snap(&b, "deployments-canary");

    // Promote: `double` is live, here at once.
    answer_confirm(&b, true);
    b.click("#deploy-promote");
    b.wait_text("#deploy-action-notice", "promoted by operator");
    assert!(
        asked(&b)
            .unwrap()
            .contains(&format!("Promote deployment {cid}")),
        "Promote asks first"
    );
    let d = get_json(&s, "/v1/deployments");
    assert_eq!(d["live"]["s"], double.as_str(), "{d}");
    assert!(d["active"].is_null(), "{d}");
    assert_eq!(
        (
            &d["deployments"][0]["id"],
            &d["deployments"][0]["state"],
            &d["deployments"][0]["ended_by"]
        ),
        (&json!(cid), &json!("promoted"), &json!("operator")),
        "{d}"
    );
    // Every event of a job posted now is doubled, the unlucky one too.
    let ns = [1, 13, 21, 1013, 50];
    let job = post_job(&s, &ns);
    let stored = wait_job(&s, job, &[("authorization", &read_auth)]);
    assert_eq!(stored["dead_letters"], 0, "{stored}");
    let mut got: Vec<i64> = all_events(&s, &format!("job={job}"), &[("authorization", &read_auth)])
        .iter()
        .map(|e| e["event"]["n"].as_i64().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, [2, 26, 42, 100, 2026]);

    // The page: `double` live, the history, and no more banner (the
    // version over its budget is no longer live).
    wait_attr(
        &b,
        "#deploy-live-table [data-stage=s]",
        "data-version",
        &double,
    );
    let row = format!("#deploy-history [data-test=deploy-row][data-id='{cid}']");
    wait_attr(&b, &row, "data-state", "promoted");
    assert!(b.text(&row).unwrap().contains("50 %"));
    assert_eq!(
        attr(
            &b,
            &format!("#deploy-history [data-test=deploy-row][data-id='{sid}']"),
            "data-state"
        )
        .as_deref(),
        Some("aborted")
    );
    b.wait("the over-budget banner to go", |b| {
        (!b.visible("#over-budget")).then_some(())
    });
    snap(&b, "deployments-promoted");

    // Nothing went wrong in the page. (Refused requests, the 401 before
    // signing in and the write probes' 403 and 404, are logged by Chromium
    // itself and expected.)
    let errors: Vec<String> = b
        .console_log()
        .into_iter()
        .filter(|l| l.contains("SEVERE") && !l.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "browser errors:\n{}", errors.join("\n"));
    drop(b);
    assert_eq!(s.stop(), Some(0));
    eprintln!("deploy console test took {:?}", started.elapsed());
}
