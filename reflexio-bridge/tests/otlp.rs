//! OTLP push against real receivers built from `opentelemetry-proto`: a tonic `MetricsService`
//! server and an HTTP endpoint decoding `ExportMetricsServiceRequest` with prost. Without a
//! receiver, scrapes and ingest keep working and the failures are counted.

mod common;

use common::{Bridge, eventually, fact};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use prost::Message;
use reflexio_otel::contract::{self, MetricKind};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::Duration;

/// Everything a receiver got, by metric name: the latest request's metric.
#[derive(Default)]
struct Received {
    requests: usize,
    metrics: BTreeMap<String, opentelemetry_proto::tonic::metrics::v1::Metric>,
    service: Option<String>,
}

impl Received {
    fn take(&mut self, req: ExportMetricsServiceRequest) {
        self.requests += 1;
        for rm in req.resource_metrics {
            if let Some(r) = &rm.resource {
                for kv in &r.attributes {
                    if kv.key == "service.name" {
                        self.service = Some(format!("{:?}", kv.value));
                    }
                }
            }
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    self.metrics.insert(m.name.clone(), m);
                }
            }
        }
    }

    /// The sum of a counter's or gauge's data points.
    fn value(&self, name: &str) -> f64 {
        let points = match self.metrics.get(name).and_then(|m| m.data.as_ref()) {
            Some(Data::Sum(s)) => &s.data_points,
            Some(Data::Gauge(g)) => &g.data_points,
            other => panic!("{name}: {other:?}"),
        };
        points
            .iter()
            .map(|p| match p.value {
                Some(Value::AsInt(v)) => v as f64,
                Some(Value::AsDouble(v)) => v,
                None => 0.0,
            })
            .sum()
    }

    fn histogram_count(&self, name: &str) -> u64 {
        match self.metrics.get(name).and_then(|m| m.data.as_ref()) {
            Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count).sum(),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Every metric the bridge exports with a store and an OTLP collector, by OTLP name.
fn expected() -> BTreeSet<&'static str> {
    contract::ALL
        .iter()
        .chain(contract::STORE)
        .chain(contract::BRIDGE)
        .map(|m| m.instrument)
        .collect()
}

/// A batch that makes every metric exist: facts with CoVe, a retention run, locks, config.
fn full_batch() -> String {
    let mut events: Vec<_> = (0..10).map(|i| fact(i == 0, 0.98)).collect();
    events.extend([
        json!({"type":"transcription"}),
        json!({"type":"digest"}),
        json!({"type":"retention","table":"facts","deleted_records":7,"dry_run":false,"error":null}),
        json!({"type":"lock_acquired","name":"daily_digest","holder":"worker-1"}),
        json!({"type":"cove_config","enabled":true,"threshold":0.7}),
    ]);
    serde_json::Value::Array(events).to_string()
}

/// Facts only, to send as often as needed.
fn facts_batch() -> String {
    serde_json::Value::Array((0..10).map(|i| fact(i == 0, 0.98)).collect()).to_string()
}

/// Waits until the receiver has every expected metric with the batch's values.
fn check(rx: &mpsc::Receiver<ExportMetricsServiceRequest>) -> Received {
    let mut got = Received::default();
    let complete = |got: &Received| {
        expected().iter().all(|n| got.metrics.contains_key(*n))
            && got.value("reflexio_facts") == 10.0
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !complete(&got) && std::time::Instant::now() < deadline {
        if let Ok(req) = rx.recv_timeout(Duration::from_millis(200)) {
            got.take(req);
        }
    }
    let missing: Vec<_> = expected()
        .into_iter()
        .filter(|n| !got.metrics.contains_key(*n))
        .collect();
    assert!(missing.is_empty(), "not received over OTLP: {missing:?}");
    for m in contract::ALL
        .iter()
        .chain(contract::STORE)
        .chain(contract::BRIDGE)
    {
        let data = got.metrics[m.instrument].data.as_ref();
        let ok = match m.kind {
            MetricKind::Counter => matches!(data, Some(Data::Sum(s)) if s.is_monotonic),
            MetricKind::Gauge => matches!(data, Some(Data::Gauge(_))),
            MetricKind::Histogram => matches!(data, Some(Data::Histogram(_))),
        };
        assert!(ok, "{} arrived as {data:?}", m.instrument);
    }
    assert_eq!(got.value("reflexio_facts"), 10.0);
    assert_eq!(got.value("reflexio_hallucination_rate_24h"), 0.1);
    assert_eq!(got.value("reflexio_retention_deleted_records"), 7.0);
    assert_eq!(got.value("reflexio_active_locks"), 1.0);
    assert_eq!(got.histogram_count("reflexio_cove_confidence"), 10);
    assert_eq!(
        got.service.as_deref(),
        Some("Some(AnyValue { value: Some(StringValue(\"reflexio-bridge\")) })")
    );
    got
}

struct GrpcReceiver(mpsc::Sender<ExportMetricsServiceRequest>);

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[test]
fn a_grpc_collector_receives_every_contract_metric() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let incoming = rt
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            std::io::Result::Ok(tonic::transport::server::TcpIncoming::from(listener))
        })
        .expect("listen");
    let port = incoming.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(GrpcReceiver(tx)))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let endpoint = format!("http://127.0.0.1:{port}");
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
    let got = check(&rx);
    assert!(got.requests >= 1);
    // The receiver has a push a moment before the bridge sees the answer and counts it.
    assert!(eventually(Duration::from_secs(5), || {
        bridge.scrape()["reflexio_otlp_exports_total"] >= 1.0
    }));
    assert_eq!(bridge.scrape()["reflexio_otlp_export_errors_total"], 0.0);

    // On SIGTERM the bridge pushes once more before it exits.
    while rx.try_recv().is_ok() {}
    assert!(bridge.terminate().success());
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "no final push"
    );
    let _ = stop.send(());
    rt.block_on(server).expect("join").expect("server");
}

#[test]
fn an_http_collector_receives_every_contract_metric() {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let (tx, rx) = mpsc::channel();
    let (ready, server) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let tx = web::Data::new(std::sync::Mutex::new(tx));
            let server = HttpServer::new(move || {
                App::new().app_data(tx.clone()).route(
                    "/v1/metrics",
                    web::post().to(
                        |body: web::Bytes,
                         tx: web::Data<std::sync::Mutex<mpsc::Sender<_>>>,
                         req: actix_web::HttpRequest| async move {
                            assert_eq!(
                                req.headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok()),
                                Some("application/x-protobuf")
                            );
                            let decoded = ExportMetricsServiceRequest::decode(body)
                                .expect("an OTLP protobuf request");
                            let _ = tx.lock().expect("lock").send(decoded);
                            HttpResponse::Ok()
                                .content_type("application/x-protobuf")
                                .body(ExportMetricsServiceResponse::default().encode_to_vec())
                        },
                    ),
                )
            })
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .expect("bind");
            let port = server.addrs()[0].port();
            let server = server.run();
            let _ = ready.send((port, server.handle()));
            server.await
        })
    });
    let (port, handle) = server.recv().expect("receiver started");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    // The base endpoint comes from the standard variable; /v1/metrics is appended.
    let endpoint = format!("http://127.0.0.1:{port}");
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
    check(&rx);
    drop(bridge);
    actix_web::rt::System::new().block_on(handle.stop(false));
    receiver.join().expect("join").expect("server");
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
