//! The meter provider: the Prometheus exporter that `/metrics/prometheus` encodes, the OTLP push
//! when a collector is configured (same provider, same instruments), and the bridge's own
//! counters.

use crate::config::{Otlp, Protocol};
use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use reflexio_otel::contract::{self, OUTCOME_LABEL};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Accepted,
        Outcome::Invalid,
        Outcome::Unauthorized,
        Outcome::TooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::Unavailable,
        Outcome::TimedOut,
        Outcome::Overloaded,
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
                self.exports.fetch_add(1, Ordering::Relaxed);
                if self.export_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("OTLP pushes succeed again");
                }
            }
            Err(e) => {
                self.export_errors.fetch_add(1, Ordering::Relaxed);
                if !self.export_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "OTLP push failed; retrying at the next interval");
                } else {
                    tracing::debug!(error = %e, "OTLP push failed again");
                }
            }
        }
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

/// The resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (read by the SDK), with
/// `reflexio-bridge` as the service name when neither sets one.
fn resource() -> Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name("reflexio-bridge").build()
    }
}

impl Telemetry {
    /// Builds the provider. Call it outside any async runtime: the OTLP/HTTP client blocks.
    pub(crate) fn new(otlp: Option<&Otlp>) -> anyhow::Result<Self> {
        let stats = Arc::new(Stats::default());
        let registry = prometheus::Registry::new();
        let mut builder = reflexio_otel::with_prometheus(
            SdkMeterProvider::builder().with_resource(resource()),
            &registry,
        )?;
        let mut runtime = None;
        if let Some(otlp) = otlp {
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
                        MetricExporter::builder()
                            .with_tonic()
                            .with_endpoint(&otlp.endpoint)
                            .build()
                    };
                    runtime = Some(rt);
                    exporter
                }
                Protocol::HttpProtobuf => MetricExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(&otlp.endpoint)
                    .build(),
            }
            .with_context(|| format!("cannot set up the OTLP exporter for {}", otlp.endpoint))?;
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

    pub(crate) fn meter(&self) -> Meter {
        self.provider.meter("reflexio-bridge")
    }

    fn register(&self, otlp: bool) {
        let meter = self.meter();
        let stats = Arc::clone(&self.stats);
        meter
            .u64_observable_counter(contract::INGEST_REQUESTS.instrument)
            .with_description(contract::INGEST_REQUESTS.help)
            .with_unit(contract::INGEST_REQUESTS.unit)
            .with_callback(move |o| {
                for outcome in Outcome::ALL {
                    o.observe(
                        stats.requests[outcome as usize].load(Ordering::Relaxed),
                        &[KeyValue::new(OUTCOME_LABEL, outcome.as_str())],
                    );
                }
            })
            .build();
        let counter = |spec: &contract::MetricSpec, value: fn(&Stats) -> u64| {
            let stats = Arc::clone(&self.stats);
            meter
                .u64_observable_counter(spec.instrument)
                .with_description(spec.help)
                .with_unit(spec.unit)
                .with_callback(move |o| o.observe(value(&stats), &[]))
                .build();
        };
        counter(&contract::INGEST_EVENTS, |s| {
            s.events.load(Ordering::Relaxed)
        });
        counter(&contract::HTTP_MALFORMED_REQUESTS, |s| {
            s.malformed.load(Ordering::Relaxed)
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
