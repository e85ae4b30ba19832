//! The real binary on a free loopback port: ingest and exact values, bad requests,
//! authentication, readiness, the command line, and graceful shutdown.

mod common;

use common::{BIN, Bridge, fact};
use reflexio_otel::{Recorder, StoreOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

const TOKEN: &str = "e2e-s3cret-token";

fn token_file(dir: &std::path::Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    path.to_str().expect("path").to_owned()
}

/// The store a stopped bridge left behind, as a recorder loads it.
fn stored(path: &std::path::Path) -> reflexio_otel::Snapshot {
    let r = Recorder::builder()
        .without_upkeep_thread()
        .store(StoreOptions::new(path))
        .build();
    let s = (*r.snapshot()).clone();
    r.shutdown().expect("close");
    s
}

#[test]
fn a_known_batch_gives_exact_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&["--store", store.to_str().expect("path")]);
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let two_hours_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    let mut events: Vec<Value> = (0..10).map(|i| fact(i == 3, 0.98)).collect();
    events[5]["atomic"] = json!(false);
    events[6]["cove"] = Value::Null;
    events.extend([
        json!({"type":"transcription"}),
        json!({"type":"transcription","time": an_hour_ago.to_string()}),
        json!({"type":"digest"}),
        json!({"type":"retention","table":"facts","deleted_records":120,"dry_run":false,"error":null}),
        json!({"type":"retention","table":"facts","deleted_records":9,"dry_run":true}),
        json!({"type":"retention","table":"audio","deleted_records":0,"error":"database is locked"}),
        json!({"type":"cove_config","enabled":true,"threshold":0.7}),
        json!({"type":"lock_acquired","name":"daily_digest","holder":"worker-1","pid":4242}),
        json!({"type":"lock_acquired","name":"retention","holder":"worker-7","time": two_hours_ago.to_string()}),
    ]);
    let (status, body) = bridge.post(Value::Array(events).to_string(), "application/json", None);
    assert_eq!((status, &body), (202, &json!({"accepted": 19})));

    let ndjson = "{\"type\":\"digest\"}\n\n{\"type\":\"lock_released\",\"name\":\"daily_digest\",\"holder\":\"worker-1\"}\n";
    let (status, body) = bridge.post(ndjson, "application/x-ndjson; charset=utf-8", None);
    assert_eq!((status, &body), (202, &json!({"accepted": 2})));

    let v = bridge.scrape();
    let expect = [
        ("reflexio_facts_total", 10.0),
        ("reflexio_facts_24h", 10.0),
        ("reflexio_hallucination_rate_24h", 0.1),
        ("reflexio_hallucinated_facts_total", 1.0),
        ("reflexio_citation_coverage_24h", 0.98),
        ("reflexio_atomicity_violations_24h", 1.0),
        ("reflexio_atomicity_violations_total", 1.0),
        ("reflexio_cove_verified_facts_24h", 9.0),
        ("reflexio_cove_avg_confidence_24h", 0.9),
        ("reflexio_cove_avg_verification_rounds_24h", 2.0),
        ("reflexio_transcriptions_total", 2.0),
        ("reflexio_digests_total", 2.0),
        ("reflexio_retention_operations_7d", 3.0),
        ("reflexio_retention_deleted_records_7d", 120.0),
        ("reflexio_retention_errors_7d", 1.0),
        ("reflexio_retention_operations_total{table=\"facts\"}", 2.0),
        ("reflexio_retention_errors_total{table=\"audio\"}", 1.0),
        ("reflexio_cove_enabled", 1.0),
        ("reflexio_cove_confidence_threshold", 0.7),
        ("reflexio_active_locks", 1.0),
        ("reflexio_stale_locks", 1.0),
        ("reflexio_citation_coverage_count", 10.0),
        ("reflexio_cove_verification_rounds_bucket{le=\"2\"}", 9.0),
        ("reflexio_ingest_events_total", 21.0),
        ("reflexio_ingest_requests_total{outcome=\"accepted\"}", 2.0),
        ("reflexio_store_healthy", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(v.get(series), Some(&value), "{series}");
    }
    let (status, content_type, _) = bridge.get("/metrics/prometheus", None);
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/plain; version=0.0.4")
    );

    // Acknowledged means written: a restart has every value.
    assert!(bridge.terminate().success());
    let s = stored(&store);
    assert_eq!(s.totals.facts, 10);
    assert_eq!(s.facts_24h.hallucination_rate(), 0.1);
    assert_eq!(s.locks.active, 1);
}

