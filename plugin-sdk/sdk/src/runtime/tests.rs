//! The runtime driven the way the generated glue drives it, checked against
//! the exact bytes the host would read.

use std::convert::Infallible;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasmpipe_abi::{NO_EVENT, kind, status};

use super::codec::{accumulators, events, outputs};
use super::export::{alloc_buffer, take_buffer};
use super::*;

#[derive(Deserialize, Serialize, Debug, PartialEq)]
struct Num {
    n: i64,
}

const MAP: StageInfo = StageInfo {
    kind: kind::MAP,
    name: "double",
    key_fn: None,
};
const REDUCE: StageInfo = StageInfo {
    kind: kind::REDUCE,
    name: "sum",
    key_fn: None,
};

fn ready<P: DeserializeOwned + 'static>(stage: &StageInfo, cfg: Value) -> Runtime {
    let rt = Runtime::new();
    let code = rt.init::<P>(stage, cfg.to_string().as_bytes(), PhantomData);
    assert_eq!(code, status::OK, "init failed: {:?}", rt.errors());
    rt
}

fn out(rt: &Runtime) -> String {
    String::from_utf8(rt.output()).unwrap()
}

fn double(ev: Num, _: &Context<NoParams>) -> Result<Num, String> {
    if ev.n == 13 {
        Err("unlucky 13".into())
    } else {
        Ok(Num { n: ev.n * 2 })
    }
}

#[test]
fn map_keeps_going_past_bad_events() {
    let rt = ready::<NoParams>(&MAP, json!({"stage": "double"}));
    let chunk = b"{\"n\":1}\n{\"n\":\n{\"n\":13}\r\n{\"m\":2}\n{\"n\":4}\n";
    assert_eq!(rt.map(b"", chunk, events(), outputs(), double), status::OK);
    assert_eq!(out(&rt), "{\"n\":2}\n{\"n\":8}\n");
    assert_eq!(rt.origins(), [0, 4]);
    assert_eq!(
        rt.errors(),
        [
            (
                1,
                "invalid event JSON: EOF while parsing a value at line 1 column 5".to_owned()
            ),
            (2, "unlucky 13".to_owned()),
            (
                3,
                "event does not match `Num`: missing field `n` at line 1 column 7".to_owned()
            ),
        ]
    );
    let d = rt.descriptor();
    assert_eq!(
        (d.cursor, d.out_len, d.origin_count, d.panic_len),
        (NO_EVENT, 16, 2, 0)
    );
}

#[test]
fn buffers_are_cleared_between_calls() {
    let rt = ready::<NoParams>(&MAP, json!({"stage": "double"}));
    assert_eq!(
        rt.map(b"", b"{\"n\":13}\n{\"n\":1}", events(), outputs(), double),
        status::OK
    );
    assert_eq!(
        rt.map(b"", b"{\"n\":5}", events(), outputs(), double),
        status::OK
    );
    assert_eq!(out(&rt), "{\"n\":10}\n");
    assert_eq!(rt.origins(), [0]);
    assert_eq!(rt.errors(), []);
    assert_eq!(rt.map(b"", b"", events(), outputs(), double), status::OK);
    assert_eq!(
        (rt.output(), rt.origins(), rt.descriptor().err_len),
        (vec![], vec![], 0)
    );
}

#[test]
fn filter_passes_the_original_bytes() {
    #[derive(Deserialize)]
    struct Log {
        level: String,
    }
    let stage = StageInfo {
        kind: kind::FILTER,
        name: "errors_only",
        key_fn: None,
    };
    let rt = ready::<NoParams>(&stage, json!({"stage": "errors_only"}));
    let chunk = "{\"level\": \"error\",  \"msg\":\"a\u{e9}\"}\n{\"level\":\"info\"}\n{}\n{\"level\":\"error\"}";
    let code = rt.filter(
        b"",
        chunk.as_bytes(),
        events(),
        |ev: &Log, _: &Context<NoParams>| ev.level == "error",
    );
    assert_eq!(code, status::OK);
    assert_eq!(
        out(&rt),
        "{\"level\": \"error\",  \"msg\":\"a\u{e9}\"}\n{\"level\":\"error\"}\n"
    );
    assert_eq!(rt.origins(), [0, 3]);
    assert_eq!(
        rt.errors(),
        [(
            2,
            "event does not match `Log`: missing field `level` at line 1 column 2".to_owned()
        )]
    );
}

