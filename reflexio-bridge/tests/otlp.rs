//! OTLP push against real receivers built from `opentelemetry-proto`: a tonic `MetricsService`
//! server and an HTTP endpoint decoding `ExportMetricsServiceRequest` with prost, in the clear
//! and over TLS with client certificates and gzip. Without a receiver, scrapes and ingest keep
//! working, the failures are counted, and an outage is logged once when it starts and once when
//! it ends.

mod common;

use common::otlp::{Certs, Receiver, check, collect, facts_batch, full_batch, path};
use common::{BIN, Bridge, eventually};
use std::time::{Duration, Instant};

#[test]
fn a_grpc_collector_receives_every_contract_metric() {
    let receiver = Receiver::grpc(None, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-interval",
        "200ms",
    ]);
    let (status, body) = bridge.post(full_batch(), "application/json", None);
    assert_eq!(status, 202, "{body}");
    let got = check(&receiver.rx);
    assert!(got.requests >= 1);
    assert_eq!(got.gzip, 0, "compressed without being asked to");
    // The receiver has a push a moment before the bridge sees the answer and counts it.
    assert!(eventually(Duration::from_secs(5), || {
        bridge.scrape()["reflexio_otlp_exports_total"] >= 1.0
    }));
    assert_eq!(bridge.scrape()["reflexio_otlp_export_errors_total"], 0.0);

    // On SIGTERM the bridge pushes once more before it exits.
    while receiver.rx.try_recv().is_ok() {}
    assert!(bridge.terminate().success());
    assert!(
        receiver.rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "no final push"
    );
}

#[test]
fn an_http_collector_receives_every_contract_metric() {
    let receiver = Receiver::http(None, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    // The base endpoint comes from the standard variable; /v1/metrics is appended.
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let bridge = Bridge::start_with_env(
        &["--store", store.to_str().expect("path")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    );
    let (status, body) = bridge.post(full_batch(), "application/json", None);
    assert_eq!(status, 202, "{body}");
    let got = check(&receiver.rx);
    assert_eq!(got.gzip, 0, "compressed without being asked to");
}

/// Both transports over TLS, the collector requiring a client certificate, with gzip: the CA
/// and the certificates are generated here.
#[test]
fn pushes_go_over_tls_with_client_certificates_and_gzip_on_both_transports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path(), "good");
    let grpc = Receiver::grpc(Some(&certs), 0);
    let http = Receiver::http(Some(&certs), 0);
    let mut env = certs.bridge_env();
    env.push(("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bridges: Vec<(&str, Bridge, &Receiver)> = [
        // gRPC takes host:port and picks TLS unless OTEL_EXPORTER_OTLP_INSECURE=true.
        ("grpc", format!("localhost:{}", grpc.port), &grpc),
        (
            "http/protobuf",
            format!("https://localhost:{}", http.port),
            &http,
        ),
    ]
    .into_iter()
    .map(|(protocol, endpoint, receiver)| {
        let store = dir
            .path()
            .join(format!("{}.db", protocol.replace('/', "-")));
        let bridge = Bridge::start_with_env(
            &[
                "--store",
                store.to_str().expect("path"),
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                protocol,
                "--otlp-interval",
                "200ms",
            ],
            &env,
        );
        (protocol, bridge, receiver)
    })
    .collect();
    for (protocol, bridge, receiver) in &bridges {
        let (status, body) = bridge.post(full_batch(), "application/json", None);
        assert_eq!(status, 202, "{body}");
        let got = collect(&receiver.rx, Duration::from_secs(20), |g| g.complete());
        got.assert_complete(protocol);
        assert_eq!(
            got.gzip, got.requests,
            "{protocol}: not every push was gzip"
        );
        assert!(
            bridge.log_text().contains("OTLP over TLS"),
            "{protocol}: {}",
            bridge.log_text()
        );
        assert!(eventually(Duration::from_secs(5), || {
            bridge.scrape()["reflexio_otlp_exports_total"] >= 1.0
        }));
        assert_eq!(bridge.scrape()["reflexio_otlp_export_errors_total"], 0.0);
    }
}

/// A collector whose certificate the configured CA did not sign: every push fails, is counted,
/// and the one log line says why.
#[test]
fn a_collector_signed_by_another_ca_is_refused_clearly_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = Certs::generate(dir.path(), "collector");
    let other = Certs::generate(dir.path(), "other");
    let grpc = Receiver::grpc(Some(&collector), 0);
    let http = Receiver::http(Some(&collector), 0);
    for (protocol, endpoint) in [
        ("grpc", format!("https://127.0.0.1:{}", grpc.port)),
        ("http/protobuf", format!("https://127.0.0.1:{}", http.port)),
    ] {
        let store = dir
            .path()
            .join(format!("{}.db", protocol.replace('/', "-")));
        let bridge = Bridge::start_with_env(
            &[
                "--store",
                store.to_str().expect("path"),
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                protocol,
                "--otlp-interval",
                "100ms",
            ],
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &path(&other.ca))],
        );
        assert!(
            eventually(Duration::from_secs(15), || {
                bridge.scrape()["reflexio_otlp_export_errors_total"] >= 2.0
            }),
            "{protocol}: failures not counted"
        );
        assert_eq!(bridge.scrape()["reflexio_otlp_exports_total"], 0.0);
        let log = bridge.log_text();
        let failed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("OTLP push failed"))
            .collect();
        assert_eq!(failed.len(), 1, "{protocol}: {log}");
        assert!(
            failed[0].contains("certificate") && failed[0].contains("UnknownIssuer"),
            "{protocol}: the log line does not say why: {}",
            failed[0]
        );
    }
    assert!(grpc.rx.try_recv().is_err() && http.rx.try_recv().is_err());
}

