//! Searching stored events (`GET /v1/events?q=`, the histogram) and
//! read-only SQL (`POST /v1/query`) on a single `serve` (SQLite). The
//! same checks run against an ingest node on PostgreSQL in `cluster.rs`.
//!
//! Every search is held against a brute-force filter written here over the
//! same events: words are runs of letters and digits of the events'
//! string and number values (not their keys), lowercased; a phrase is
//! consecutive words of one value; a prefix matches the start of a word.

use crate::util::http::{Server, ndjson, post, request, wait_job};
use crate::util::{plugin, toml_path, wasmpipe, write};
use serde_json::{Value, json};
use std::path::Path;

/// When the corpus's first event happened (ms); events are 37 s apart.
pub(crate) const T0: i64 = 1_765_000_000_000;

/// The events searched: levels, services, a nested user id, messages from
/// a small vocabulary (some with the phrase "connection refused", some
/// with the words in the other order), an order id and an event time.
pub(crate) fn corpus(n: usize) -> Vec<Value> {
    let words = ["timeout", "retry", "ok", "cache", "miss", "slow", "disk"];
    (0..n)
        .map(|i| {
            let mut msg = format!("{} {}", words[i % 7], words[(i * 3 + 1) % 7]);
            if i % 5 == 0 {
                msg.push_str(" connection refused");
            }
            if i % 11 == 0 {
                msg.push_str(" refused connection");
            }
            let level = ["info", "warn", "error", "debug"][i % 4];
            let service = ["auth", "api", "billing"][i % 3];
            json!({
                "ts": T0 + i as i64 * 37_000,
                "level": level,
                "service": service,
                "user": { "id": format!("u{}", i % 13) },
                "msg": msg,
                "order": format!("ord{:04}", i),
                "n": i,
                "ok": i % 6 == 0,
            })
        })
        .collect()
}

/// A manifest that stores every event (a filter that keeps every level),
/// with the event time at `/ts` and two indexed fields.
pub(crate) fn stages() -> String {
    format!(
        "[[stage]]\nname = \"keep\"\nkind = \"filter\"\nplugin = {}\nparams = {{ min_level = \"debug\" }}\n",
        toml_path(&plugin("errors_only"))
    )
}

/// The `[serve]` keys every search test uses.
pub(crate) const SERVE: &str =
    "time = \"/ts\"\nindex = [\"/service\", \"/user/id\"]\nchunk_size = 40\n";

fn serve(dir: &Path, extra: &str) -> Server {
    let text = format!(
        "[pipeline]\nname = \"logs\"\n{}\n[runtime]\nworkers = 2\n\n[serve]\ndatabase = \"logs.db\"\n{SERVE}{extra}",
        stages()
    );
    Server::start(&write(dir, "logs.toml", &text), &[])
}

