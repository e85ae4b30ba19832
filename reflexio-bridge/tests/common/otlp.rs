//! OTLP receivers for the push tests, built from the official `opentelemetry-proto` types: a
//! tonic `MetricsService` and an HTTP endpoint decoding `ExportMetricsServiceRequest` with
//! prost, each with or without TLS (certificates generated here with rcgen), and what they
//! received, by metric and by `service.instance.id`.

use super::fact;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics};
use prost::Message;
use reflexio_otel::contract::{self, MetricKind};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One push as a receiver got it.
#[derive(Debug)]
pub struct Export {
    pub request: ExportMetricsServiceRequest,
    /// Whether it came gzip-compressed.
    pub gzip: bool,
}

/// Everything received from one bridge: the latest value of each metric, its resource and
/// scope.
#[derive(Default, Debug)]
pub struct Received {
    pub requests: usize,
    pub gzip: usize,
    pub metrics: BTreeMap<String, Metric>,
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope: name and version.
    pub scope: Option<(String, String)>,
}

/// A string attribute's value (other kinds as their debug form).
pub fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

impl Received {
    pub fn take(&mut self, export: Export) {
        self.requests += 1;
        self.gzip += usize::from(export.gzip);
        for rm in export.request.resource_metrics {
            self.take_resource(rm);
        }
    }

    /// Takes one resource's metrics (a collector may batch several resources in one push).
    pub fn take_resource(&mut self, rm: ResourceMetrics) {
        if let Some(r) = &rm.resource {
            self.resource = r
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(&kv.value)))
                .collect();
        }
        for sm in rm.scope_metrics {
            if let Some(s) = &sm.scope {
                self.scope = Some((s.name.clone(), s.version.clone()));
            }
            for m in sm.metrics {
                self.metrics.insert(m.name.clone(), m);
            }
        }
    }

    /// The sum of a counter's or gauge's data points.
    pub fn value(&self, name: &str) -> f64 {
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

    pub fn histogram_count(&self, name: &str) -> u64 {
        match self.metrics.get(name).and_then(|m| m.data.as_ref()) {
            Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count).sum(),
            other => panic!("{name}: {other:?}"),
        }
    }

    /// Whether every expected metric arrived, with the values of [`full_batch`].
    pub fn complete(&self) -> bool {
        expected().iter().all(|n| self.metrics.contains_key(*n))
            && self.value("reflexio_facts") == 10.0
    }

    /// Asserts that every expected metric arrived with its type and the values of
    /// [`full_batch`], from a resource and scope that name the bridge.
    pub fn assert_complete(&self, who: &str) {
        let missing: Vec<_> = expected()
            .into_iter()
            .filter(|n| !self.metrics.contains_key(*n))
            .collect();
        assert!(missing.is_empty(), "{who}: not received: {missing:?}");
        for m in contract::ALL
            .iter()
            .chain(contract::STORE)
            .chain(contract::BRIDGE)
        {
            let data = self.metrics[m.instrument].data.as_ref();
            let ok = match m.kind {
                MetricKind::Counter => matches!(data, Some(Data::Sum(s)) if s.is_monotonic
                    && s.aggregation_temporality == 2),
                MetricKind::Gauge => matches!(data, Some(Data::Gauge(_))),
                MetricKind::Histogram => {
                    matches!(data, Some(Data::Histogram(h)) if h.aggregation_temporality == 2)
                }
            };
            assert!(ok, "{who}: {} arrived as {data:?}", m.instrument);
            assert_eq!(self.metrics[m.instrument].unit, m.unit, "{who}: unit");
        }
        assert_eq!(self.value("reflexio_facts"), 10.0, "{who}");
        assert_eq!(self.value("reflexio_hallucination_rate_24h"), 0.1, "{who}");
        assert_eq!(self.value("reflexio_retention_deleted_records"), 7.0);
        assert_eq!(self.value("reflexio_active_locks"), 1.0, "{who}");
        assert_eq!(self.histogram_count("reflexio_cove_confidence"), 10);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            self.resource.get("service.name").map(String::as_str),
            Some("reflexio-bridge"),
            "{who}: {:?}",
            self.resource
        );
        assert_eq!(
            self.resource.get("service.version").map(String::as_str),
            Some(version)
        );
        let id = &self.resource["service.instance.id"];
        assert!(
            id.len() == 36 && id.chars().nth(14) == Some('4'),
            "{who}: service.instance.id {id} is not a UUID v4"
        );
        assert!(
            !self.resource["host.name"].is_empty(),
            "{who}: no host.name"
        );
        assert_eq!(
            self.scope,
            Some(("reflexio-bridge".to_owned(), version.to_owned()))
        );
    }
}

