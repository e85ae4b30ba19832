//! The meter provider: the Prometheus exporter that `/metrics/prometheus` encodes, the OTLP push
//! when a collector is configured (same provider, same instruments, over TLS and gzip when
//! asked), the resource that identifies this bridge to collectors, and the bridge's own
//! counters.

use crate::config::{Compression, Otlp, Protocol, UsageError};
use anyhow::Context;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_resource_detectors::HostResourceDetector;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, TelemetryResourceDetector,
};
use reflexio_otel::contract::{self, OUTCOME_LABEL};
use reflexio_otel::{Checkpoint, DurableError, Recorder};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a `POST /v1/events` request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    Invalid,
    Unauthorized,
    TooLarge,
    UnsupportedMediaType,
    Unavailable,
    /// The body did not arrive within the body timeout.
    TimedOut,
    /// Too many bodies were being read at once.
    Overloaded,
    /// Its Idempotency-Key was seen within the window: answered as the first time, nothing
    /// recorded.
    Replayed,
    /// Its Idempotency-Key was used for another batch within the window: nothing recorded.
    Conflict,
}

impl Outcome {
    const ALL: [Outcome; 10] = [
        Outcome::Accepted,
        Outcome::Invalid,
        Outcome::Unauthorized,
        Outcome::TooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::Unavailable,
        Outcome::TimedOut,
        Outcome::Overloaded,
        Outcome::Replayed,
        Outcome::Conflict,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Invalid => "invalid",
            Outcome::Unauthorized => "unauthorized",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Unavailable => "unavailable",
            Outcome::TimedOut => "timed_out",
            Outcome::Overloaded => "overloaded",
            Outcome::Replayed => "replayed",
            Outcome::Conflict => "conflict",
        }
    }
}

/// The bridge's own counts.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: [AtomicU64; Outcome::ALL.len()],
    events: AtomicU64,
    malformed: AtomicU64,
    exports: AtomicU64,
    export_errors: AtomicU64,
    export_failing: AtomicBool,
    /// Why the last HTTP push failed, which the OTLP crate reports only as "network error".
    transport_error: Mutex<Option<String>>,
}

impl Stats {
    pub(crate) fn request(&self, outcome: Outcome, events: usize) {
        self.requests[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// A request the HTTP layer refused before any endpoint saw it.
    pub(crate) fn malformed_request(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn malformed_requests(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    fn exported(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                self.transport_error().take();
                self.exports.fetch_add(1, Ordering::Relaxed);
                if self.export_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("OTLP pushes succeed again");
                }
            }
            Err(e) => {
                self.export_errors.fetch_add(1, Ordering::Relaxed);
                let error = match self.transport_error().take() {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                };
                if !self.export_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "OTLP push failed; retrying at the next interval");
                } else {
                    tracing::debug!(%error, "OTLP push failed again");
                }
            }
        }
    }

    fn transport_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.transport_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The HTTP client of the http/protobuf push. The OTLP crate reports every failure to reach the
/// collector as "network error"; this keeps the cause (refused, TLS, timeout) for the log.
#[derive(Debug)]
struct HttpTransport {
    client: reqwest::blocking::Client,
    stats: Arc<Stats>,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HttpTransport {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let result = self.client.send_bytes(request).await;
        if let Err(e) = &result {
            *self.stats.transport_error() = Some(error_chain(e.as_ref()));
        }
        result
    }
}