/// The words of every string and number value of `v`, one list per value.
fn values(v: &Value, out: &mut Vec<Vec<String>>) {
    let words = |s: &str| {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    match v {
        Value::String(s) => out.push(words(s)),
        Value::Number(n) => out.push(words(&n.to_string())),
        Value::Array(a) => a.iter().for_each(|x| values(x, out)),
        Value::Object(m) => m.values().for_each(|x| values(x, out)),
        _ => {}
    }
}

/// A term of the brute-force filter.
enum T<'a> {
    Phrase(&'a str),
    Prefix(&'a str),
    Field(&'a [&'a str], &'a str),
    Time(i64, i64),
}

fn matches(e: &Value, terms: &[T<'_>]) -> bool {
    let mut vals = Vec::new();
    values(e, &mut vals);
    terms.iter().all(|t| match t {
        T::Phrase(p) => {
            let want: Vec<String> = p.split(' ').map(str::to_lowercase).collect();
            vals.iter()
                .any(|v| v.windows(want.len()).any(|w| w == want.as_slice()))
        }
        T::Prefix(p) => vals.iter().flatten().any(|w| w.starts_with(p)),
        T::Field(path, want) => {
            let mut at = e;
            for seg in *path {
                at = &at[*seg];
            }
            match at {
                Value::String(s) => s == want,
                Value::Null => false,
                v => v.to_string().as_str() == *want,
            }
        }
        T::Time(since, until) => {
            let t = e["ts"].as_i64().unwrap();
            *since <= t && t < *until
        }
    })
}

/// GETs `url`; the JSON answer, with its status checked.
fn get_json(url: &str) -> Value {
    let r = request("GET", url, &[], None).unwrap();
    assert_eq!(r.status, 200, "GET {url}: {}", r.body);
    r.json()
}

/// Every page of `/v1/events?{query}`, oldest first and newest first, in
/// small pages: the `n` of each event.
fn pages(base: &str, query: &str) -> (Vec<i64>, Vec<i64>) {
    let mut out = (Vec::new(), Vec::new());
    for (order, list) in [("asc", &mut out.0), ("desc", &mut out.1)] {
        let mut cursor = String::new();
        loop {
            let v = get_json(&format!(
                "{base}/v1/events?{query}&order={order}&limit=7{cursor}"
            ));
            list.extend(
                v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["event"]["n"].as_i64().unwrap()),
            );
            match v["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
    }
    out
}

/// Holds the searches of `base` (a server's or an ingest node's URL),
/// which stores `events`, against the brute-force filter.
pub(crate) fn check_searches(base: &str, events: &[Value]) {
    // The order the store gave the events (chunks commit in any order).
    let (stored, _) = pages(base, "");
    assert_eq!(stored.len(), events.len(), "every event stored");
    let t = |i: i64| T0 + i * 37_000;
    let enc = |s: &str| {
        s.replace(' ', "%20")
            .replace('"', "%22")
            .replace(':', "%3A")
    };
    let cases: Vec<(String, Vec<T<'_>>)> = vec![
        ("q=timeout".into(), vec![T::Phrase("timeout")]),
        (
            "q=TIMEOUT%20slow".into(),
            vec![T::Phrase("timeout"), T::Phrase("slow")],
        ),
        (
            format!("q={}", enc("\"connection refused\"")),
            vec![T::Phrase("connection refused")],
        ),
        (
            format!("q={}", enc("\"refused connection\" cache")),
            vec![T::Phrase("refused connection"), T::Phrase("cache")],
        ),
        ("q=ord01*".into(), vec![T::Prefix("ord01")]),
        (
            "q=ret*%20ord00*".into(),
            vec![T::Prefix("ret"), T::Prefix("ord00")],
        ),
        (
            format!("q={}", enc("service:auth timeout")),
            vec![T::Field(&["service"], "auth"), T::Phrase("timeout")],
        ),
        (
            format!("q={}", enc("level:error \"connection refused\"")),
            vec![
                T::Field(&["level"], "error"),
                T::Phrase("connection refused"),
            ],
        ),
        (
            "field.service=api&q=retry".into(),
            vec![T::Field(&["service"], "api"), T::Phrase("retry")],
        ),
        (
            "field.user.id=u3".into(),
            vec![T::Field(&["user", "id"], "u3")],
        ),
        (
            format!("q={}", enc("user.id:u7 disk")),
            vec![T::Field(&["user", "id"], "u7"), T::Phrase("disk")],
        ),
        ("q=u7".into(), vec![T::Phrase("u7")]),
        ("q=42".into(), vec![T::Phrase("42")]),
        ("field.n=42".into(), vec![T::Field(&["n"], "42")]),
        (
            format!("q={}", enc("ok:true timeout")),
            vec![T::Field(&["ok"], "true"), T::Phrase("timeout")],
        ),
        (
            "field.ok=false&q=disk".into(),
            vec![T::Field(&["ok"], "false"), T::Phrase("disk")],
        ),
        (
            format!("q=timeout&since={}&until={}", t(20), t(120)),
            vec![T::Phrase("timeout"), T::Time(t(20), t(120))],
        ),
        (
            format!("since={}&until={}&field.service=billing", t(50), t(61)),
            vec![T::Time(t(50), t(61)), T::Field(&["service"], "billing")],
        ),
        ("q=nosuchword".into(), vec![T::Phrase("nosuchword")]),
        // Keys are not searched: every event has a `level`.
        ("q=level".into(), vec![T::Phrase("level")]),
    ];
    for (query, terms) in &cases {
        let want: Vec<i64> = stored
            .iter()
            .copied()
            .filter(|&n| matches(&events[n as usize], terms))
            .collect();
        let (asc, desc) = pages(base, query);
        assert_eq!(asc, want, "`{query}`, oldest first");
        let mut newest: Vec<i64> = want.clone();
        newest.reverse();
        assert_eq!(desc, newest, "`{query}`, newest first");
        let h = get_json(&format!("{base}/v1/events/histogram?{query}&buckets=10"));
        assert_eq!(h["total"], want.len(), "`{query}`: histogram total {h}");
        let sum: u64 = h["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(
            sum,
            want.len() as u64,
            "`{query}`: the buckets add up to the total {h}"
        );
    }
    // The buckets fall where the event times do.
    let h = get_json(&format!(
        "{base}/v1/events/histogram?since={}&until={}&buckets=10",
        t(0),
        t(100)
    ));
    for b in h["buckets"].as_array().unwrap() {
        let start = b["start_ms"].as_i64().unwrap();
        let end = start + h["interval_ms"].as_i64().unwrap();
        let want = (0..100).filter(|&i| (start..end).contains(&t(i))).count();
        assert_eq!(b["count"], want, "bucket at {start}: {h}");
    }
    // Bad searches are the client's to fix, and say why.
    for (q, says) in [
        ("q=%22open", "never closed"),
        ("q=a-b*", "prefix"),
        ("q=%21%21", "no letters"),
        ("q=a%24b%3Ac", "field name"),
        ("order=sideways", "`order`"),
    ] {
        let r = request("GET", &format!("{base}/v1/events?{q}"), &[], None).unwrap();
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.error().contains(says), "{q}: {}", r.error());
    }
}

/// Posts `events` in batches of 200 to pipeline `logs` of `base`; returns
/// the job ids.
pub(crate) fn post_events(base: &str, events: &[Value]) -> Vec<i64> {
    events
        .chunks(200)
        .map(|batch| {
            let r = request(
                "POST",
                &format!("{base}/v1/pipelines/logs/jobs"),
                &[("content-type", "application/x-ndjson")],
                Some(ndjson(batch).as_bytes()),
            )
            .unwrap();
            assert_eq!(r.status, 202, "{}", r.body);
            r.json()["job"].as_i64().unwrap()
        })
        .collect()
}

#[test]
fn searches_match_a_brute_force_filter_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "");
    let events = corpus(500);
    for id in post_events(&s.url(""), &events) {
        wait_job(&s, id, &[]);
    }
    check_searches(&s.url(""), &events);
    // The field indexes exist, and a filter on an indexed field uses one.
    let db = rusqlite::Connection::open(dir.path().join("logs.db")).unwrap();
    let plan: Vec<String> = db
        .prepare("EXPLAIN QUERY PLAN SELECT id FROM events e WHERE CASE json_type(e.body, '$.\"service\"') WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(json_extract(e.body, '$.\"service\"') AS TEXT) END = 'api'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join("; ");
    assert!(plan.contains("INDEX events_field_service"), "{plan}");
}

/// A checksum of every row of every table of the SQLite file at `db`.
fn checksum(db: &Path) -> String {
    use sha2::Digest as _;
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut h = sha2::Sha256::new();
    for t in &tables {
        h.update(t.as_bytes());
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                h.update(format!("{:?}", r.get_ref(i).unwrap()).as_bytes());
            }
        }
    }
    let schema: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    h.update(schema.to_le_bytes());
    hex::encode(h.finalize())
}