/// One bad request: what to send, and the status, index and field expected back.
struct Bad {
    what: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    token: Option<&'static str>,
    status: u16,
    index: Option<usize>,
    field: Option<&'static str>,
}

fn bad(
    what: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    index: Option<usize>,
    field: Option<&'static str>,
) -> Bad {
    Bad {
        what,
        body: body.into(),
        content_type: Some("application/json"),
        token: Some(TOKEN),
        status,
        index,
        field,
    }
}

fn fact_with(key: &str, value: Value) -> String {
    let mut f = fact(false, 0.9);
    f[key] = value;
    json!([{"type":"digest"}, f]).to_string()
}

fn bad_requests() -> Vec<Bad> {
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let mut cases = vec![
        bad(
            "truncated JSON",
            r#"[{"type":"digest"},{"type":"#,
            400,
            Some(1),
            Some("type"),
        ),
        bad(
            "malformed JSON",
            r#"[{"type":"digest"} {"type":"digest"}]"#,
            400,
            None,
            None,
        ),
        bad("not an array", r#"{"type":"digest"}"#, 400, None, None),
        bad(
            "trailing garbage",
            r#"[{"type":"digest"}] junk"#,
            400,
            None,
            None,
        ),
        bad(
            "an event that is not an object",
            r#"[{"type":"digest"}, 42]"#,
            400,
            Some(1),
            None,
        ),
        bad(
            "boolean as a number",
            fact_with("hallucinated", json!(1)),
            400,
            Some(1),
            Some("hallucinated"),
        ),
        bad(
            "boolean as a string",
            fact_with("atomic", json!("yes")),
            400,
            Some(1),
            Some("atomic"),
        ),
        bad(
            "NaN as a string",
            fact_with("citation_coverage", json!("NaN")),
            400,
            Some(1),
            Some("citation_coverage"),
        ),
        bad(
            "Infinity as a string",
            fact_with("citation_coverage", json!("Infinity")),
            400,
            Some(1),
            Some("citation_coverage"),
        ),
        bad(
            "a number beyond f64",
            r#"[{"type":"fact","hallucinated":false,"atomic":true,"citation_coverage":1e999}]"#,
            400,
            Some(0),
            Some("citation_coverage"),
        ),
        bad(
            "coverage above 1",
            fact_with("citation_coverage", json!(1.5)),
            400,
            Some(1),
            Some("citation_coverage"),
        ),
        bad(
            "coverage below 0",
            fact_with("citation_coverage", json!(-0.01)),
            400,
            Some(1),
            Some("citation_coverage"),
        ),
        bad(
            "confidence above 1",
            fact_with("cove", json!({"confidence": 2, "rounds": 1})),
            400,
            Some(1),
            Some("cove.confidence"),
        ),
        bad(
            "zero rounds",
            fact_with("cove", json!({"confidence": 0.5, "rounds": 0})),
            400,
            Some(1),
            Some("cove.rounds"),
        ),
        bad(
            "too many rounds",
            fact_with("cove", json!({"confidence": 0.5, "rounds": 1001})),
            400,
            Some(1),
            Some("cove.rounds"),
        ),
        bad(
            "negative rounds",
            fact_with("cove", json!({"confidence": 0.5, "rounds": -1})),
            400,
            Some(1),
            Some("cove.rounds"),
        ),
        bad(
            "unknown field in cove",
            fact_with("cove", json!({"confidence": 0.5, "rounds": 1, "x": 1})),
            400,
            Some(1),
            Some("cove.x"),
        ),
        bad(
            "negative deleted records",
            r#"[{"type":"retention","table":"facts","deleted_records":-5}]"#,
            400,
            Some(0),
            Some("deleted_records"),
        ),
        bad(
            "fractional deleted records",
            r#"[{"type":"retention","table":"facts","deleted_records":1.5}]"#,
            400,
            Some(0),
            Some("deleted_records"),
        ),
        bad(
            "empty table name",
            r#"[{"type":"retention","table":"","deleted_records":1}]"#,
            400,
            Some(0),
            Some("table"),
        ),
        bad(
            "control character in a name",
            "[{\"type\":\"lock_acquired\",\"name\":\"a\\nb\",\"holder\":\"w\"}]",
            400,
            Some(0),
            Some("name"),
        ),
        bad(
            "unknown event type",
            r#"[{"type":"meeting"}]"#,
            400,
            Some(0),
            Some("type"),
        ),
        bad(
            "missing type",
            r#"[{"hallucinated":true}]"#,
            400,
            Some(0),
            None,
        ),
        bad(
            "missing field",
            r#"[{"type":"fact","hallucinated":false,"atomic":true}]"#,
            400,
            Some(0),
            Some("citation_coverage"),
        ),
        bad(
            "unknown field",
            r#"[{"type":"digest","colour":"red"}]"#,
            400,
            Some(0),
            Some("colour"),
        ),
        bad(
            "field of another type",
            r#"[{"type":"digest","table":"facts"}]"#,
            400,
            Some(0),
            Some("table"),
        ),
        bad(
            "threshold out of range",
            r#"[{"type":"cove_config","enabled":true,"threshold":7}]"#,
            400,
            Some(0),
            Some("threshold"),
        ),
        bad(
            "negative pid",
            r#"[{"type":"lock_acquired","name":"n","holder":"h","pid":-1}]"#,
            400,
            Some(0),
            Some("pid"),
        ),
        bad(
            "time that is not RFC 3339",
            r#"[{"type":"digest","time":"yesterday"}]"#,
            400,
            Some(0),
            Some("time"),
        ),
        bad(
            "time two hours ahead",
            format!(r#"[{{"type":"digest"}},{{"type":"digest","time":"{future}"}}]"#),
            400,
            Some(1),
            Some("time"),
        ),
        bad(
            "releasing a lock nobody holds",
            r#"[{"type":"digest"},{"type":"lock_released","name":"n","holder":"h"}]"#,
            400,
            Some(1),
            Some("name"),
        ),
        bad(
            "acquiring one lock twice",
            r#"[{"type":"lock_acquired","name":"n","holder":"h"},{"type":"lock_acquired","name":"n","holder":"h"}]"#,
            400,
            Some(1),
            Some("name"),
        ),
        bad(
            "body over the limit",
            format!("[{}]", vec![r#"{"type":"digest"}"#; 6000].join(",")),
            413,
            None,
            None,
        ),
    ];
    let ndjson = |what, body: &'static [u8], index, field| Bad {
        content_type: Some("application/x-ndjson"),
        ..bad(what, body, 400, index, field)
    };
    cases.extend([
        ndjson(
            "a bad NDJSON line",
            b"{\"type\":\"digest\"}\n{\"type\":\"digest\",}\n",
            Some(1),
            None,
        ),
        ndjson(
            "NDJSON that is not UTF-8",
            b"{\"type\":\"digest\"}\n\xff\xfe\n",
            None,
            None,
        ),
        Bad {
            content_type: Some("text/plain"),
            ..bad(
                "wrong content type",
                r#"[{"type":"digest"}]"#,
                415,
                None,
                None,
            )
        },
        Bad {
            content_type: None,
            ..bad("no content type", r#"[{"type":"digest"}]"#, 415, None, None)
        },
        Bad {
            token: None,
            ..bad("no token", r#"[{"type":"digest"}]"#, 401, None, None)
        },
        Bad {
            token: Some("guess"),
            ..bad("wrong token", r#"[{"type":"digest"}]"#, 401, None, None)
        },
    ]);
    cases
}

/// The exposition without what requests themselves change.
fn recorded(bridge: &Bridge) -> BTreeMap<String, f64> {
    bridge
        .scrape_with(Some(TOKEN))
        .into_iter()
        .filter(|(k, _)| {
            !k.starts_with("reflexio_ingest_requests_total") && !k.starts_with("reflexio_store_")
        })
        .collect()
}

#[test]
fn bad_requests_get_a_clear_error_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let token = token_file(dir.path());
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--auth-token-file",
        &token,
        "--body-limit",
        "64KiB",
    ]);
    let seed =
        json!([fact(true, 0.9), {"type":"lock_acquired","name":"daily_digest","holder":"w1"}]);
    let client = reqwest::blocking::Client::new();
    let (status, _) = bridge.post(seed.to_string(), "application/json", Some(TOKEN));
    assert_eq!(status, 202);
    let before = recorded(&bridge);

    let cases = bad_requests();
    assert!(cases.len() >= 20);
    for case in &cases {
        let mut req = client
            .post(bridge.url("/v1/events"))
            .body(case.body.clone());
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = case.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("POST");
        let status = resp.status().as_u16();
        let www_auth = resp.headers().contains_key("www-authenticate");
        let text = resp.text().expect("body");
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a JSON error ({e}): {text}", case.what));
        assert_eq!(status, case.status, "{}: {body}", case.what);
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{}: no error message: {body}",
            case.what
        );
        assert_eq!(
            body["index"].as_u64().map(|i| i as usize),
            case.index,
            "{}: {body}",
            case.what
        );
        assert_eq!(body["field"].as_str(), case.field, "{}: {body}", case.what);
        assert_eq!(www_auth, status == 401, "{}", case.what);
        assert!(!message.contains(TOKEN), "{}: the token leaked", case.what);
    }
    assert_eq!(
        recorded(&bridge),
        before,
        "a refused request changed a value"
    );
    let counts = bridge.scrape_with(Some(TOKEN));
    for (outcome, status) in [
        ("invalid", 400),
        ("too_large", 413),
        ("unsupported_media_type", 415),
        ("unauthorized", 401),
    ] {
        let expected = cases.iter().filter(|c| c.status == status).count() as f64;
        let series = format!("reflexio_ingest_requests_total{{outcome=\"{outcome}\"}}");
        assert_eq!(counts[&series], expected, "{series}");
    }
    assert!(!bridge.log_text().contains(TOKEN), "the token was logged");
}

#[test]
fn the_token_guards_ingest_and_scrapes_unless_metrics_are_public() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let token = token_file(dir.path());
    let args = [
        "--store",
        store.to_str().expect("path"),
        "--auth-token-file",
        &token,
    ];
    let bridge = Bridge::start(&args);
    assert_eq!(bridge.get("/metrics/prometheus", None).0, 401);
    assert_eq!(bridge.get("/metrics/prometheus", Some("wrong")).0, 401);
    assert_eq!(bridge.get("/metrics/prometheus", Some(TOKEN)).0, 200);
    assert_eq!(bridge.get("/healthz", None).0, 200);
    drop(bridge);

    let bridge = Bridge::start(&[&args[..], &["--public-metrics"]].concat());
    assert_eq!(bridge.get("/metrics/prometheus", None).0, 200);
    assert_eq!(bridge.post("[]", "application/json", None).0, 401);
    assert_eq!(bridge.post("[]", "application/json", Some(TOKEN)).0, 202);
}

#[test]
fn readiness_follows_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    std::fs::write(&store, vec![7u8; 4096]).expect("a damaged store");
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--flush-interval",
        "100ms",
    ]);
    let (status, _, body) = bridge.get("/readyz", None);
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("corrupt")),
        "{body}"
    );
    assert_eq!(bridge.get("/healthz", None).0, 200);
    // Ingest is refused (nothing could be made durable), scrapes still work.
    let (status, body) = bridge.post(
        json!([fact(false, 1.0)]).to_string(),
        "application/json",
        None,
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(bridge.scrape()["reflexio_store_healthy"], 0.0);

    std::fs::remove_file(&store).expect("move the damaged file away");
    assert!(common::eventually(Duration::from_secs(10), || bridge
        .get("/readyz", None)
        .0
        == 200));
    assert_eq!(
        bridge
            .post(
                json!([fact(false, 1.0)]).to_string(),
                "application/json",
                None
            )
            .0,
        202
    );
}