/// Counts the outcome of every push of the exporter it wraps.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    stats: Arc<Stats>,
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.stats.exported(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// The provider and what goes with it.
pub(crate) struct Telemetry {
    pub(crate) provider: SdkMeterProvider,
    pub(crate) registry: prometheus::Registry,
    pub(crate) stats: Arc<Stats>,
    /// Drives the gRPC channel of the OTLP exporter.
    _runtime: Option<tokio::runtime::Runtime>,
}

/// The name of the service, the meter's scope and the resource's `service.name` unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names another.
const NAME: &str = "reflexio-bridge";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const SERVICE_INSTANCE_ID: &str = "service.instance.id";
const HOST_NAME: &str = "host.name";

/// The checkpoints holding this store's `service.instance.id`: a UUID, as two halves.
const INSTANCE_ID_KEYS: [&str; 2] = [
    "otlp:service.instance.id:high",
    "otlp:service.instance.id:low",
];

/// The `service.instance.id` kept in the store: generated once, so that a restarted bridge
/// keeps it. Two bridges on one store agree on it: the first to write it wins (check-and-set).
/// Without a writable store, this run gets one of its own.
fn instance_id(recorder: &Recorder) -> String {
    let stored = || {
        Some([
            recorder.checkpoint(INSTANCE_ID_KEYS[0])?,
            recorder.checkpoint(INSTANCE_ID_KEYS[1])?,
        ])
    };
    if let Some(halves) = stored() {
        return uuid(halves);
    }
    let fresh = random_uuid_halves();
    let checkpoints = INSTANCE_ID_KEYS
        .iter()
        .zip(fresh)
        .map(|(key, value)| Checkpoint {
            key: (*key).to_owned(),
            expected: None,
            value,
        })
        .collect();
    match recorder.record_durable_checked(&[], checkpoints) {
        Ok(()) => uuid(fresh),
        Err(DurableError::CheckpointMoved { .. }) => {
            // Another bridge on this store was first: read what it wrote.
            let _ = recorder.flush();
            uuid(stored().unwrap_or(fresh))
        }
        Err(e) => {
            let id = uuid(fresh);
            tracing::warn!(error = %e, service.instance.id = %id, "cannot keep service.instance.id in the store; it changes at the next start");
            id
        }
    }
}

/// 128 random bits as a version 4 UUID, in two halves.
fn random_uuid_halves() -> [i64; 2] {
    let mut bytes = [0u8; 16];
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    if !matches!(filled, Ok(16)) {
        bytes = (fastrand::u128(..)).to_be_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let value = u128::from_be_bytes(bytes);
    [(value >> 64) as u64 as i64, value as u64 as i64]
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn uuid([high, low]: [i64; 2]) -> String {
    let v = (u128::from(high as u64) << 64) | u128::from(low as u64);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

/// The resource of the OTLP push. From weakest to strongest: the host (`host.name`,
/// `host.id`, `host.arch`), `service.name` = `reflexio-bridge`, `service.version`,
/// `service.instance.id` from the store, the SDK's `telemetry.sdk.*`, then
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`.
fn resource(recorder: &Recorder) -> Resource {
    let from_env = EnvResourceDetector::new().detect();
    let host = HostResourceDetector::default().detect();
    let mut builder = Resource::builder_empty().with_attributes(
        host.iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    if host.get(&Key::from_static_str(HOST_NAME)).is_none() {
        // The detector asks the `hostname` command, which slim images lack.
        let name = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        if !name.is_empty() {
            builder = builder.with_attribute(KeyValue::new(HOST_NAME, name));
        }
    }
    builder = builder
        .with_service_name(NAME)
        .with_attribute(KeyValue::new("service.version", VERSION));
    if from_env
        .get(&Key::from_static_str(SERVICE_INSTANCE_ID))
        .is_none()
    {
        builder = builder.with_attribute(KeyValue::new(SERVICE_INSTANCE_ID, instance_id(recorder)));
    }
    builder = builder.with_detectors(&[
        Box::new(TelemetryResourceDetector),
        Box::new(EnvResourceDetector::new()),
    ]);
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// An exporter setting the OTLP crate refuses is a usage error (exit code 2).
fn build_error(e: ExporterBuildError, endpoint: &str) -> anyhow::Error {
    match e {
        ExporterBuildError::InvalidConfiguration(m) => {
            UsageError(format!("invalid OTLP settings for {endpoint}: {m}")).into()
        }
        other => anyhow::Error::new(other)
            .context(format!("cannot set up the OTLP exporter for {endpoint}")),
    }
}

/// The HTTP client of the http/protobuf push: rustls, with the configured CA certificates
/// instead of the system's and the client certificate, if any.
fn http_client(otlp: &Otlp) -> Result<reqwest::blocking::Client, UsageError> {
    let invalid = |what: &str, e: reqwest::Error| {
        UsageError(format!("invalid OTLP {what}: {}", error_chain(&e)))
    };
    let mut builder = reqwest::blocking::Client::builder().timeout(otlp.timeout);
    if let Some(ca) = &otlp.tls.ca {
        let certs = reqwest::Certificate::from_pem_bundle(&ca.pem)
            .map_err(|e| invalid(&format!("CA certificates in {}", ca.path.display()), e))?;
        builder = builder.tls_certs_only(certs);
    }
    if let Some((cert, key)) = &otlp.tls.client {
        let mut pem = cert.pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&key.pem);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            invalid(
                &format!(
                    "client certificate {} with key {}",
                    cert.path.display(),
                    key.path.display()
                ),
                e,
            )
        })?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| invalid("TLS settings", e))
}

/// The TLS settings of the gRPC push: the configured CA certificates, else the system's, and
/// the client certificate, if any.
fn grpc_tls(otlp: &Otlp) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let tls = match &otlp.tls.ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    match &otlp.tls.client {
        Some((cert, key)) => tls.identity(Identity::from_pem(&cert.pem, &key.pem)),
        None => tls,
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl Telemetry {
    /// Builds the provider. Call it outside any async runtime: the OTLP/HTTP client blocks.
    pub(crate) fn new(otlp: Option<&Otlp>, recorder: &Recorder) -> anyhow::Result<Self> {
        let stats = Arc::new(Stats::default());
        let registry = prometheus::Registry::new();
        // process_* (CPU, resident and virtual memory, open and maximum file descriptors,
        // start time), as every client library exports them: in the scrape only.
        registry
            .register(Box::new(crate::process::ProcessMetrics::new()?))
            .context("cannot register the process metrics")?;
        let mut builder = reflexio_otel::with_prometheus(SdkMeterProvider::builder(), &registry)?;
        let mut runtime = None;
        if let Some(otlp) = otlp {
            let resource = resource(recorder);
            log_resource(&resource);
            builder = builder.with_resource(resource);
            let exporter = match otlp.protocol {
                Protocol::Grpc => {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name("otlp-grpc")
                        .enable_all()
                        .build()
                        .context("cannot start the OTLP gRPC runtime")?;
                    let exporter = {
                        let _inside = rt.enter();
                        let mut b = MetricExporter::builder()
                            .with_tonic()
                            .with_temporality(Temporality::Cumulative)
                            .with_endpoint(&otlp.endpoint)
                            .with_timeout(otlp.timeout);
                        if otlp.secure() {
                            b = b.with_tls_config(grpc_tls(otlp));
                        }
                        if otlp.compression == Compression::Gzip {
                            b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
                        }
                        b.build()
                    };
                    runtime = Some(rt);
                    exporter
                }
                Protocol::HttpProtobuf => {
                    let mut b = MetricExporter::builder()
                        .with_http()
                        .with_temporality(Temporality::Cumulative)
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .with_endpoint(&otlp.endpoint)
                        .with_timeout(otlp.timeout)
                        .with_http_client(HttpTransport {
                            client: http_client(otlp)?,
                            stats: Arc::clone(&stats),
                        });
                    if otlp.compression == Compression::Gzip {
                        b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
                    }
                    b.build()
                }
            }
            .map_err(|e| build_error(e, &otlp.endpoint))?;
            let reader = PeriodicReader::builder(Counted {
                inner: exporter,
                stats: Arc::clone(&stats),
            })
            .with_interval(otlp.interval)
            .build();
            builder = builder.with_reader(reader);
        }
        let telemetry = Self {
            provider: builder.build(),
            registry,
            stats,
            _runtime: runtime,
        };
        telemetry.register(otlp.is_some());
        Ok(telemetry)
    }

    /// The meter of every instrument: scope `reflexio-bridge`, with the bridge's version.
    pub(crate) fn meter(&self) -> Meter {
        self.provider.meter_with_scope(
            InstrumentationScope::builder(NAME)
                .with_version(VERSION)
                .build(),
        )
    }

    fn register(&self, otlp: bool) {
        let meter = self.meter();
        let stats = Arc::clone(&self.stats);
        contract::INGEST_REQUESTS.observe_u64(&meter, move |o| {
            for outcome in Outcome::ALL {
                o.observe(
                    stats.requests[outcome as usize].load(Ordering::Relaxed),
                    &[KeyValue::new(OUTCOME_LABEL, outcome.as_str())],
                );
            }
        });
        let counter = |spec: &contract::MetricSpec, value: fn(&Stats) -> u64| {
            let stats = Arc::clone(&self.stats);
            spec.observe_u64(&meter, move |o| o.observe(value(&stats), &[]));
        };
        counter(&contract::INGEST_EVENTS, |s| {
            s.events.load(Ordering::Relaxed)
        });
        counter(&contract::HTTP_MALFORMED_REQUESTS, |s| {
            s.malformed.load(Ordering::Relaxed)
        });
        contract::BRIDGE_BUILD_INFO.observe_u64(&meter, |o| {
            o.observe(
                1,
                &[
                    KeyValue::new(contract::VERSION_LABEL, VERSION),
                    KeyValue::new(
                        contract::RUSTC_VERSION_LABEL,
                        env!("REFLEXIO_BRIDGE_RUSTC_VERSION"),
                    ),
                    KeyValue::new(contract::TARGET_LABEL, env!("REFLEXIO_BRIDGE_TARGET")),
                ],
            );
        });
        if otlp {
            counter(&contract::OTLP_EXPORTS, |s| {
                s.exports.load(Ordering::Relaxed)
            });
            counter(&contract::OTLP_EXPORT_ERRORS, |s| {
                s.export_errors.load(Ordering::Relaxed)
            });
        }
    }

    /// Pushes a last time and stops. Call it outside any async runtime: it blocks until the
    /// final push is done or has timed out.
    pub(crate) fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the final OTLP push failed");
        }
    }
}

/// Logs who the bridge is to collectors.
fn log_resource(resource: &Resource) {
    let get = |key: &'static str| {
        resource
            .get(&Key::from_static_str(key))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    tracing::info!(
        service.name = %get("service.name"),
        service.instance.id = %get(SERVICE_INSTANCE_ID),
        service.version = %get("service.version"),
        host.name = %get(HOST_NAME),
        "OTLP resource"
    );
}

/// The OpenTelemetry SDK logs every failed push itself, a WARN and an ERROR each interval;
/// the bridge logs one line when pushes start failing and one when they succeed again. So the
/// SDK's own logs (targets `opentelemetry*`) show only when `RUST_LOG` asks for debug
/// everywhere (`debug`, `trace`) or names one of them (`opentelemetry_sdk=debug`).
pub(crate) fn sdk_logs_shown(rust_log: &str) -> bool {
    rust_log.split(',').map(str::trim).any(|directive| {
        directive.starts_with("opentelemetry")
            || directive.eq_ignore_ascii_case("debug")
            || directive.eq_ignore_ascii_case("trace")
    })
}

/// The directive that keeps the SDK's own logs out unless [`sdk_logs_shown`].
pub(crate) const SDK_LOGS_OFF: &str = "opentelemetry=off";