/// A bridge that exits at once: its exit code and standard error.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"]);
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start reflexio-bridge");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the bridge did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Counters continue from the store across restarts, but the SDK starts every series at
/// process start: the first delta after a restart would be the lifetime total. The bridge
/// refuses delta and lowmemory at start instead.
#[test]
fn delta_and_lowmemory_temporality_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let args = [
        "--store",
        store.to_str().expect("path"),
        "--otlp-endpoint",
        "http://127.0.0.1:9",
    ];
    for value in ["delta", "LowMemory"] {
        let (code, stderr) = run_to_exit(
            &args,
            &[("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", value)],
        );
        assert_eq!(code, Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
                && stderr.contains("cumulative")
                && stderr.contains("restart"),
            "{value}: {stderr}"
        );
    }
    // Cumulative is what the bridge pushes anyway.
    let bridge = Bridge::start_with_env(
        &args,
        &[(
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            "cumulative",
        )],
    );
    assert!(bridge.terminate().success());
}

#[test]
fn otel_sdk_disabled_stops_the_push_and_the_scrape_goes_on() {
    let receiver = Receiver::http(None, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let bridge = Bridge::start_with_env(
        &[
            "--store",
            store.to_str().expect("path"),
            "--otlp-endpoint",
            &endpoint,
            "--otlp-interval",
            "100ms",
        ],
        &[("OTEL_SDK_DISABLED", "TRUE")],
    );
    let (status, body) = bridge.post(full_batch(), "application/json", None);
    assert_eq!(status, 202, "{body}");
    assert!(
        receiver.rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "pushed although OTEL_SDK_DISABLED=true"
    );
    let scraped = bridge.scrape();
    assert_eq!(scraped["reflexio_facts_total"], 10.0);
    assert!(!scraped.contains_key("reflexio_otlp_exports_total"));
    assert!(
        bridge
            .log_text()
            .contains("OTLP push off (OTEL_SDK_DISABLED=true)"),
        "{}",
        bridge.log_text()
    );
    assert!(bridge.terminate().success());

    // Any other value than true or false is refused.
    let (code, stderr) = run_to_exit(
        &["--store", store.to_str().expect("path")],
        &[("OTEL_SDK_DISABLED", "yes")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("invalid OTEL_SDK_DISABLED"), "{stderr}");
}

/// A 10-second outage of the collector, on both transports: one line when pushes start
/// failing, one when they succeed again, and nothing else: the SDK's own repeated warnings
/// and errors stay out of the log.
#[test]
fn a_collector_outage_is_logged_once_down_and_once_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receivers = vec![
        ("grpc", Receiver::grpc(None, 0)),
        ("http/protobuf", Receiver::http(None, 0)),
    ];
    let bridges: Vec<Bridge> = receivers
        .iter()
        .map(|(protocol, receiver)| {
            let store = dir
                .path()
                .join(format!("{}.db", protocol.replace('/', "-")));
            Bridge::start(&[
                "--store",
                store.to_str().expect("path"),
                "--otlp-endpoint",
                &format!("http://127.0.0.1:{}", receiver.port),
                "--otlp-protocol",
                protocol,
                "--otlp-interval",
                "200ms",
            ])
        })
        .collect();
    let pushed = |bridge: &Bridge, at_least: f64| {
        eventually(Duration::from_secs(10), || {
            bridge.scrape()["reflexio_otlp_exports_total"] >= at_least
        })
    };
    for bridge in &bridges {
        assert!(pushed(bridge, 1.0), "{}", bridge.log_text());
    }
    let ports: Vec<u16> = receivers.iter().map(|(_, r)| r.port).collect();
    receivers.clear();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let errors: Vec<f64> = bridges
        .iter()
        .map(|b| b.scrape()["reflexio_otlp_export_errors_total"])
        .collect();
    let exports: Vec<f64> = bridges
        .iter()
        .map(|b| b.scrape()["reflexio_otlp_exports_total"])
        .collect();
    let _receivers = [
        Receiver::grpc(None, ports[0]),
        Receiver::http(None, ports[1]),
    ];
    for ((bridge, errors), exports) in bridges.iter().zip(errors).zip(exports) {
        assert!(errors >= 10.0, "only {errors} failed pushes in 10 s");
        assert!(pushed(bridge, exports + 1.0), "{}", bridge.log_text());
    }
    let outage = down.elapsed();
    for bridge in &bridges {
        let log = bridge.log_text();
        let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        assert_eq!(count("OTLP push failed"), 1, "{log}");
        assert_eq!(count("OTLP pushes succeed again"), 1, "{log}");
        let loud: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        assert_eq!(loud.len(), 1, "a {outage:?} outage: {loud:#?}");
    }
}

#[test]
fn without_a_collector_scrapes_and_ingest_go_on_and_failures_are_counted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("tempdir");
    for protocol in ["grpc", "http/protobuf"] {
        let store = dir
            .path()
            .join(format!("{}.db", protocol.replace('/', "-")));
        let bridge = Bridge::start(&[
            "--store",
            store.to_str().expect("path"),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-protocol",
            protocol,
            "--otlp-interval",
            "100ms",
        ]);
        let (status, body) = bridge.post(full_batch(), "application/json", None);
        assert_eq!(status, 202, "{body}");
        let failing = eventually(Duration::from_secs(15), || {
            bridge.scrape()["reflexio_otlp_export_errors_total"] >= 2.0
        });
        assert!(failing, "{protocol}: export failures are not counted");
        let scraped = bridge.scrape();
        assert_eq!(scraped["reflexio_otlp_exports_total"], 0.0);
        assert!(scraped["reflexio_facts_total"] >= 10.0);
        assert!(
            bridge.log_text().contains("OTLP push failed"),
            "{protocol}: not logged"
        );
        assert!(bridge.terminate().success(), "{protocol}: clean exit");
    }
}

/// A collector that accepts connections and never answers: pushes hang until their timeout.
#[test]
fn a_collector_that_never_answers_delays_neither_scrapes_nor_ingest() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = black_hole.local_addr().expect("addr").port();
    let accepted = std::thread::spawn(move || {
        // Hold every connection open without reading from it.
        black_hole
            .incoming()
            .take(8)
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start_with_env(
        &[
            "--store",
            store.to_str().expect("path"),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-interval",
            "100ms",
        ],
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "60000")],
    );
    std::thread::sleep(Duration::from_millis(500));
    // A push is now hanging on the collector. The export timeout is 60 s; if a push held up
    // scrapes or ingest, these would take that long.
    for _ in 0..10 {
        let began = std::time::Instant::now();
        let (status, body) = bridge.post(facts_batch(), "application/json", None);
        assert_eq!(status, 202, "{body}");
        assert!(bridge.scrape()["reflexio_facts_total"] >= 10.0);
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "took {:?}",
            began.elapsed()
        );
    }
    drop(bridge);
    drop(accepted);
}