/// POSTs `sql` to `/v1/query` of `base`.
pub(crate) fn query(base: &str, body: &Value) -> crate::util::http::Resp {
    request(
        "POST",
        &format!("{base}/v1/query"),
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
    .unwrap()
}

/// What read-only SQL must refuse, in either dialect, and the status (0:
/// any 4xx; SQLite and PostgreSQL see a second statement differently).
pub(crate) const REFUSED: &[(&str, u16)] = &[
    ("INSERT INTO events (id) VALUES (999999)", 403),
    ("UPDATE events SET pipeline = 'x'", 403),
    ("DELETE FROM events", 403),
    (
        "WITH gone AS (DELETE FROM events RETURNING id) SELECT count(*) FROM gone",
        400,
    ),
    ("DROP TABLE events", 403),
    ("CREATE TABLE stolen (a INTEGER)", 403),
    ("SELECT 1; DELETE FROM events", 0),
];

/// Asserts that `sql` is refused with `status` (0: any 4xx) and a message.
pub(crate) fn assert_refused(base: &str, sql: &str, status: u16) {
    let r = query(base, &json!({ "sql": sql }));
    if status == 0 {
        assert!(
            (400..500).contains(&r.status),
            "{sql}: {} {}",
            r.status,
            r.body
        );
    } else {
        assert_eq!(r.status, status, "{sql}: {}", r.body);
    }
    assert!(
        !r.error().is_empty() && r.error() != "internal error",
        "{sql}: {}",
        r.body
    );
}

#[test]
fn read_only_sql_answers_over_the_views_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "");
    let base = s.url("");
    let events = corpus(300);
    for id in post_events(&base, &events) {
        wait_job(&s, id, &[]);
    }
    // Answers: the same grouped count the test makes itself.
    let r = query(
        &base,
        &json!({ "sql": "SELECT data->>'service' AS service, count(*) AS n FROM events GROUP BY 1 ORDER BY 1" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["columns"], json!(["service", "n"]));
    assert_eq!(
        v["rows"],
        json!([["api", 100], ["auth", 100], ["billing", 100]])
    );
    // Time as the event's own, per minute, over the views.
    let r = query(
        &base,
        &json!({ "sql": "SELECT time / 60000 * 60000 AS minute, count(*) AS n FROM events WHERE data->>'level' = 'error' GROUP BY 1 ORDER BY 1 LIMIT 3" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.json()["rows"][0].clone();
    let minute = (T0 + 2 * 37_000) / 60_000 * 60_000;
    let want = events
        .iter()
        .filter(|e| e["level"] == "error" && e["ts"].as_i64().unwrap() / 60_000 * 60_000 == minute)
        .count();
    assert_eq!(first, json!([minute, want]));
    let r = query(
        &base,
        &json!({ "sql": "SELECT count(*), sum(events_out) FROM jobs" }),
    );
    assert_eq!(r.json()["rows"], json!([[2, 300]]), "{}", r.body);
    // The same from the command line: a table, JSON lines, the refusal.
    let cli = |args: &[&str]| {
        let out = wasmpipe()
            .args(["query", "--server", &base])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let sql = "SELECT data->>'service' AS service, count(*) AS n FROM events GROUP BY 1 ORDER BY 1";
    let (code, table, err) = cli(&[sql]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        table,
        "service  n\n-------  ---\napi      100\nauth     100\nbilling  100\n"
    );
    assert!(err.contains("(3 rows,"), "{err}");
    let (code, lines, _) = cli(&["--json", sql]);
    assert_eq!(code, Some(0));
    assert_eq!(lines.lines().next(), Some(r#"{"service":"api","n":100}"#));
    let (code, _, err) = cli(&["DELETE FROM events"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("answered 403 Forbidden: the query may only read"),
        "{err}"
    );

    let db = dir.path().join("logs.db");
    let before = checksum(&db);
    let mut refused: Vec<(String, u16)> =
        REFUSED.iter().map(|(q, c)| (q.to_string(), *c)).collect();
    refused.extend(
        [
            ("DELETE FROM main.events", 403),
            ("SELECT * FROM main.chunks", 403),
            ("SELECT * FROM sqlite_master", 403),
            ("CREATE TEMP TABLE t (a)", 403),
            ("CREATE TEMP VIEW events AS SELECT 1", 403),
            ("ATTACH DATABASE 'stolen.db' AS stolen", 403),
            ("PRAGMA user_version = 9", 403),
            ("PRAGMA journal_mode = DELETE", 403),
            ("PRAGMA writable_schema = 1", 403),
            ("SELECT load_extension('/tmp/evil')", 403),
            ("SELECT readfile('/etc/passwd')", 400),
            ("VACUUM", 403),
            ("VACUUM INTO 'copy.db'", 403),
            ("REINDEX", 403),
            ("ANALYZE", 403),
            ("BEGIN IMMEDIATE", 403),
            ("SELEC 1", 400),
        ]
        .map(|(q, c)| (q.to_string(), c)),
    );
    for (sql, status) in &refused {
        assert_refused(&base, sql, *status);
    }
    assert!(!dir.path().join("copy.db").exists() && !dir.path().join("stolen.db").exists());
    // Past the row limit, past the timeout: 422, saying what to do.
    let r = query(
        &base,
        &json!({ "sql": "SELECT * FROM events", "limit": 10 }),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.error().contains("more than 10 rows"), "{}", r.body);
    let r = query(
        &base,
        &json!({ "sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "timeout_ms": 300 }),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.error().contains("timeout"), "{}", r.body);
    // Bad requests.
    for (body, says) in [
        (json!({ "sql": "" }), "empty"),
        (json!({ "query": "SELECT 1" }), "must be JSON like"),
        (json!({ "sql": "SELECT 1", "limit": 0 }), "`limit`"),
        (
            json!({ "sql": "SELECT 1", "timeout_ms": 999999 }),
            "`timeout_ms`",
        ),
    ] {
        let r = query(&base, &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains(says), "{body}: {}", r.body);
    }
    // The store still works, and nothing changed.
    let r = query(&base, &json!({ "sql": "SELECT count(*) FROM events" }));
    assert_eq!(r.json()["rows"], json!([[300]]), "{}", r.body);
    assert_eq!(
        checksum(&db),
        before,
        "the database changed under read-only SQL"
    );
}

#[test]
fn dead_letters_are_searched_by_their_error_and_event() {
    let dir = tempfile::tempdir().unwrap();
    // `faulty` fails an event whose `n` ends in 13 ("unlucky 13").
    let text = format!(
        "[pipeline]\nname = \"logs\"\n[[stage]]\nname = \"f\"\nkind = \"map\"\nplugin = {}\n[serve]\ndatabase = \"logs.db\"\n",
        toml_path(&plugin("faulty"))
    );
    let s = Server::start(&write(dir.path(), "logs.toml", &text), &[]);
    let base = s.url("");
    let events = vec![
        json!({ "n": 1, "msg": "fine" }),
        json!({ "n": 13, "msg": "disk quota exceeded" }),
        json!({ "n": 1013, "msg": "cache warm" }),
    ];
    let r = post(
        &s,
        "/v1/pipelines/logs/jobs",
        "application/x-ndjson",
        &ndjson(&events),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    let dead = |q: &str| -> Vec<String> {
        get_json(&format!("{base}/v1/dead-letters?q={q}"))["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event"]["msg"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(dead("quota"), ["disk quota exceeded"]);
    assert_eq!(dead("cach*"), ["cache warm"]);
    assert_eq!(dead("fine"), Vec::<String>::new());
    assert_eq!(
        dead("unlucky").len(),
        2,
        "the error's words are searched too"
    );
    let r = request(
        "GET",
        &format!("{base}/v1/dead-letters?q=n%3A13"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn an_older_database_is_upgraded_in_place_and_searched() {
    let dir = tempfile::tempdir().unwrap();
    let events = corpus(120);
    {
        let s = serve(dir.path(), "");
        for id in post_events(&s.url(""), &events) {
            wait_job(&s, id, &[]);
        }
        s.stop();
    }
    // Back to schema version 2: no text index, no event time.
    let db = dir.path().join("logs.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP TABLE events_text; DROP TABLE dead_text; DROP TABLE search_state;
             DROP INDEX events_time; ALTER TABLE events DROP COLUMN time;
             DROP INDEX events_field_service_9df6b026; PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let s = serve(dir.path(), "");
    let log = s.log();
    assert!(
        log.contains("building the search index of 120 stored events"),
        "{log}"
    );
    assert!(log.contains("indexing field `service`"), "{log}");
    let base = s.url("");
    let (all, _) = pages(&base, "q=timeout");
    let want: Vec<i64> = (0..120)
        .filter(|i| matches(&events[*i as usize], &[T::Phrase("timeout")]))
        .collect();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    assert_eq!(all_sorted, want);
    // Events stored before the upgrade have their arrival as their time.
    let e = get_json(&format!("{base}/v1/events?limit=1"));
    assert_eq!(e["events"][0]["time"], e["events"][0]["received_at"]);
    // New events are indexed as they come.
    let more = corpus(130).split_off(120);
    for id in post_events(&base, &more) {
        wait_job(&s, id, &[]);
    }
    assert_eq!(
        get_json(&format!("{base}/v1/events?q=ord0125"))["events"][0]["event"]["n"],
        125
    );
}

#[test]
fn retention_purges_the_text_index_with_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "retention = \"1s\"\n");
    let base = s.url("");
    for id in post_events(&base, &corpus(50)) {
        wait_job(&s, id, &[]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !get_json(&format!("{base}/v1/events?limit=1"))["events"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "retention never purged:\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    s.stop();
    let c = rusqlite::Connection::open(dir.path().join("logs.db")).unwrap();
    // A contentless FTS5 table answers a match from its index alone.
    let left: i64 = c
        .query_row(
            "SELECT count(*) FROM events_text WHERE events_text MATCH 'timeout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the purged events are still in the text index");
}
