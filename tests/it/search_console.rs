//! The console's query views in a real headless Chromium against a real
//! `wasmpipe serve`: the Events page (search, quick and zoomed time ranges,
//! histogram total, newest-first paging, level colours, the fields panel)
//! and the SQL page (a count, a chart, a refused write, a bad statement),
//! each checked against what the API itself answers.

use crate::browser::Browser;
use crate::util::http::{Resp, Server, request, wait_job};
use crate::util::{plugin, toml_path, write};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

const READ: &str = "search-viewer-1";
const WRITE: &str = "search-operator-1";
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

fn manifest(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "search.toml",
        &format!(
            r#"[pipeline]
name = "logs"

[[stage]]
name = "enrich"
kind = "map"
plugin = {}
params = {{ region = "eu-west-1" }}

[serve]
database = "search.db"
time = "/ts"

[[serve.token]]
name = "viewer"
token = "{READ}"
permissions = ["read"]

[[serve.token]]
name = "operator"
token = "{WRITE}"
permissions = ["read", "write"]
"#,
            toml_path(&plugin("enrich"))
        ),
    )
}

/// A call to the API with the write token (which also reads).
fn api(s: &Server, method: &str, path: &str, ct: &str, body: Option<&str>) -> Resp {
    let token = format!("Bearer {WRITE}");
    request(
        method,
        &s.url(path),
        &[("authorization", &token), ("content-type", ct)],
        body.map(str::as_bytes),
    )
    .unwrap()
}

fn get_json(s: &Server, path: &str) -> Value {
    let r = api(s, "GET", path, "application/json", None);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.json()
}

/// The histogram's `total` for these (unencoded) query parameters.
fn api_total(s: &Server, params: &[(&str, &str)]) -> i64 {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let h = get_json(s, &format!("/v1/events/histogram?{}", query.join("&")));
    h["total"]
        .as_i64()
        .unwrap_or_else(|| panic!("no total: {h}"))
}

