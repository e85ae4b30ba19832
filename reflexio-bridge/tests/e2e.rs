//! The real binary on a free loopback port: ingest and exact values, authentication,
//! readiness, time edges, the command line, and graceful shutdown. Bad requests have their own
//! suite (`malformed.rs`).

mod common;

use common::{BIN, Bridge, fact, stored};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, SystemTime};

const TOKEN: &str = "e2e-s3cret-token";

fn token_file(dir: &std::path::Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    path.to_str().expect("path").to_owned()
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
        ("reflexio_citation_coverage_sum_24h", 9.8),
        ("reflexio_citation_coverage_24h", 9.8 / 10.0),
        ("reflexio_atomicity_violations_24h", 1.0),
        ("reflexio_atomicity_violations_total", 1.0),
        ("reflexio_cove_verified_facts_24h", 9.0),
        ("reflexio_cove_avg_confidence_24h", 8.1 / 9.0),
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

#[test]
fn each_verdict_of_an_ingested_fact_counts_in_its_own_figures_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&["--store", store.to_str().expect("path")]);
    let (status, body) = bridge.post(
        r#"[{"type":"fact","hallucinated":true}]"#,
        "application/json",
        None,
    );
    assert_eq!((status, &body), (202, &json!({"accepted": 1})));
    let v = bridge.scrape();
    for (series, value) in [
        ("reflexio_facts_24h", 1.0),
        ("reflexio_hallucinated_facts_24h", 1.0),
        ("reflexio_assessed_facts_24h", 1.0),
        ("reflexio_hallucination_rate_24h", 1.0),
        ("reflexio_citation_assessed_facts_24h", 0.0),
        ("reflexio_citation_coverage_sum_24h", 0.0),
        ("reflexio_citation_coverage_24h", 0.0),
        ("reflexio_atomicity_assessed_facts_24h", 0.0),
        ("reflexio_atomicity_violations_24h", 0.0),
        ("reflexio_cove_verified_facts_24h", 0.0),
        ("reflexio_facts_total", 1.0),
        ("reflexio_assessed_facts_total", 1.0),
        ("reflexio_hallucinated_facts_total", 1.0),
        ("reflexio_atomicity_assessed_facts_total", 0.0),
    ] {
        assert_eq!(v.get(series), Some(&value), "{series}");
    }
    assert_eq!(
        v.get("reflexio_citation_coverage_count"),
        None,
        "no coverage observed"
    );

    // The other verdicts, each alone or null, in NDJSON: each adds to its own figures.
    let ndjson = [
        r#"{"type":"fact","atomic":false,"hallucinated":null}"#,
        r#"{"type":"fact","citation_coverage":0.5,"cove":null}"#,
        r#"{"type":"fact","cove":{"confidence":0.8,"rounds":3}}"#,
        r#"{"type":"fact"}"#,
    ]
    .join("\n");
    let (status, body) = bridge.post(ndjson, "application/x-ndjson", None);
    assert_eq!((status, &body), (202, &json!({"accepted": 4})));
    let v = bridge.scrape();
    for (series, value) in [
        ("reflexio_facts_24h", 5.0),
        ("reflexio_assessed_facts_24h", 1.0),
        ("reflexio_hallucination_rate_24h", 1.0),
        ("reflexio_atomicity_assessed_facts_24h", 1.0),
        ("reflexio_atomicity_violations_24h", 1.0),
        ("reflexio_citation_assessed_facts_24h", 1.0),
        ("reflexio_citation_coverage_sum_24h", 0.5),
        ("reflexio_citation_coverage_24h", 0.5),
        ("reflexio_cove_verified_facts_24h", 1.0),
        ("reflexio_cove_confidence_sum_24h", 0.8),
        ("reflexio_cove_verification_rounds_sum_24h", 3.0),
        ("reflexio_cove_avg_verification_rounds_24h", 3.0),
        ("reflexio_citation_coverage_count", 1.0),
        ("reflexio_atomicity_violations_total", 1.0),
    ] {
        assert_eq!(v.get(series), Some(&value), "{series}");
    }
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
    assert_eq!(body["store"]["kind"], json!("corrupt"), "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("damaged")),
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
fn readiness_shows_details_only_with_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    std::fs::write(&store, vec![7u8; 4096]).expect("a damaged store");
    let token = token_file(dir.path());
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--auth-token-file",
        &token,
    ]);
    let dir_name = dir.path().to_str().expect("path");
    let raw_sqlite = "file is not a database";
    for offered in [None, Some("a-wrong-token-of-some-length")] {
        let (status, _, text) = bridge.get("/readyz", offered);
        assert_eq!(status, 503, "{text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["store"]["kind"], json!("corrupt"), "{body}");
        assert!(
            body["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{body}"
        );
        assert!(!text.contains(dir_name), "the path is shown: {text}");
        assert!(
            !text.contains(raw_sqlite),
            "SQLite's message is shown: {text}"
        );
    }
    let (status, _, text) = bridge.get("/readyz", Some(TOKEN));
    assert_eq!(status, 503, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["store"]["kind"], json!("corrupt"), "{body}");
    assert_eq!(
        body["store"]["path"],
        json!(store.to_str().expect("path")),
        "{body}"
    );
    assert!(
        body["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(raw_sqlite)),
        "{body}"
    );
    // The log has the details.
    let log = bridge.log_text();
    assert!(log.contains(raw_sqlite) && log.contains(dir_name), "{log}");
}

#[test]
fn a_weak_token_file_is_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let store = store.to_str().expect("path");
    let token = dir.path().join("token");
    let token_arg = token.to_str().expect("path");
    let world_readable = "readable by every user";
    let short = "shorter than 16 bytes";

    std::fs::write(&token, "short\n").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let bridge = Bridge::start(&["--store", store, "--auth-token-file", token_arg]);
    let log = bridge.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains(world_readable)),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains(short)),
        "{log}"
    );
    assert!(!log.contains("short\n") && !log.contains("=short"), "{log}");
    drop(bridge);

    std::fs::write(&token, format!("{}\n", "k".repeat(32))).expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let bridge = Bridge::start(&["--store", store, "--auth-token-file", token_arg]);
    let log = bridge.log_text();
    assert!(
        !log.contains(world_readable) && !log.contains(short),
        "{log}"
    );
}

#[test]
fn time_edges_of_rfc_3339_are_read_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&["--store", store.to_str().expect("path")]);
    let events = json!([
        {"type":"digest","time":"2026-06-30T23:59:60Z"},
        {"type":"digest","time":"2026-06-30T23:59:59.123456789012Z"},
        {"type":"digest","time":"2026-06-30t23:59:59z"},
        {"type":"digest","time":"2026-07-01T02:59:59+23:00"},
        {"type":"digest","time":"2026-06-30T23:59:59-00:00"},
    ]);
    let (status, body) = bridge.post(events.to_string(), "application/json", None);
    assert_eq!((status, &body), (202, &json!({"accepted": 5})));
    assert_eq!(bridge.scrape()["reflexio_digests_total"], 5.0);
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
        "--body-timeout",
        "--max-ingest-bodies",
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
    let cases: [Case<'_>; 10] = [
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
        (&["serve", "--body-timeout", "0s"], &[], "--body-timeout"),
        (
            &["serve"],
            &[("REFLEXIO_BRIDGE_MAX_INGEST_BODIES", "0")],
            "--max-ingest-bodies",
        ),
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