#[test]
fn sigterm_flushes_what_was_recorded_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    // With an hour between flushes, only the final flush on SIGTERM writes the demo's events.
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--demo",
        "--flush-interval",
        "1h",
    ]);
    assert!(common::eventually(Duration::from_secs(10), || {
        bridge.scrape()["reflexio_facts_total"] > 1000.0
    }));
    let scraped = bridge.scrape()["reflexio_facts_total"] as u64;
    let status = bridge.terminate();
    assert!(status.success(), "exit status {status}");
    let s = stored(&store);
    assert!(
        s.totals.facts >= scraped,
        "{} stored < {scraped} scraped",
        s.totals.facts
    );
    assert_eq!(s.locks.active, 0, "the demo released its locks");
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_setting() {
    let (code, help, _) = run(&["serve", "--help"], &[]);
    assert_eq!(code, 0);
    for setting in [
        "--listen",
        "--store",
        "--demo",
        "--otlp-endpoint",
        "--otlp-protocol",
        "--otlp-interval",
        "--auth-token-file",
        "--config",
        "--public-metrics",
        "--insecure-no-auth",
        "--body-limit",
        "--flush-interval",
        "--stale-lock-after",
        "--evict-locks-after",
        "--integrity-check-interval",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ] {
        assert!(help.contains(setting), "--help does not mention {setting}");
    }
    assert_eq!(run(&["--help"], &[]).0, 0);
}