/// Percent-encodes a query parameter's value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Milliseconds since 1970 as RFC 3339 (UTC, to the millisecond).
fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn posts(s: &Server, events: &[Value]) -> i64 {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = api(
        s,
        "POST",
        "/v1/pipelines/logs/jobs",
        "application/x-ndjson",
        Some(&body),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json()["job"].as_i64().unwrap();
    wait_job(s, job, &[("authorization", &format!("Bearer {READ}"))]);
    job
}

/// The page's match count (`data-test=events-total`), once it is a number.
fn page_total(b: &Browser) -> Option<i64> {
    b.text("[data-test=events-total]")?
        .replace(',', "")
        .trim()
        .parse()
        .ok()
}

/// Waits for the Events page to show `total` matches and `rows` event rows.
fn wait_events(b: &Browser, total: i64, rows: usize) {
    b.wait(&format!("{total} matches and {rows} event rows"), |b| {
        (page_total(b) == Some(total) && b.texts("[data-test=event-row]").len() == rows)
            .then_some(())
    });
}

/// One parameter of the page's hash (`#/events?q=...`), decoded.
fn hash_param(b: &Browser, name: &str) -> Option<String> {
    b.exec(
        "return new URLSearchParams(location.hash.split('?')[1] || '').get(arguments[0]);",
        json!([name]),
    )
    .as_str()
    .map(str::to_string)
}

/// Reloads the page and waits for the new one's Events view.
fn reload(b: &Browser) {
    b.exec(
        "document.documentElement.dataset.stale = '1'; setTimeout(() => location.reload(), 0);",
        json!([]),
    );
    b.wait("the page to reload", |b| {
        let fresh = b.exec(
            "return document.documentElement.dataset.stale === undefined && !!document.querySelector('#events-q');",
            json!([]),
        );
        (fresh == true).then_some(())
    });
}

/// The times (ms) of the rows shown, in page order.
fn row_times(b: &Browser) -> Vec<i64> {
    let v = b.exec(
        "return [...document.querySelectorAll('[data-test=event-row] .event-meta time')]
           .map((t) => Date.parse(t.getAttribute('datetime')));",
        json!([]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().expect("a readable time on every row"))
        .collect()
}

#[test]
fn events_page_searches_narrows_zooms_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path()), &[]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // Ten events from three days ago (half of them about a checkout), then
    // sixty from the last seven minutes (every fifth one about a checkout),
    // each job oldest first, so that arrival and event time agree.
    let old: Vec<Value> = (0..10)
        .map(|j| {
            json!({
                "ts": rfc3339(now - 3 * DAY - (10 - j) * MINUTE),
                "level": "info",
                "service": "auth",
                "msg": if j % 2 == 0 { "checkout retried" } else { "nightly batch" },
            })
        })
        .collect();
    let levels = ["info", "warn", "debug", "error"];
    let services = ["api", "auth", "billing"];
    let recent: Vec<Value> = (0..60i64)
        .rev()
        .map(|i| {
            json!({
                "ts": rfc3339(now - 30_000 - i * 7_000),
                "level": levels[i as usize % 4],
                "service": services[i as usize % 3],
                "msg": if i % 5 == 0 { "checkout failed" } else { "request served" },
                "i": i,
            })
        })
        .collect();
    posts(&s, &old);
    posts(&s, &recent);

    let all = api_total(&s, &[]);
    assert_eq!(all, 70);
    let checkout = api_total(&s, &[("q", "checkout")]);
    assert_eq!(checkout, 12 + 5, "the API's own count of the word");

    let b = Browser::start();
    b.goto(&s.url("/"));
    b.type_into("#login-token", READ);
    b.click("#login-submit");
    b.wait_visible("#nav-events");
    b.click("#nav-events");

    // All time, no search: every event, newest first, fifty at a time.
    wait_events(&b, all, 50);
    assert!(
        b.visible("[data-test=range-all].active"),
        "all time by default"
    );
    b.click("#events-more");
    wait_events(&b, all, 70);
    assert!(!b.visible("#events-more"), "nothing more to load");
    let times = row_times(&b);
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert!(
        times[0] > now - 60_000 && times[69] < now - 3 * DAY,
        "the rows show the events' own times: {times:?}"
    );

    // A word: the page's total is the API's, and less than all events.
    b.type_into("#events-q", "checkout");
    b.click("#events-search");
    wait_events(&b, checkout, 17);
    assert!(checkout < all);
    assert_eq!(hash_param(&b, "q").as_deref(), Some("checkout"));
    for row in b.texts("[data-test=event-row]") {
        assert!(row.contains("checkout"), "{row}");
    }
    assert_eq!(
        b.text("#events-info").unwrap(),
        "Showing 17 of 17 matches, newest first."
    );

    // The last hour: the events of three days ago go.
    b.click("[data-test=range-1h]");
    wait_events(&b, 12, 12);
    assert_eq!(hash_param(&b, "since").as_deref(), Some("now-1h"));
    assert_eq!(hash_param(&b, "q").as_deref(), Some("checkout"), "kept");
    let hour_ago = (now - 60 * MINUTE).to_string();
    assert_eq!(
        api_total(&s, &[("q", "checkout"), ("since", &hour_ago)]),
        12
    );
    assert!(b.visible("[data-test=range-1h].active"));
    // A reload shows the same.
    reload(&b);
    wait_events(&b, 12, 12);
    assert_eq!(
        b.exec(
            "return document.querySelector('#events-q').value;",
            json!([])
        ),
        "checkout"
    );

    // Level colours: the three error rows red, the warn rows amber, and
    // the three levels look different.
    let errors = b.texts("[data-test=event-row].level-error");
    assert_eq!(errors.len(), 3, "{errors:?}");
    for row in &errors {
        assert!(row.contains("\"level\":\"error\""), "{row}");
    }
    let warns = b.texts("[data-test=event-row].level-warn");
    assert!(
        !warns.is_empty() && warns.iter().all(|r| r.contains("\"level\":\"warn\"")),
        "{warns:?}"
    );
    let colour = |css: &str| {
        b.exec(
            "return getComputedStyle(document.querySelector(arguments[0])).borderLeftColor;",
            json!([css]),
        )
    };
    let (red, amber, info) = (
        colour("[data-test=event-row].level-error"),
        colour("[data-test=event-row].level-warn"),
        colour("[data-test=event-row].level-info"),
    );
    assert!(
        red != amber && red != info && amber != info,
        "{red} {amber} {info}"
    );

    // The fields panel counts the loaded events' values; a click on one
    // searches it too.
    let auth = "[data-test=field-value][data-field=service][data-value=auth]";
    b.wait_visible(auth);
    assert!(
        b.text(auth).unwrap().trim_end().ends_with('4'),
        "{:?}",
        b.text(auth)
    );
    let levels_shown = b.texts("[data-test=field-value][data-field=level]");
    assert_eq!(levels_shown.len(), 4, "{levels_shown:?}");
    b.click(auth);
    b.wait("the search to gain service:auth", |b| {
        (hash_param(b, "q").as_deref() == Some("checkout service:auth")).then_some(())
    });
    let narrowed = api_total(&s, &[("q", "checkout service:auth"), ("since", &hour_ago)]);
    assert_eq!(narrowed, 4);
    wait_events(&b, narrowed, 4);
    for row in b.texts("[data-test=event-row]") {
        assert!(row.contains("\"service\":\"auth\""), "{row}");
    }
    assert_eq!(hash_param(&b, "since").as_deref(), Some("now-1h"), "kept");

    // All time again, then a click on the histogram's first bar (three
    // days ago): the range becomes that bar's, and so does the total.
    b.type_into("#events-q", "checkout");
    b.click("#events-search");
    wait_events(&b, 12, 12);
    assert_eq!(hash_param(&b, "q").as_deref(), Some("checkout"));
    b.click("[data-test=range-all]");
    wait_events(&b, checkout, 17);
    let bar = b.exec(
        "const bars = [...document.querySelectorAll('[data-test=histogram-bar]')];
         const b = bars.find((b) => Number(b.dataset.count) > 0);
         return [bars.length, b.dataset.start, b.dataset.count,
                 bars.reduce((n, b) => n + Number(b.dataset.count), 0)];",
        json!([]),
    );
    assert!(bar[0].as_u64().unwrap() >= 10, "{bar}");
    assert_eq!(
        bar[3].as_i64(),
        Some(checkout),
        "the bars add up to the total"
    );
    let (start, count): (String, i64) = (
        bar[1].as_str().unwrap().into(),
        bar[2].as_str().unwrap().parse().unwrap(),
    );
    assert!(count > 0 && count <= 5, "an old bucket: {bar}");
    b.click(&format!("[data-test=histogram-bar][data-start='{start}']"));
    b.wait("the range to zoom to the bar", |b| {
        hash_param(b, "until").filter(|_| hash_param(b, "since").is_some())
    });
    let since = hash_param(&b, "since").unwrap();
    let until = hash_param(&b, "until").unwrap();
    assert!(b.visible("#events-custom.active"), "a custom range now");
    assert_eq!(
        api_total(
            &s,
            &[("q", "checkout"), ("since", &since), ("until", &until)]
        ),
        count
    );
    wait_events(&b, count, count as usize);
    for row in b.texts("[data-test=event-row]") {
        assert!(row.contains("checkout retried"), "only old events: {row}");
    }

    // A range in the future: nothing.
    b.goto(&s.url(&format!(
        "/#/events?q=checkout&since={}&until={}",
        now + DAY,
        now + 2 * DAY
    )));
    wait_events(&b, 0, 0);
    b.wait_text("#events-histogram", "No matches");
    b.wait_text("#events-info", "No stored event matches.");

    let errors: Vec<String> = b
        .console_log()
        .into_iter()
        .filter(|l| l.contains("SEVERE") && !l.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "browser errors:\n{}", errors.join("\n"));
    drop(b);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn sql_page_runs_queries_charts_and_shows_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path()), &[]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Events over the last five minutes, so that a per-minute query has
    // several rows to chart.
    let events: Vec<Value> = (0..25i64)
        .rev()
        .map(|i| {
            json!({
                "ts": rfc3339(now - 10_000 - i * 12_000),
                "level": if i % 6 == 0 { "error" } else { "info" },
                "service": "api",
                "msg": "request served",
            })
        })
        .collect();
    posts(&s, &events);
    // A dead letter too: the enrich stage refuses an unknown level.
    posts(
        &s,
        &[json!({"ts": rfc3339(now), "level": "fatal", "msg": "boom"})],
    );

    // With the token the page uses, which only reads.
    let query = |sql: &str| {
        request(
            "POST",
            &s.url("/v1/query"),
            &[
                ("authorization", &format!("Bearer {READ}")),
                ("content-type", "application/json"),
            ],
            Some(json!({"sql": sql}).to_string().as_bytes()),
        )
        .unwrap()
    };
    let count = query("SELECT count(*) AS n FROM events");
    assert_eq!(count.status, 200, "{}", count.body);
    assert_eq!(count.json()["rows"], json!([[25]]), "{}", count.body);

    let b = Browser::start();
    b.goto(&s.url("/"));
    b.type_into("#login-token", READ);
    b.click("#login-submit");
    b.click("#nav-sql");
    b.wait_visible("[data-test=sql-input]");
    assert!(b.url().ends_with("#/sql"), "{}", b.url());

    // A count: a one-row table with the column's name, and the row count.
    b.type_into("[data-test=sql-input]", "SELECT count(*) AS n FROM events");
    b.click("[data-test=sql-run]");
    b.wait_text("[data-test=sql-table] tbody", "25");
    assert_eq!(
        b.exec(
            "return [...document.querySelectorAll('[data-test=sql-table] th')].map((e) => e.textContent);",
            json!([])
        ),
        json!(["n"])
    );
    assert_eq!(b.texts("[data-test=sql-table] tbody td"), ["25"]);
    let meta = b.text("[data-test=sql-meta]").unwrap();
    assert!(
        meta.starts_with("1 row ·") && meta.ends_with(" ms"),
        "{meta}"
    );
    assert!(!b.visible("[data-test=sql-chart]"), "nothing to chart");
    // The query is in the address: opening it again runs it again.
    let link = b.url();
    assert!(link.contains("#/sql?sql=SELECT"), "{link}");
    b.goto(&s.url("/#/"));
    b.goto(&link);
    b.wait_text("[data-test=sql-table] tbody", "25");

    // A write: refused, the events stay, and the page says so.
    b.type_into("[data-test=sql-input]", "DELETE FROM events");
    b.click("[data-test=sql-run]");
    let refused = query("DELETE FROM events");
    assert_eq!(refused.status, 403, "{}", refused.body);
    let shown = b.wait_text("[data-test=sql-error]", &refused.error());
    assert!(
        shown.contains("read-only") && shown.contains("403"),
        "{shown}"
    );
    assert!(!b.visible("[data-test=sql-table]"), "no stale table");
    assert_eq!(
        query("SELECT count(*) AS n FROM events").json()["rows"],
        json!([[25]])
    );

    // A bad statement: the server's own message.
    b.type_into("[data-test=sql-input]", "SELEC 1");
    b.click("[data-test=sql-run]");
    let bad = query("SELEC 1");
    assert_eq!(bad.status, 400, "{}", bad.body);
    let shown = b.wait_text("[data-test=sql-error]", &bad.error());
    assert!(shown.contains("400"), "{shown}");

    // An example with a time column: a table and a chart of it.
    let per_minute = query(
        "SELECT time / 60000 * 60000 AS minute, count(*) AS events FROM events GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(per_minute.status, 200, "{}", per_minute.body);
    let minutes = per_minute.json()["rows"].as_array().unwrap().len();
    assert!(minutes >= 2, "{}", per_minute.body);
    b.exec(
        "[...document.querySelectorAll('[data-test=sql-example]')]
           .find((e) => e.textContent === 'Events per minute').click();",
        json!([]),
    );
    b.wait(&format!("{minutes} result rows"), |b| {
        (b.texts("[data-test=sql-row]").len() == minutes).then_some(())
    });
    b.wait_visible("[data-test=sql-chart] svg path.line");
    assert!(
        b.text("#sql-meta")
            .unwrap()
            .starts_with(&format!("{minutes} rows")),
        "{:?}",
        b.text("#sql-meta")
    );

    // A dead letter's error through the dead_letters view.
    b.type_into(
        "[data-test=sql-input]",
        "SELECT stage, error FROM dead_letters",
    );
    b.click("[data-test=sql-run]");
    b.wait_text("[data-test=sql-table] tbody", "unknown level `fatal`");
    assert_eq!(b.texts("[data-test=sql-row]").len(), 1);

    let errors: Vec<String> = b
        .console_log()
        .into_iter()
        .filter(|l| l.contains("SEVERE") && !l.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "browser errors:\n{}", errors.join("\n"));
    drop(b);
    assert_eq!(s.stop(), Some(0));
}