#[test]
fn flat_map_takes_back_the_outputs_of_a_failing_event() {
    fn split(ev: Num, _: &Context<NoParams>) -> Result<Vec<Value>, String> {
        if ev.n == 2 {
            return Err("two".into());
        }
        Ok((0..ev.n).map(|i| json!({ "i": i })).collect())
    }
    let stage = StageInfo {
        kind: kind::FLAT_MAP,
        name: "split",
        key_fn: None,
    };
    let rt = ready::<NoParams>(&stage, json!({"stage": "split"}));
    assert_eq!(
        rt.flat_map(
            b"",
            b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}",
            events(),
            outputs(),
            split
        ),
        status::OK
    );
    assert_eq!(out(&rt), "{\"i\":0}\n{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n");
    assert_eq!(rt.origins(), [1, 3, 3, 3]);
    assert_eq!(rt.errors(), [(2, "two".to_owned())]);

    // An output that fails to encode drops all of its event's outputs.
    #[derive(Serialize)]
    struct Bad(std::collections::BTreeMap<Vec<u8>, u8>);
    let bad = |ev: Num, _: &Context<NoParams>| -> Result<Vec<Result<u8, Bad>>, Infallible> {
        Ok(vec![
            Ok(1),
            if ev.n == 1 {
                Err(Bad([(vec![1], 1)].into()))
            } else {
                Ok(2)
            },
        ])
    };
    assert_eq!(
        rt.flat_map(b"", b"{\"n\":0}\n{\"n\":1}", events(), outputs(), bad),
        status::OK
    );
    assert_eq!(out(&rt), "{\"Ok\":1}\n{\"Ok\":2}\n");
    assert_eq!(rt.origins(), [0, 0]);
    assert_eq!(
        rt.errors(),
        [(1, "cannot encode output: key must be a string".to_owned())]
    );
}

#[derive(Deserialize, Debug, PartialEq)]
struct Params {
    region: String,
    #[serde(default = "prod")]
    env: String,
}

fn prod() -> String {
    "prod".into()
}

#[test]
fn context_carries_params_meta_and_index() {
    let rt = ready::<Params>(
        &MAP,
        json!({"stage": "enrich", "params": {"region": "eu"}, "key": null}),
    );
    let seen = |ev: Value, ctx: &Context<Params>| -> Result<Value, Infallible> {
        Ok(json!({
            "ev": ev, "stage": ctx.stage(), "region": ctx.params().region, "env": ctx.params().env,
            "host": ctx.meta_str("host"), "index": ctx.index(),
        }))
    };
    assert_eq!(
        rt.map(
            br#"{"host":"web-1","job":7}"#,
            b"1\n2",
            events(),
            outputs(),
            seen
        ),
        status::OK
    );
    let lines: Vec<Value> = out(&rt)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"ev": 1, "stage": "enrich", "region": "eu", "env": "prod", "host": "web-1", "index": 0}),
            json!({"ev": 2, "stage": "enrich", "region": "eu", "env": "prod", "host": "web-1", "index": 1}),
        ]
    );
    // Metadata is per chunk: a chunk without it does not see the last one's.
    assert_eq!(rt.map(b"", b"3", events(), outputs(), seen), status::OK);
    assert!(out(&rt).contains("\"host\":null"), "{}", out(&rt));
    assert_eq!(
        rt.map(b"[1]", b"3", events(), outputs(), seen),
        status::FAILED
    );
    assert_eq!(
        rt.errors(),
        [(
            NO_EVENT,
            "invalid chunk metadata: invalid type: sequence, expected a map at line 1 column 0"
                .to_owned()
        )]
    );
}