/// Every metric the bridge exports with a store and an OTLP collector, by OTLP name.
pub fn expected() -> BTreeSet<&'static str> {
    contract::ALL
        .iter()
        .chain(contract::STORE)
        .chain(contract::BRIDGE)
        .map(|m| m.instrument)
        .collect()
}

/// A batch that makes every metric exist: facts with CoVe, a retention run, locks, config.
pub fn full_batch() -> String {
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
pub fn facts_batch() -> String {
    serde_json::Value::Array((0..10).map(|i| fact(i == 0, 0.98)).collect()).to_string()
}

/// Takes pushes until `done` holds of what arrived or `timeout` passes.
pub fn collect(
    rx: &mpsc::Receiver<Export>,
    timeout: Duration,
    mut done: impl FnMut(&Received) -> bool,
) -> Received {
    let mut got = Received::default();
    let deadline = Instant::now() + timeout;
    while !done(&got) && Instant::now() < deadline {
        if let Ok(export) = rx.recv_timeout(Duration::from_millis(200)) {
            got.take(export);
        }
    }
    got
}

/// Waits until the receiver has every expected metric with the batch's values, and checks them.
pub fn check(rx: &mpsc::Receiver<Export>) -> Received {
    let got = collect(rx, Duration::from_secs(20), Received::complete);
    got.assert_complete("the bridge");
    got
}

/// A CA, a server certificate for `localhost` and `127.0.0.1`, and a client certificate, all
/// signed by the CA; the CA and client files are written to a directory.
pub struct Certs {
    /// Whether receivers ask for a client certificate signed by the CA (the default).
    pub client_auth: bool,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

impl Certs {
    pub fn generate(dir: &Path, name: &str) -> Certs {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "test collector",
        );
        let (client_cert_pem, client_key_pem) = leaf(vec!["reflexio-bridge".into()], "bridge");
        let write = |file: &str, pem: &str| {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        Certs {
            client_auth: true,
            ca: write("ca.pem", &ca.pem()),
            client_cert: write("client.pem", &client_cert_pem),
            client_key: write("client-key.pem", &client_key_pem),
            ca_pem: ca.pem(),
            server_cert_pem,
            server_key_pem,
        }
    }

    /// The settings that make a bridge trust this CA and show the client certificate.
    pub fn bridge_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&self.ca)),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                path(&self.client_cert),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&self.client_key)),
        ]
    }

    fn rustls_server(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA"))
            .expect("root");
        let builder = rustls::ServerConfig::builder();
        let builder = if self.client_auth {
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        builder
            .with_single_cert(
                vec![
                    CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).expect("cert"),
                ],
                PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).expect("key"),
            )
            .expect("server TLS")
    }

    fn tonic_server(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(
            &self.server_cert_pem,
            &self.server_key_pem,
        ));
        if self.client_auth {
            tls.client_ca_root(Certificate::from_pem(&self.ca_pem))
        } else {
            tls
        }
    }
}

pub fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

enum Stop {
    Grpc(tokio::sync::oneshot::Sender<()>),
    Http(actix_web::dev::ServerHandle),
}

