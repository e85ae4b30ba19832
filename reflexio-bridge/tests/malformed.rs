//! The malformed-input suite: a table of bad requests written byte for byte to the real binary
//! over TCP (JSON, NDJSON, HTTP framing, Content-Length and Transfer-Encoding, times, names,
//! numbers, cardinality, content types, tokens, sizes and stalled bodies). Each gets its
//! documented status and a JSON error saying where the problem is, and none changes a recorded
//! value. Also: what malformed requests leave in the log and the metrics.

mod common;

use common::{Bridge, RawResponse, fact, raw_exchange};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const TOKEN: &str = "malformed-suite-token-0123456789";

/// Where the error must say the problem is; `Any` for syntax errors, whose position is
/// serde_json's business.
#[derive(Debug, Clone, PartialEq)]
enum At {
    Body,
    Event(usize, Option<&'static str>),
    Line(usize, usize, Option<&'static str>),
    Any,
}

/// Which counter a refusal moves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Counted {
    /// `reflexio_ingest_requests_total{outcome}`: the request reached `POST /v1/events`.
    Ingest(&'static str),
    /// `reflexio_http_malformed_requests_total`: the HTTP layer refused it.
    HttpLayer,
    /// Neither: another endpoint answered.
    Neither,
}

struct Case {
    what: String,
    request: Vec<u8>,
    status: u16,
    at: At,
    counted: Counted,
    /// Words the error message must hold.
    says: Option<&'static str>,
}

impl Case {
    fn saying(mut self, words: &'static str) -> Self {
        self.says = Some(words);
        self
    }
}

/// `POST /v1/events` with a correct Content-Length.
fn post(content_type: Option<&str>, token: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: bridge\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head += &format!("content-type: {ct}\r\n");
    }
    if let Some(t) = token {
        head += &format!("authorization: Bearer {t}\r\n");
    }
    head += "\r\n";
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// A request line and header lines written as given, then the body.
fn raw_head(request_line: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{request_line}\r\n");
    for h in headers {
        head += h;
        head += "\r\n";
    }
    head += "\r\n";
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// `POST /v1/events` with the token and a JSON content type, and these extra header lines.
fn framed(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let auth = format!("authorization: Bearer {TOKEN}");
    let mut all = vec![
        "host: bridge",
        "connection: close",
        "content-type: application/json",
        auth.as_str(),
    ];
    all.extend_from_slice(headers);
    raw_head("POST /v1/events HTTP/1.1", &all, body)
}

fn case(what: impl Into<String>, request: Vec<u8>, status: u16, at: At) -> Case {
    let counted = match status {
        400 => Counted::Ingest("invalid"),
        401 => Counted::Ingest("unauthorized"),
        408 => Counted::Ingest("timed_out"),
        413 => Counted::Ingest("too_large"),
        415 => Counted::Ingest("unsupported_media_type"),
        _ => Counted::Neither,
    };
    Case {
        what: what.into(),
        request,
        status,
        at,
        counted,
        says: None,
    }
}

/// A request the HTTP layer refuses before any endpoint sees it.
fn http_layer(what: impl Into<String>, request: Vec<u8>, status: u16) -> Case {
    Case {
        counted: Counted::HttpLayer,
        ..case(what, request, status, At::Body)
    }
}

fn json_body(what: impl Into<String>, body: impl AsRef<[u8]>, at: At) -> Case {
    let request = post(Some("application/json"), Some(TOKEN), body.as_ref());
    case(what, request, 400, at)
}

fn ndjson(what: impl Into<String>, body: impl AsRef<[u8]>, at: At) -> Case {
    let request = post(Some("application/x-ndjson"), Some(TOKEN), body.as_ref());
    case(what, request, 400, at)
}

/// A batch whose second event is `event`: the error must name event 1 and `field`.
fn second(what: impl Into<String>, event: Value, field: Option<&'static str>) -> Case {
    json_body(
        what,
        json!([{"type":"digest"}, event]).to_string(),
        At::Event(1, field),
    )
}

fn with(mut event: Value, key: &str, value: Value) -> Value {
    event[key] = value;
    event
}

fn retention(deleted: Value) -> Value {
    json!({"type":"retention","table":"facts","deleted_records":deleted})
}

fn lock(pid: Value) -> Value {
    json!({"type":"lock_acquired","name":"suite_lock","holder":"w1","pid":pid})
}

fn syntax_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (what, body) in [
        ("truncated: an open bracket", "["),
        ("truncated: an open object", "[{"),
        ("truncated: a key", r#"[{"type""#),
        ("truncated: after a colon", r#"[{"type":"#),
        ("truncated: an open string", r#"[{"type":"dige"#),
        ("truncated: after a value", r#"[{"type":"digest""#),
        ("truncated: after an object", r#"[{"type":"digest"},"#),
        (
            "missing comma between events",
            r#"[{"type":"digest"} {"type":"digest"}]"#,
        ),
        ("a lone comma", "[,]"),
        ("a trailing comma in the array", r#"[{"type":"digest"},]"#),
        ("a trailing comma in an object", r#"[{"type":"digest",}]"#),
        ("single quotes", "[{'type':'digest'}]"),
        ("an unquoted key", r#"[{type:"digest"}]"#),
        ("an extra closing brace", r#"[{"type":"digest"}}]"#),
        ("a comment", r#"[/* c */ {"type":"digest"}]"#),
        ("a bare NaN", "[NaN]"),
        ("an invalid escape", r#"[{"type":"dig\qest"}]"#),
        ("a raw newline in a string", "[{\"type\":\"dig\nest\"}]"),
        ("a byte-order mark", "\u{feff}[{\"type\":\"digest\"}]"),
        ("the empty body", ""),
        ("only whitespace", " \n\t "),
        ("an object instead of an array", r#"{"type":"digest"}"#),
        ("a string instead of an array", r#""digest""#),
        ("a number instead of an array", "42"),
        ("null instead of an array", "null"),
        ("true instead of an array", "true"),
        ("trailing garbage", r#"[{"type":"digest"}] junk"#),
        ("two arrays", "[][]"),
        ("an extra closing bracket", r#"[{"type":"digest"}]]"#),
        ("a NUL after the array", "[]\0"),
    ] {
        cases.push(json_body(what, body, At::Any));
    }
    cases.push(json_body(
        "invalid UTF-8 in a string",
        b"[{\"type\":\"dig\xffest\"}]",
        At::Any,
    ));
    cases.push(json_body(
        "a lone surrogate escape",
        r#"[{"type":"retention","table":"\ud800","deleted_records":1}]"#,
        At::Any,
    ));
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    cases.push(json_body("300 nested arrays", deep, At::Any));
    for (what, element) in [
        ("a number as an event", "42"),
        ("a string as an event", r#""digest""#),
        ("null as an event", "null"),
        ("true as an event", "true"),
        ("an empty array as an event", "[]"),
        ("an array as an event", r#"["digest"]"#),
        (
            "an array holding every field as an event",
            r#"["transcription",null,null,null,null,null,null,null,null,null,null,null,null,null,null,null]"#,
        ),
    ] {
        cases.push(json_body(
            what,
            format!(r#"[{{"type":"digest"}},{element}]"#),
            At::Event(1, None),
        ));
    }
    cases
}

fn field_cases() -> Vec<Case> {
    let digest = json!({"type":"digest"});
    let mut cases = vec![
        json_body(
            "a duplicate key",
            r#"[{"type":"digest","type":"fact"}]"#,
            At::Event(0, None),
        ),
        json_body(
            "a duplicate field",
            r#"[{"type":"fact","hallucinated":true,"hallucinated":false,"atomic":true,"citation_coverage":1}]"#,
            At::Event(0, None),
        ),
        json_body(
            "missing type",
            r#"[{"hallucinated":true}]"#,
            At::Event(0, None),
        ),
        json_body("an empty object", "[{}]", At::Event(0, None)),
    ];
    for (what, kind) in [
        ("unknown type", json!("meeting")),
        ("empty type", json!("")),
        ("type in capitals", json!("Digest")),
        ("type with a space", json!(" digest")),
    ] {
        cases.push(second(what, json!({"type": kind}), Some("type")));
    }
    for (what, kind) in [
        ("type as a number", json!(1)),
        ("type as null", Value::Null),
    ] {
        cases.push(second(what, json!({"type": kind}), Some("type")));
    }
    for (what, event, field) in [
        (
            "unknown field",
            with(digest.clone(), "colour", json!("red")),
            "colour",
        ),
        (
            "a digest with a table",
            with(digest.clone(), "table", json!("facts")),
            "table",
        ),
        (
            "a transcription with enabled",
            json!({"type":"transcription","enabled":true}),
            "enabled",
        ),
        (
            "a fact with a lock name",
            with(fact(false, 0.9), "name", json!("n")),
            "name",
        ),
        (
            "a retention run with hallucinated",
            with(retention(json!(1)), "hallucinated", json!(true)),
            "hallucinated",
        ),
        (
            "a lock release with a pid",
            json!({"type":"lock_released","name":"n","holder":"h","pid":5}),
            "pid",
        ),
        (
            "a CoVe config with cove",
            json!({"type":"cove_config","enabled":true,"threshold":0.5,"cove":null,"rounds":1}),
            "rounds",
        ),
        (
            "an unknown field in cove",
            with(
                fact(false, 0.9),
                "cove",
                json!({"confidence":0.5,"rounds":1,"x":1}),
            ),
            "cove.x",
        ),
        (
            "hallucinated as a number",
            with(fact(false, 0.9), "hallucinated", json!(1)),
            "hallucinated",
        ),
        (
            "atomic as a string",
            with(fact(false, 0.9), "atomic", json!("yes")),
            "atomic",
        ),
        (
            "hallucinated as the string true",
            with(fact(false, 0.9), "hallucinated", json!("true")),
            "hallucinated",
        ),
        (
            "dry_run as a string",
            with(retention(json!(1)), "dry_run", json!("false")),
            "dry_run",
        ),
        (
            "enabled as 0",
            json!({"type":"cove_config","enabled":0,"threshold":0.5}),
            "enabled",
        ),
        (
            "error as a number",
            with(retention(json!(1)), "error", json!(5)),
            "error",
        ),
        (
            "cove as a number",
            with(fact(false, 0.9), "cove", json!(0.9)),
            "cove",
        ),
    ] {
        cases.push(second(what, event, Some(field)));
    }
    // Each verdict of a fact is optional (absent or null: not known), so a fact without
    // `hallucinated`, `atomic` or `citation_coverage` is valid: tests/e2e.rs checks what it counts.
    for (what, event, field) in [
        (
            "a retention run without a table",
            json!({"type":"retention","deleted_records":1}),
            "table",
        ),
        (
            "a retention run without deleted_records",
            json!({"type":"retention","table":"facts"}),
            "deleted_records",
        ),
        (
            "a lock without a name",
            json!({"type":"lock_acquired","holder":"h"}),
            "name",
        ),
        (
            "a lock without a holder",
            json!({"type":"lock_acquired","name":"n"}),
            "holder",
        ),
        (
            "a CoVe config without enabled",
            json!({"type":"cove_config","threshold":0.5}),
            "enabled",
        ),
        (
            "a CoVe config without a threshold",
            json!({"type":"cove_config","enabled":true}),
            "threshold",
        ),
        (
            "cove without rounds",
            with(fact(false, 0.9), "cove", json!({"confidence":0.5})),
            "cove.rounds",
        ),
        (
            "cove without a confidence",
            with(fact(false, 0.9), "cove", json!({"rounds":2})),
            "cove.confidence",
        ),
    ] {
        cases.push(second(what, event, Some(field)));
    }
    cases
}

fn number_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let coverage = |v: Value| with(fact(false, 0.9), "citation_coverage", v);
    for (what, v) in [
        ("coverage above 1", json!(1.5)),
        ("coverage just above 1", json!(1.000_000_1)),
        ("coverage below 0", json!(-0.01)),
        ("coverage of -1e-300", json!(-1e-300)),
        ("coverage as a string", json!("0.5")),
        ("coverage as the string NaN", json!("NaN")),
        ("coverage as the string Infinity", json!("Infinity")),
        ("coverage as a boolean", json!(true)),
    ] {
        cases.push(second(what, coverage(v), Some("citation_coverage")));
    }
    cases.push(json_body(
        "coverage beyond f64",
        r#"[{"type":"fact","hallucinated":false,"atomic":true,"citation_coverage":1e999}]"#,
        At::Event(0, Some("citation_coverage")),
    ));
    let cove = |confidence: Value, rounds: Value| {
        with(
            fact(false, 0.9),
            "cove",
            json!({"confidence": confidence, "rounds": rounds}),
        )
    };
    for (what, c, r, field) in [
        ("confidence above 1", json!(2), json!(1), "cove.confidence"),
        ("confidence below 0", json!(-1), json!(1), "cove.confidence"),
        (
            "confidence as a string",
            json!("high"),
            json!(1),
            "cove.confidence",
        ),
        ("zero rounds", json!(0.5), json!(0), "cove.rounds"),
        ("1001 rounds", json!(0.5), json!(1001), "cove.rounds"),
        ("negative rounds", json!(0.5), json!(-1), "cove.rounds"),
        ("fractional rounds", json!(0.5), json!(1.5), "cove.rounds"),
        (
            "2^32 rounds",
            json!(0.5),
            json!(4_294_967_296u64),
            "cove.rounds",
        ),
        ("rounds as a string", json!(0.5), json!("2"), "cove.rounds"),
    ] {
        cases.push(second(what, cove(c, r), Some(field)));
    }
    for (what, v) in [
        ("threshold above 1", json!(7)),
        ("threshold below 0", json!(-0.1)),
        ("threshold as a string", json!("0.7")),
    ] {
        cases.push(second(
            what,
            json!({"type":"cove_config","enabled":true,"threshold":v}),
            Some("threshold"),
        ));
    }
    for (what, v) in [
        ("negative deleted records", json!(-5)),
        ("fractional deleted records", json!(1.5)),
        ("deleted records written as a float", json!(1e3)),
        ("deleted records as a string", json!("5")),
        (
            "deleted records of 2^53 + 1",
            json!(9_007_199_254_740_993u64),
        ),
        ("deleted records of 2^63 - 1", json!(i64::MAX)),
        ("deleted records of 2^64 - 1", json!(u64::MAX)),
    ] {
        cases.push(second(what, retention(v), Some("deleted_records")));
    }
    cases.push(json_body(
        "deleted records of 2^64",
        r#"[{"type":"retention","table":"facts","deleted_records":18446744073709551616}]"#,
        At::Event(0, Some("deleted_records")),
    ));
    for (what, v) in [
        ("a pid of 0", json!(0)),
        ("a negative pid", json!(-1)),
        ("a pid of 2^31", json!(2_147_483_648u64)),
        ("a pid of 2^32 - 1", json!(u32::MAX)),
        ("a pid of 2^32", json!(4_294_967_296u64)),
        ("a fractional pid", json!(1.5)),
        ("a pid as a string", json!("42")),
    ] {
        cases.push(second(what, lock(v), Some("pid")));
    }
    cases
}

fn name_cases() -> Vec<Case> {
    let table = |name: Value| json!({"type":"retention","table":name,"deleted_records":1});
    let mut cases = Vec::new();
    for (what, name) in [
        ("an empty table name", json!("")),
        ("a table name of 129 bytes", json!("t".repeat(129))),
        (
            "a table name of 129 bytes in Cyrillic",
            json!(format!("{}t", "я".repeat(64))),
        ),
        ("a newline in a table name", json!("a\nb")),
        ("a tab in a table name", json!("a\tb")),
        ("a NUL in a table name", json!("a\u{0}b")),
        ("a DEL in a table name", json!("a\u{7f}b")),
        ("a C1 control in a table name", json!("a\u{85}b")),
        ("a table name as a number", json!(5)),
        ("a table name as an array", json!(["facts"])),
    ] {
        cases.push(second(what, table(name), Some("table")));
    }
    for (what, event, field) in [
        (
            "an empty lock name",
            json!({"type":"lock_acquired","name":"","holder":"h"}),
            "name",
        ),
        (
            "a holder of 200 bytes",
            json!({"type":"lock_acquired","name":"n","holder":"h".repeat(200)}),
            "holder",
        ),
        (
            "a control character in a host",
            json!({"type":"lock_acquired","name":"n","holder":"h","host":"a\rb"}),
            "host",
        ),
        (
            "an empty host",
            json!({"type":"lock_acquired","name":"n","holder":"h","host":""}),
            "host",
        ),
        (
            "a newline in a released lock's holder",
            json!({"type":"lock_released","name":"n","holder":"a\nb"}),
            "holder",
        ),
    ] {
        cases.push(second(what, event, Some(field)));
    }
    cases
}

fn time_cases() -> Vec<Case> {
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let mut cases = Vec::new();
    for (what, time) in [
        ("a time that is a word", json!("yesterday")),
        ("an empty time", json!("")),
        ("a date without a time", json!("2026-11-24")),
        ("a time without an offset", json!("2026-11-24T09:30:00")),
        ("a time without seconds", json!("2026-11-24T09:30Z")),
        ("an offset of +24:00", json!("2026-11-24T09:30:00+24:00")),
        ("an offset of -25:00", json!("2026-11-24T09:30:00-25:00")),
        ("offset minutes of 60", json!("2026-11-24T09:30:00+03:60")),
        (
            "an offset without a colon",
            json!("2026-11-24T09:30:00+0300"),
        ),
        ("an offset of hours only", json!("2026-11-24T09:30:00+03")),
        ("month 13", json!("2026-13-01T00:00:00Z")),
        ("month 0", json!("2026-00-01T00:00:00Z")),
        ("February 30", json!("2026-02-30T00:00:00Z")),
        ("hour 24", json!("2026-11-24T24:00:00Z")),
        ("minute 60", json!("2026-11-24T09:60:00Z")),
        ("second 61", json!("2026-11-24T09:30:61Z")),
        ("an empty fraction", json!("2026-11-24T09:30:00.Z")),
        ("a comma fraction", json!("2026-11-24T09:30:00,5Z")),
        (
            "a time-zone annotation",
            json!("2026-11-24T09:30:00Z[Europe/Berlin]"),
        ),
        ("a leading space", json!(" 2026-11-24T09:30:00Z")),
        ("a trailing Z twice", json!("2026-11-24T09:30:00ZZ")),
        ("a two-digit year", json!("26-11-24T09:30:00Z")),
        ("a five-digit year", json!("+02026-11-24T09:30:00Z")),
        ("a week date", json!("2026-W48-2T09:30:00Z")),
        ("a time before 1970", json!("1969-12-31T23:59:59Z")),
        ("a time two hours ahead", json!(future)),
        ("a time as a number", json!(1_764_000_000)),
    ] {
        cases.push(second(
            what,
            json!({"type":"digest","time":time}),
            Some("time"),
        ));
    }
    cases
}

fn ndjson_cases() -> Vec<Case> {
    let d = r#"{"type":"digest"}"#;
    let mut cases = vec![
        ndjson(
            "two objects on a line",
            format!("{d}\n{d}{d}\n"),
            At::Line(2, 1, None),
        ),
        ndjson(
            "two objects on a line with a space",
            format!("{d} {d}\n"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "an object followed by garbage",
            format!("{d} junk\n"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "an object followed by a comma",
            format!("{d},\n{d}\n"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "objects separated by a lone carriage return",
            format!("{d}\r{d}\n"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "a lone carriage return at the end",
            format!("{d}\n{d}\r"),
            At::Line(2, 1, None),
        ),
        ndjson(
            "objects separated by U+2028",
            format!("{d}\u{2028}{d}\n"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "objects separated by U+2029",
            format!("{d}\u{2029}{d}"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "a line holding U+2028 only",
            format!("{d}\n\u{2028}\n{d}\n"),
            At::Line(2, 1, None),
        ),
        ndjson(
            "a line holding a no-break space only",
            format!("{d}\n\u{a0}\n"),
            At::Line(2, 1, None),
        ),
        ndjson(
            "an object followed by a closing brace",
            format!("{d}}}\n"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "an object followed by an open brace",
            format!("{d}{{\n"),
            At::Line(1, 0, None),
        ),
        ndjson(
            "a line holding an array",
            format!("{d}\n[{d}]\n"),
            At::Line(2, 1, None),
        ),
        ndjson("a line holding a number", "42\n", At::Line(1, 0, None)),
        ndjson(
            "a line holding a string",
            "\"digest\"\n",
            At::Line(1, 0, None),
        ),
        ndjson("a line holding null", "null\n", At::Line(1, 0, None)),
        ndjson(
            "a bad line after blank lines",
            format!("{d}\n\n\r\n{{\"type\":\"digest\",}}\n"),
            At::Line(4, 1, None),
        ),
        ndjson(
            "an unknown field on the third line",
            format!("{d}\n{d}\n{{\"type\":\"digest\",\"x\":1}}\n"),
            At::Line(3, 2, Some("x")),
        ),
        ndjson(
            "an invalid value on the second line",
            format!(
                "{d}\r\n{}\r\n",
                with(fact(false, 0.9), "citation_coverage", json!(2))
            ),
            At::Line(2, 1, Some("citation_coverage")),
        ),
        ndjson(
            "a truncated last line",
            format!("{d}\n{{\"type\":"),
            At::Line(2, 1, Some("type")),
        ),
        ndjson("not UTF-8", b"{\"type\":\"digest\"}\n\xff\xfe\n", At::Body),
        ndjson(
            "an object spread over two lines",
            "{\"type\":\n\"digest\"}\n",
            At::Line(1, 0, Some("type")),
        ),
    ];
    cases.push(ndjson(
        "a time with an offset of +24:00 on a line",
        format!("{d}\n{{\"type\":\"digest\",\"time\":\"2026-11-24T09:30:00+24:00\"}}\n"),
        At::Line(2, 1, Some("time")),
    ));
    cases
}

fn framing_cases() -> Vec<Case> {
    let body = br#"[{"type":"digest"}]"#;
    let n = body.len().to_string();
    let cl = format!("content-length: {n}");
    let mut cases = Vec::new();
    for (what, headers) in [
        (
            "a Content-Length that is a word",
            vec!["content-length: abc"],
        ),
        ("a negative Content-Length", vec!["content-length: -1"]),
        (
            "a Content-Length with a plus sign",
            vec!["content-length: +19"],
        ),
        ("a hexadecimal Content-Length", vec!["content-length: 0x13"]),
        (
            "a Content-Length with a space inside",
            vec!["content-length: 1 9"],
        ),
        (
            "a Content-Length beyond 64 bits",
            vec!["content-length: 99999999999999999999"],
        ),
        ("two equal Content-Length headers", vec![&cl, &cl]),
        (
            "two different Content-Length headers",
            vec![&cl, "content-length: 5"],
        ),
        (
            "Content-Length and Transfer-Encoding",
            vec![&cl, "transfer-encoding: chunked"],
        ),
        (
            "a Transfer-Encoding other than chunked",
            vec!["transfer-encoding: gzip"],
        ),
        (
            "chunked then gzip",
            vec!["transfer-encoding: chunked, gzip"],
        ),
        (
            "two Transfer-Encoding headers",
            vec!["transfer-encoding: chunked", "transfer-encoding: chunked"],
        ),
        ("two Host headers", vec![&cl, "host: other"]),
        ("a header without a colon", vec![&cl, "x-broken"]),
        ("a space in a header name", vec![&cl, "x broken: 1"]),
        ("a space before the colon", vec!["content-length : 19"]),
        ("a folded header", vec![&cl, "x-a: 1", " folded"]),
        ("a NUL in a header value", vec![&cl, "x-a: a\0b"]),
    ] {
        cases.push(http_layer(what, framed(&headers, body), 400));
    }
    let many: Vec<String> = (0..100).map(|i| format!("x-h{i}: v")).collect();
    let mut headers: Vec<&str> = many.iter().map(String::as_str).collect();
    headers.push(&cl);
    cases.push(
        http_layer("100 headers", framed(&headers, body), 431).saying("more than 96 headers"),
    );
    let huge = format!("x-huge: {}", "h".repeat(140 * 1024));
    cases.push(http_layer(
        "a 140 KiB header",
        framed(&[&cl, &huge], body),
        431,
    ));
    let long_url = format!("POST /v1/events?{} HTTP/1.1", "u".repeat(100 * 1024));
    cases.push(
        http_layer(
            "a 100 KiB URL",
            raw_head(&long_url, &["host: bridge", &cl], body),
            400,
        )
        .saying("URL"),
    );
    for (what, line) in [
        ("a garbage request line", "GARBAGE"),
        ("a request line without a version", "POST /v1/events"),
        ("an unknown HTTP version", "POST /v1/events HTTP/9.9"),
        ("a space in the path", "POST /v1/ev ents HTTP/1.1"),
        ("HTTP/2 over HTTP/1", "POST /v1/events HTTP/2.0"),
    ] {
        cases.push(http_layer(
            what,
            raw_head(line, &["host: bridge", &cl], body),
            400,
        ));
    }
    cases.push(http_layer(
        "an HTTP/1.1 request without Host",
        raw_head(
            "POST /v1/events HTTP/1.1",
            &["content-type: application/json", &cl],
            body,
        ),
        400,
    ));
    cases.push(http_layer(
        "Transfer-Encoding in an HTTP/1.0 request",
        raw_head(
            "POST /v1/events HTTP/1.0",
            &[
                "content-type: application/json",
                "transfer-encoding: chunked",
            ],
            b"2\r\n[]\r\n0\r\n\r\n",
        ),
        400,
    ));
    cases.push(http_layer(
        "an HTTP/1.0 POST without a length",
        raw_head(
            "POST /v1/events HTTP/1.0",
            &[
                "content-type: application/json",
                &format!("authorization: Bearer {TOKEN}"),
            ],
            b"",
        ),
        400,
    ));
    for (what, chunks) in [
        ("a chunk size that is a word", &b"zz\r\n[]\r\n0\r\n\r\n"[..]),
        ("a chunk without its CRLF", b"2\r\n[]xx0\r\n\r\n"),
        (
            "a chunk size beyond 64 bits",
            b"fffffffffffffffffffff\r\n[]\r\n0\r\n\r\n",
        ),
    ] {
        cases.push(case(
            what,
            framed(&["transfer-encoding: chunked"], chunks),
            400,
            At::Body,
        ));
    }
    cases.push(case(
        "a body shorter than its Content-Length",
        framed(&["content-length: 1000"], body),
        408,
        At::Body,
    ));
    cases.push(case(
        "a chunked body that stops",
        framed(&["transfer-encoding: chunked"], b"13\r\n[{\"type\":"),
        408,
        At::Body,
    ));
    cases
}

fn request_cases() -> Vec<Case> {
    let body = br#"[{"type":"digest"}]"#;
    let mut cases = Vec::new();
    for ct in [
        Some("text/plain"),
        None,
        Some("application/jsonx"),
        Some("application/json-seq"),
        Some("multipart/form-data; boundary=x"),
        Some("application/x-www-form-urlencoded"),
    ] {
        cases.push(case(
            format!("content type {ct:?}"),
            post(ct, Some(TOKEN), body),
            415,
            At::Body,
        ));
    }
    cases.push(case(
        "no token",
        post(Some("application/json"), None, body),
        401,
        At::Body,
    ));
    cases.push(case(
        "a wrong token",
        post(Some("application/json"), Some("guess"), body),
        401,
        At::Body,
    ));
    cases.push(case(
        "the token with a suffix",
        post(Some("application/json"), Some(&format!("{TOKEN}x")), body),
        401,
        At::Body,
    ));
    for auth in [
        format!("authorization: Basic {TOKEN}"),
        "authorization: Bearer".to_owned(),
        format!("authorization: {TOKEN}"),
    ] {
        let headers = [
            "host: bridge",
            "connection: close",
            "content-type: application/json",
            "content-length: 19",
            auth.as_str(),
        ];
        cases.push(case(
            format!("the header `{auth}`").replace(TOKEN, "<token>"),
            raw_head("POST /v1/events HTTP/1.1", &headers, body),
            401,
            At::Body,
        ));
    }
    for path in ["/v1/event", "/v1/events/", "/V1/EVENTS"] {
        let line = format!("POST {path} HTTP/1.1");
        cases.push(case(
            format!("POST {path}"),
            raw_head(&line, &["host: bridge", "content-length: 19"], body),
            404,
            At::Body,
        ));
    }
    let big = format!("[{}]", vec![r#"{"type":"digest"}"#; 6000].join(","));
    cases.push(case(
        "a body over the limit",
        post(Some("application/json"), Some(TOKEN), big.as_bytes()),
        413,
        At::Body,
    ));
    let mut chunked = Vec::new();
    for _ in 0..100 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", " ".repeat(0x400)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    cases.push(case(
        "a chunked body over the limit",
        framed(&["transfer-encoding: chunked"], &chunked),
        413,
        At::Body,
    ));
    cases.push(case(
        "a Content-Length over the limit",
        framed(&["content-length: 1000000000"], b"[]"),
        413,
        At::Body,
    ));
    cases
}

/// Batches with many distinct names that end in an invalid event: no name of theirs may show up.
fn cardinality_cases() -> Vec<Case> {
    let mut tables: Vec<Value> = (0..500)
        .map(|i| json!({"type":"retention","table":format!("suite_table_{i}"),"deleted_records":1}))
        .collect();
    tables.push(retention(json!(-1)));
    let mut locks: Vec<Value> = (0..300)
        .map(|i| json!({"type":"lock_acquired","name":format!("suite_lock_{i}"),"holder":"w"}))
        .collect();
    locks.push(json!({"type":"lock_acquired","name":"suite_lock_7","holder":"w"}));
    let mut facts: Vec<Value> = (0..399).map(|_| fact(false, 0.5)).collect();
    facts.push(with(fact(false, 0.5), "atomic", json!("yes")));
    vec![
        json_body(
            "500 tables, then a bad event",
            Value::Array(tables).to_string(),
            At::Event(500, Some("deleted_records")),
        ),
        json_body(
            "300 locks, then one of them again",
            Value::Array(locks).to_string(),
            At::Event(300, Some("name")),
        ),
        json_body(
            "400 facts, the last one bad",
            Value::Array(facts).to_string(),
            At::Event(399, Some("atomic")),
        ),
        second(
            "releasing a lock nobody holds",
            json!({"type":"lock_released","name":"nobody","holder":"h"}),
            Some("name"),
        ),
    ]
}

fn all_cases() -> Vec<Case> {
    [
        syntax_cases(),
        field_cases(),
        number_cases(),
        name_cases(),
        time_cases(),
        ndjson_cases(),
        framing_cases(),
        request_cases(),
        cardinality_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Everything wrong with one answer.
fn check(case: &Case, response: &RawResponse) -> Vec<String> {
    let mut problems = Vec::new();
    if response.status != case.status {
        problems.push(format!(
            "status {} (expected {})",
            response.status, case.status
        ));
    }
    if response.header("content-type") != Some("application/json") {
        problems.push(format!(
            "content type {:?}",
            response.header("content-type")
        ));
    }
    let body = match response.json() {
        Ok(body) => body,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    if body["error"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("no error message: {body}"));
    }
    if body.to_string().contains(TOKEN) {
        problems.push("the token is in the answer".into());
    }
    let got = (
        body["index"].as_u64().map(|i| i as usize),
        body["field"].as_str().map(str::to_owned),
        body["line"].as_u64().map(|l| l as usize),
    );
    let expected = match &case.at {
        At::Any => None,
        At::Body => Some((None, None, None)),
        At::Event(i, f) => Some((Some(*i), f.map(str::to_owned), None)),
        At::Line(l, i, f) => Some((Some(*i), f.map(str::to_owned), Some(*l))),
    };
    if let Some(expected) = expected
        && got != expected
    {
        problems.push(format!(
            "(index, field, line) {got:?}, expected {expected:?}: {body}"
        ));
    }
    if let Some(words) = case.says
        && !body["error"].as_str().unwrap_or_default().contains(words)
    {
        problems.push(format!("the message does not say `{words}`: {body}"));
    }
    if response.status == 401 && response.header("www-authenticate").is_none() {
        problems.push("401 without WWW-Authenticate".into());
    }
    problems
}

/// The exposition without what requests themselves change (and the process's own CPU and
/// memory, which every request moves).
fn recorded(bridge: &Bridge) -> BTreeMap<String, f64> {
    bridge
        .scrape_with(Some(TOKEN))
        .into_iter()
        .filter(|(k, _)| {
            !k.starts_with("reflexio_ingest_requests_total")
                && !k.starts_with("reflexio_http_malformed_requests_total")
                && !k.starts_with("reflexio_store_")
                && !k.starts_with("process_")
        })
        .collect()
}

fn suite_bridge(dir: &std::path::Path) -> Bridge {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("write token");
    let store = dir.join("metrics.db");
    Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--auth-token-file",
        token.to_str().expect("path"),
        "--body-limit",
        "64KiB",
        "--body-timeout",
        "1s",
    ])
}

#[test]
fn every_malformed_request_gets_its_status_and_a_json_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = suite_bridge(dir.path());
    let seed = json!([fact(true, 0.9), {"type":"lock_acquired","name":"seeded_lock","holder":"w"}]);
    let (status, body) = bridge.post(seed.to_string(), "application/json", Some(TOKEN));
    assert_eq!(status, 202, "{body}");
    let before = recorded(&bridge);

    let cases = all_cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        match raw_exchange(&bridge.addr, &case.request, Duration::from_secs(10)) {
            Ok(response) => {
                let problems = check(case, &response);
                if !problems.is_empty() {
                    failures.push(format!("{}: {}", case.what, problems.join("; ")));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.what)),
        }
    }
    let after = recorded(&bridge);
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| format!("{k} = {v} (was {:?})", before.get(k)))
        .collect();
    assert!(
        failures.is_empty() && changed.is_empty(),
        "{} of {} cases failed:\n{}\nchanged by refused requests:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        changed.join("\n")
    );

    // Each refusal is counted once, by how it ended.
    let counts = bridge.scrape_with(Some(TOKEN));
    let count = |counted: Counted| cases.iter().filter(|c| c.counted == counted).count() as f64;
    for outcome in [
        "invalid",
        "too_large",
        "unsupported_media_type",
        "unauthorized",
        "timed_out",
    ] {
        let series = format!("reflexio_ingest_requests_total{{outcome=\"{outcome}\"}}");
        assert_eq!(counts[&series], count(Counted::Ingest(outcome)), "{series}");
    }
    assert_eq!(
        counts["reflexio_http_malformed_requests_total"],
        count(Counted::HttpLayer)
    );
    assert!(!bridge.log_text().contains(TOKEN), "the token was logged");
}

#[test]
fn malformed_requests_are_counted_and_logged_at_a_bounded_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = suite_bridge(dir.path());
    const N: usize = 300;
    for i in 0..N {
        let request = if i % 2 == 0 {
            b"GARBAGE\r\n\r\n".to_vec()
        } else {
            framed(&["content-length: 2", "content-length: 3"], b"[]")
        };
        let response = raw_exchange(&bridge.addr, &request, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status, 400, "request {i}");
    }
    let counted = |b: &Bridge| b.scrape_with(Some(TOKEN))["reflexio_http_malformed_requests_total"];
    assert_eq!(counted(&bridge), N as f64);
    // Give a delayed summary line the time to appear, then count what was logged about them.
    std::thread::sleep(Duration::from_millis(300));
    let log = bridge.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("actix_http") || l.contains("malformed"))
        .collect();
    assert!(
        lines.len() <= 3,
        "{} log lines for {N} malformed requests:\n{}",
        lines.len(),
        lines[..lines.len().min(10)].join("\n")
    );
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")),
        "malformed requests logged an ERROR:\n{log}"
    );
}