#[test]
fn invalid_settings_exit_with_code_2_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, "otlp_interval = \"soon\"\n").expect("write");
    let config = config.to_str().expect("path");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 8] = [
        (&["serve", "--listen", "nowhere"], &[], "--listen"),
        (
            &["serve", "--otlp-interval", "fast"],
            &[],
            "--otlp-interval",
        ),
        (
            &["serve", "--otlp-endpoint", "collector:4317"],
            &[],
            "--otlp-endpoint",
        ),
        (
            &[
                "serve",
                "--otlp-protocol",
                "carrier-pigeon",
                "--otlp-endpoint",
                "http://c:4317",
            ],
            &[],
            "--otlp-protocol",
        ),
        (&["serve", "--body-limit", "huge"], &[], "--body-limit"),
        (
            &["serve", "--listen", "0.0.0.0:0"],
            &[],
            "--auth-token-file",
        ),
        (&["serve", "--config", config], &[], "otlp_interval"),
        (
            &["serve"],
            &[("REFLEXIO_BRIDGE_FLUSH_INTERVAL", "often")],
            "--flush-interval",
        ),
    ];
    for (args, env, setting) in cases {
        let (code, _, stderr) = run(args, env);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(setting),
            "{args:?}: `{stderr}` does not name {setting}"
        );
    }
}

#[test]
fn settings_come_from_flags_then_env_then_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file_store = dir.path().join("file.db");
    let env_store = dir.path().join("env.db");
    let flag_store = dir.path().join("flag.db");
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
            file_store.display()
        ),
    )
    .expect("write");
    let config = config.to_str().expect("path");
    let env_store_s = env_store.to_str().expect("path");
    for (args, env, expected) in [
        (vec!["--config", config], vec![], &file_store),
        (
            vec!["--config", config],
            vec![("REFLEXIO_BRIDGE_STORE", env_store_s)],
            &env_store,
        ),
        (
            vec![
                "--config",
                config,
                "--store",
                flag_store.to_str().expect("path"),
            ],
            vec![("REFLEXIO_BRIDGE_STORE", env_store_s)],
            &flag_store,
        ),
    ] {
        let bridge =
            Bridge::start_with_env(&[&args[..], &["--listen", "127.0.0.1:0"]].concat(), &env);
        assert!(bridge.terminate().success());
        assert!(expected.exists(), "{} was not used", expected.display());
    }
    let _ = SystemTime::now();
}