/// A receiver on 127.0.0.1, on its own thread; stopped when dropped.
pub struct Receiver {
    pub port: u16,
    pub rx: mpsc::Receiver<Export>,
    stop: Option<Stop>,
    thread: Option<JoinHandle<()>>,
}

struct Grpc(mpsc::Sender<Export>);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let gzip = request
            .metadata()
            .get("grpc-encoding")
            .is_some_and(|v| v == "gzip");
        let _ = self.0.send(Export {
            request: request.into_inner(),
            gzip,
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Receiver {
    /// A gRPC `MetricsService` (accepting gzip) on a free port, or on `port`; over TLS with a
    /// client certificate required when `tls` is given.
    pub fn grpc(tls: Option<&Certs>, port: u16) -> Receiver {
        let tls = tls.map(Certs::tonic_server);
        let (tx, rx) = mpsc::channel();
        let (ready, started) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind");
                let _ = ready.send(listener.local_addr().expect("addr").port());
                let mut server = tonic::transport::Server::builder();
                if let Some(tls) = tls {
                    server = server.tls_config(tls).expect("server TLS");
                }
                server
                    .add_service(
                        MetricsServiceServer::new(Grpc(tx))
                            .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
                    )
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .expect("gRPC receiver");
            });
        });
        let port = started
            .recv_timeout(Duration::from_secs(10))
            .expect("the gRPC receiver started");
        Receiver {
            port,
            rx,
            stop: Some(Stop::Grpc(stop)),
            thread: Some(thread),
        }
    }

    /// `POST /v1/metrics` taking protobuf, gzip-compressed or not, on a free port or on `port`;
    /// over TLS with a client certificate required when `tls` is given.
    pub fn http(tls: Option<&Certs>, port: u16) -> Receiver {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let tls = tls.map(Certs::rustls_server);
        let (tx, rx) = mpsc::channel::<Export>();
        let (ready, started) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let tx = web::Data::new(Mutex::new(tx));
                let server = HttpServer::new(move || {
                    App::new().app_data(tx.clone()).route(
                        "/v1/metrics",
                        web::post().to(
                            |body: web::Bytes,
                             tx: web::Data<Mutex<mpsc::Sender<Export>>>,
                             req: HttpRequest| async move {
                                let header = |name: &str| {
                                    req.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_owned()
                                };
                                assert_eq!(header("content-type"), "application/x-protobuf");
                                let gzip = header("content-encoding") == "gzip";
                                let body = if gzip {
                                    let mut plain = Vec::new();
                                    std::io::Read::read_to_end(
                                        &mut flate2::read::GzDecoder::new(&body[..]),
                                        &mut plain,
                                    )
                                    .expect("a gzip body");
                                    plain.into()
                                } else {
                                    body
                                };
                                let request = ExportMetricsServiceRequest::decode(body)
                                    .expect("an OTLP protobuf request");
                                let _ = tx.lock().expect("lock").send(Export { request, gzip });
                                HttpResponse::Ok()
                                    .content_type("application/x-protobuf")
                                    .body(ExportMetricsServiceResponse::default().encode_to_vec())
                            },
                        ),
                    )
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1);
                let server = match tls {
                    Some(tls) => server.bind_rustls_0_23(("127.0.0.1", port), tls),
                    None => server.bind(("127.0.0.1", port)),
                }
                .expect("bind");
                let port = server.addrs()[0].port();
                let server = server.run();
                let _ = ready.send((port, server.handle()));
                server.await.expect("HTTP receiver");
            })
        });
        let (port, handle) = started
            .recv_timeout(Duration::from_secs(10))
            .expect("the HTTP receiver started");
        Receiver {
            port,
            rx,
            stop: Some(Stop::Http(handle)),
            thread: Some(thread),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        match self.stop.take() {
            Some(Stop::Grpc(stop)) => {
                let _ = stop.send(());
            }
            Some(Stop::Http(handle)) => {
                actix_web::rt::System::new().block_on(handle.stop(false));
            }
            None => {}
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