#[test]
fn init_failures_are_one_record_at_no_event() {
    let rt = Runtime::new();
    assert_eq!(
        rt.init::<Params>(
            &MAP,
            br#"{"stage":"enrich","params":{"env":"dev"}}"#,
            PhantomData
        ),
        status::FAILED
    );
    assert_eq!(
        rt.errors(),
        [(
            NO_EVENT,
            "invalid params for stage `enrich`: missing field `region`".to_owned()
        )]
    );
    assert_eq!(rt.output(), b"");
    // Params default to `{}` when the configuration has none.
    assert_eq!(
        rt.init::<Params>(&MAP, br#"{"stage":"enrich"}"#, PhantomData),
        status::FAILED
    );
    assert_eq!(
        rt.errors(),
        [(
            NO_EVENT,
            "invalid params for stage `enrich`: missing field `region`".to_owned()
        )]
    );
    assert_eq!(rt.init::<Params>(&MAP, b"{", PhantomData), status::FAILED);
    assert!(
        rt.errors()[0]
            .1
            .starts_with("invalid stage configuration: EOF"),
        "{:?}",
        rt.errors()
    );

    // The failed init left the stage unconfigured.
    assert_eq!(
        rt.map(b"", b"{\"n\":1}", events(), outputs(), double),
        status::FAILED
    );
    assert_eq!(
        rt.errors(),
        [(
            NO_EVENT,
            "stage not initialised: the host must call `wasmpipe_init` first".to_owned()
        )]
    );
}

#[test]
fn key_pointers_are_checked_at_init() {
    let rt = Runtime::new();
    let init = |stage: &StageInfo, key: &str| {
        let cfg = json!({"stage": "s", "key": key}).to_string();
        let code = rt.init::<NoParams>(stage, cfg.as_bytes(), PhantomData);
        (code, rt.errors().pop().map(|e| e.1))
    };
    assert_eq!(init(&REDUCE, "/service"), (status::OK, None));
    assert_eq!(
        init(&MAP, "/service"),
        (
            status::FAILED,
            Some("stage `s` is a map stage; only reduce stages take a `key`".to_owned())
        )
    );
    assert_eq!(
        init(&REDUCE, "service"),
        (
            status::FAILED,
            Some("invalid key `service` for stage `s`: a JSON pointer starts with `/`, e.g. `/service`".to_owned())
        )
    );
    let by_word = StageInfo {
        kind: kind::REDUCE,
        name: "count",
        key_fn: Some("by_word"),
    };
    assert_eq!(
        init(&by_word, "/word"),
        (
            status::FAILED,
            Some("stage `s` computes its own key with `by_word`; remove `key = \"/word\"` from the manifest".to_owned())
        )
    );
}

#[test]
fn metadata_describes_the_stage() {
    let rt = Runtime::new();
    assert_eq!(rt.metadata(&MAP), status::OK);
    let expected = format!(
        "{{\"abi\":1,\"kind\":\"map\",\"name\":\"double\",\"sdk\":\"wasmpipe-sdk {}\",\"keyed\":false,\"events\":[\"json\",\"msgpack\"]}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(out(&rt), expected);
    let keyed = StageInfo {
        kind: kind::REDUCE,
        name: "count",
        key_fn: Some("by_word"),
    };
    assert_eq!(rt.metadata(&keyed), status::OK);
    assert!(out(&rt).contains("\"keyed\":true,"));
}

type NoKey = Option<fn(&Num, &mut String)>;

fn add(acc: i64, ev: Num, _: &Context<NoParams>) -> i64 {
    acc + ev.n
}

#[test]
fn reduce_folds_chunks_into_the_accumulator() {
    let rt = ready::<NoParams>(&REDUCE, json!({"stage": "sum"}));
    let reduce = |acc: &[u8], input: &[u8]| {
        rt.reduce(
            b"",
            acc,
            input,
            events(),
            accumulators(),
            i64::default,
            NoKey::None,
            ByValue(add),
        )
    };
    assert_eq!(reduce(b"", b"{\"n\":1}\n{\"n\":2}\nnope\n"), status::OK);
    assert_eq!(out(&rt), "3");
    assert_eq!(rt.origins(), Vec::<u32>::new());
    assert_eq!(
        rt.errors(),
        [(
            2,
            "invalid event JSON: expected ident at line 1 column 2".to_owned()
        )]
    );
    assert_eq!(reduce(b"3", b"{\"n\":10}"), status::OK);
    assert_eq!(out(&rt), "13");
    assert_eq!(reduce(b"", b""), status::OK);
    assert_eq!(out(&rt), "0");
    assert_eq!(reduce(b"\"x\"", b"{\"n\":10}"), status::FAILED);
    assert_eq!(
        rt.errors(),
        [(NO_EVENT, "invalid accumulator for stage `sum`: invalid type: string \"x\", expected i64 at line 1 column 3".to_owned())]
    );
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Stats {
    count: u64,
    total: i64,
}

/// A fallible reduce keeps what it folded before an event fails.
fn tally(acc: &mut Stats, ev: Num, _: &Context<NoParams>) -> Result<(), String> {
    if ev.n < 0 {
        return Err(format!("negative n {}", ev.n));
    }
    acc.count += 1;
    acc.total += ev.n;
    Ok(())
}

#[test]
fn in_place_reduce_reports_failing_events() {
    let rt = ready::<NoParams>(&REDUCE, json!({"stage": "tally"}));
    let code = rt.reduce(
        b"",
        b"",
        b"{\"n\":5}\n{\"n\":-1}\n{\"n\":7}",
        events(),
        accumulators(),
        Stats::default,
        NoKey::None,
        InPlace(tally),
    );
    assert_eq!(code, status::OK);
    assert_eq!(out(&rt), "{\"count\":2,\"total\":12}");
    assert_eq!(rt.errors(), [(1, "negative n -1".to_owned())]);
}

#[test]
fn keyed_reduce_by_pointer() {
    let rt = ready::<NoParams>(&REDUCE, json!({"stage": "by_service", "key": "/service"}));
    let chunk = br#"{"service":"api","n":1}
{"service":"db","n":2}
{"n":3}
{"service":"api","n":4}
{"service":7,"n":5}
{"service":"api"}"#;
    let code = rt.reduce(
        b"",
        b"",
        chunk,
        events(),
        accumulators(),
        i64::default,
        NoKey::None,
        ByValue(add),
    );
    assert_eq!(code, status::OK);
    assert_eq!(out(&rt), r#"{"7":5,"api":5,"db":2}"#);
    assert_eq!(
        rt.errors(),
        [
            (2, "key `/service` not found in event".to_owned()),
            (
                5,
                "event does not match `Num`: missing field `n` at line 1 column 17".to_owned()
            ),
        ]
    );
    let code = rt.reduce(
        b"",
        br#"{"api":5,"db":2}"#,
        br#"{"service":"db","n":1}"#,
        events(),
        accumulators(),
        i64::default,
        NoKey::None,
        ByValue(add),
    );
    assert_eq!(code, status::OK);
    assert_eq!(out(&rt), r#"{"api":5,"db":3}"#);
}

#[test]
fn keyed_reduce_by_function_in_place() {
    #[derive(Deserialize)]
    struct Word {
        word: String,
    }
    fn by_word(w: &Word) -> &str {
        &w.word
    }
    fn count(acc: &mut u64, _: Word, _: &Context<NoParams>) -> Result<(), Infallible> {
        *acc += 1;
        Ok(())
    }
    let stage = StageInfo {
        kind: kind::REDUCE,
        name: "count",
        key_fn: Some("by_word"),
    };
    let rt = ready::<NoParams>(&stage, json!({"stage": "count"}));
    let chunk = b"{\"word\":\"b\"}\n{\"word\":\"a\"}\n{\"word\":\"b\"}\n{}";
    assert_eq!(
        rt.reduce(
            b"",
            b"{\"a\":10}",
            chunk,
            events(),
            accumulators(),
            u64::default,
            Some(|w: &Word, buf: &mut String| crate::__private::write_key(by_word(w), buf)),
            InPlace(count)
        ),
        status::OK
    );
    assert_eq!(out(&rt), r#"{"a":11,"b":2}"#);
    assert_eq!(
        rt.errors(),
        [(
            3,
            "event does not match `Word`: missing field `word` at line 1 column 2".to_owned()
        )]
    );
}

#[test]
fn combine_merges_accumulators() {
    let merge = |a: i64, b: i64| a + b;
    let rt = ready::<NoParams>(&REDUCE, json!({"stage": "sum"}));
    assert_eq!(
        rt.combine(b"3", b"4", accumulators(), i64::default, merge),
        status::OK
    );
    assert_eq!(out(&rt), "7");
    assert_eq!(
        rt.combine(b"", b"4", accumulators(), i64::default, merge),
        status::OK
    );
    assert_eq!(out(&rt), "4");
    assert_eq!(
        rt.combine(b"", b"", accumulators(), i64::default, merge),
        status::OK
    );
    assert_eq!(out(&rt), "0");
    assert_eq!(
        rt.combine(b"3", b"{}", accumulators(), i64::default, merge),
        status::FAILED
    );
    assert!(
        rt.errors()[0]
            .1
            .starts_with("invalid second accumulator to combine: invalid type: map")
    );

    let rt = ready::<NoParams>(&REDUCE, json!({"stage": "count", "key": "/word"}));
    assert_eq!(
        rt.combine(
            br#"{"a":1,"b":2}"#,
            br#"{"b":3,"c":4}"#,
            accumulators(),
            i64::default,
            merge
        ),
        status::OK
    );
    assert_eq!(out(&rt), r#"{"a":1,"b":5,"c":4}"#);
}

#[test]
fn panics_are_published_in_the_descriptor() {
    let rt = Runtime::new();
    rt.record_panic("panicked at src/lib.rs:10:5: poison event");
    assert_eq!(
        rt.panic_message(),
        "panicked at src/lib.rs:10:5: poison event"
    );
    let d = rt.descriptor();
    assert_eq!(d.panic_len, 41);
    assert_eq!(d.panic_ptr, rt.panic.borrow().as_ptr() as usize as u32);
    // The next call starts clean.
    assert_eq!(rt.metadata(&MAP), status::OK);
    assert_eq!(
        (rt.descriptor().panic_len, rt.panic_message()),
        (0, String::new())
    );
}

#[test]
fn cursor_tracks_the_current_event() {
    let rt = ready::<NoParams>(&MAP, json!({"stage": "double"}));
    let mut seen = Vec::new();
    let code = rt.map(
        b"",
        b"1\n2\n3",
        events(),
        outputs(),
        |n: i64, ctx: &Context<NoParams>| {
            // The cursor is in the descriptor while the function runs.
            // SAFETY: reading the runtime's own descriptor, as the host would.
            seen.push((
                unsafe { std::ptr::read_volatile(rt.descriptor_ptr()) }.cursor,
                ctx.index(),
            ));
            Ok::<_, Infallible>(n)
        },
    );
    assert_eq!(code, status::OK);
    assert_eq!(seen, [(0, 0), (1, 1), (2, 2)]);
    assert_eq!(rt.descriptor().cursor, NO_EVENT);
}

#[test]
fn buffers_round_trip_through_alloc() {
    let p = alloc_buffer(5);
    // SAFETY: `p` has 5 bytes, as the host would fill them.
    unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), p, 5) };
    // SAFETY: `p` came from `alloc_buffer(5)`.
    assert_eq!(&*unsafe { take_buffer(p, 5) }, b"hello");
    // SAFETY: a zero length ignores the pointer.
    assert!(unsafe { take_buffer(std::ptr::null_mut(), 0) }.is_empty());
}

/// A chunk of MessagePack frames, as the host sends it, from JSON values.
fn frames(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        super::msgpack::write_frame(&mut out, e).unwrap();
    }
    out
}

/// The JSON values of the frames a call returned.
fn frame_values(bytes: &[u8]) -> Vec<Value> {
    wasmpipe_abi::frames(bytes)
        .map(|f| super::msgpack::parse_event::<Value>(f.expect("whole frames")).unwrap())
        .collect()
}

#[test]
fn map_over_msgpack_frames_answers_in_frames() {
    let rt = ready::<NoParams>(&MAP, json!({"stage": "double", "events": "msgpack"}));
    let mut chunk = frames(&[
        json!({"n": 1}),
        json!({"n": 13}),
        json!({"m": 2}),
        json!({"n": 4}),
    ]);
    chunk.extend_from_slice(&[3, 0, 0, 0, 0x81]);
    assert_eq!(rt.map(b"", &chunk, events(), outputs(), double), status::OK);
    assert_eq!(
        frame_values(&rt.output()),
        [json!({"n": 2}), json!({"n": 8})]
    );
    assert_eq!(rt.origins(), [0, 3]);
    let errors = rt.errors();
    assert_eq!(errors[0], (1, "unlucky 13".to_owned()));
    assert_eq!(
        errors[1],
        (
            2,
            "event does not match `Num`: missing field `n`".to_owned()
        )
    );
    assert_eq!(errors[2].0, 4, "a truncated frame is an event of its own");
    assert!(
        errors[2].1.starts_with("invalid event MessagePack"),
        "{errors:?}"
    );
}

#[test]
fn filter_over_frames_passes_them_unchanged() {
    #[derive(Deserialize)]
    struct Log {
        level: String,
    }
    let stage = StageInfo {
        kind: kind::FILTER,
        name: "errors_only",
        key_fn: None,
    };
    let rt = ready::<NoParams>(&stage, json!({"stage": "errors_only", "events": "msgpack"}));
    let chunk = frames(&[
        json!({"level": "info"}),
        json!({"level": "error", "x": [1.5]}),
    ]);
    let code = rt.filter(b"", &chunk, events(), |ev: &Log, _: &Context<NoParams>| {
        ev.level == "error"
    });
    assert_eq!(code, status::OK);
    assert_eq!(
        rt.output(),
        frames(&[json!({"level": "error", "x": [1.5]})])
    );
    assert_eq!(rt.origins(), [1]);
}

#[test]
fn keyed_reduce_over_frames_reads_the_pointer_and_writes_json() {
    let rt = ready::<NoParams>(
        &REDUCE,
        json!({"stage": "sum", "key": "/s", "events": "msgpack"}),
    );
    let chunk = frames(&[
        json!({"s": "a", "n": 1}),
        json!({"s": 7, "n": 2}),
        json!({"n": 3}),
        json!({"s": "a", "n": 4}),
    ]);
    let code = rt.reduce(
        b"",
        b"",
        &chunk,
        events(),
        accumulators(),
        || 0i64,
        None::<fn(&Num, &mut String)>,
        ByValue(|acc: i64, ev: Num, _: &Context<NoParams>| acc + ev.n),
    );
    assert_eq!(code, status::OK);
    assert_eq!(out(&rt), r#"{"7":2,"a":5}"#, "accumulators stay JSON");
    assert_eq!(rt.errors(), [(2, "key `/s` not found in event".to_owned())]);
}

#[test]
fn an_unknown_encoding_fails_init() {
    let rt = Runtime::new();
    let cfg = json!({"stage": "double", "events": "cbor"}).to_string();
    assert_eq!(
        rt.init::<NoParams>(&MAP, cfg.as_bytes(), PhantomData),
        status::FAILED
    );
    assert!(
        rt.errors()[0].1.contains("unknown event encoding `cbor`"),
        "{:?}",
        rt.errors()
    );
}
