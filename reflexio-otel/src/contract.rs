//! The metric contract: every exported metric's name, type, unit, labels and meaning, in one
//! place. `docs/metrics.md` documents the same table, and a test keeps the two in step.
//!
//! A [`MetricSpec`] also puts itself on an OpenTelemetry `Meter` ([`MetricSpec::observe_u64`],
//! [`MetricSpec::observe_f64`], [`MetricSpec::histogram`]): name, help and unit in one call,
//! from one place.

use opentelemetry::metrics::{AsyncInstrument, AsyncInstrumentBuilder, Histogram, Meter};

/// The Prometheus type of an exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Cumulative, only goes up; exported with a `_total` suffix.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Explicit-bucket histogram: `_bucket{le}`, `_sum`, `_count`.
    Histogram,
}

impl MetricKind {
    /// The name used in a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricSpec {
    /// The OpenTelemetry instrument name (counters without `_total`).
    pub instrument: &'static str,
    /// The name in the Prometheus exposition.
    pub exported: &'static str,
    /// Its type.
    pub kind: MetricKind,
    /// Its OpenTelemetry (UCUM) unit. Dimensionless gauges have none rather than `1`: the
    /// OpenTelemetry Collector's Prometheus exporter appends `_ratio` to gauges in unit `1`,
    /// which would rename them on the OTLP path.
    pub unit: &'static str,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it means: the `# HELP` text.
    pub help: &'static str,
}

impl MetricSpec {
    /// Registers the metric on `meter` as an observable instrument with the contract's name,
    /// help and unit: a counter if it is one, else a gauge. `callback` reports its values at
    /// each collection.
    ///
    /// ```
    /// use opentelemetry::metrics::MeterProvider;
    /// use reflexio_otel::{PrometheusPipeline, contract};
    ///
    /// let pipeline = PrometheusPipeline::new()?;
    /// let meter = pipeline.provider.meter("example");
    /// contract::INGEST_EVENTS.observe_u64(&meter, |o| o.observe(7, &[]));
    /// assert!(pipeline.encode()?.contains("\nreflexio_ingest_events_total 7\n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn observe_u64(
        &self,
        meter: &Meter,
        callback: impl Fn(&dyn AsyncInstrument<u64>) + Send + Sync + 'static,
    ) {
        match self.kind {
            MetricKind::Counter => self.observed(
                meter.u64_observable_counter(self.instrument),
                callback,
                |b| b.build(),
            ),
            MetricKind::Gauge | MetricKind::Histogram => {
                self.observed(meter.u64_observable_gauge(self.instrument), callback, |b| {
                    b.build()
                })
            }
        }
    }

    /// Registers the metric on `meter` as an observable gauge of values that are not whole
    /// numbers (the contract's ratios, means and thresholds are all gauges), with the
    /// contract's name, help and unit.
    pub fn observe_f64(
        &self,
        meter: &Meter,
        callback: impl Fn(&dyn AsyncInstrument<f64>) + Send + Sync + 'static,
    ) {
        debug_assert_eq!(self.kind, MetricKind::Gauge, "{}", self.exported);
        let gauge = meter.f64_observable_gauge(self.instrument);
        self.observed(gauge, callback, |b| b.build());
    }

    /// The metric as an SDK histogram on `meter` with the contract's name, help and unit, and
    /// `boundaries` as its bucket bounds.
    pub fn histogram(&self, meter: &Meter, boundaries: &[f64]) -> Histogram<f64> {
        meter
            .f64_histogram(self.instrument)
            .with_description(self.help)
            .with_unit(self.unit)
            .with_boundaries(boundaries.to_vec())
            .build()
    }

    /// Builds `builder` with the contract's help and unit, and `callback`.
    fn observed<'a, I, M>(
        &self,
        builder: AsyncInstrumentBuilder<'a, I, M>,
        callback: impl Fn(&dyn AsyncInstrument<M>) + Send + Sync + 'static,
        build: impl FnOnce(AsyncInstrumentBuilder<'a, I, M>) -> I,
    ) {
        build(
            builder
                .with_description(self.help)
                .with_unit(self.unit)
                .with_callback(callback),
        );
    }
}

/// The label naming a retention job's table.
pub const TABLE_LABEL: &str = "table";

/// The attribute marking the series that collects label sets past the cardinality limit, as the
/// OpenTelemetry SDK does (`otel_metric_overflow="true"` in Prometheus).
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

macro_rules! spec {
    ($const:ident, $instrument:literal, $exported:literal, $kind:ident, $unit:literal, [$($label:expr),*], $help:literal) => {
        #[doc = concat!("`", $exported, "`: ", $help)]
        pub const $const: MetricSpec = MetricSpec {
            instrument: $instrument,
            exported: $exported,
            kind: MetricKind::$kind,
            unit: $unit,
            labels: &[$($label),*],
            help: $help,
        };
    };
}

spec!(
    TRANSCRIPTIONS,
    "reflexio_transcriptions",
    "reflexio_transcriptions_total",
    Counter,
    "{transcription}",
    [],
    "Transcriptions recorded."
);
spec!(
    FACTS,
    "reflexio_facts",
    "reflexio_facts_total",
    Counter,
    "{fact}",
    [],
    "Facts recorded, with or without quality verdicts."
);
spec!(
    ASSESSED_FACTS,
    "reflexio_assessed_facts",
    "reflexio_assessed_facts_total",
    Counter,
    "{fact}",
    [],
    "Facts recorded with a hallucination verdict (hallucinated or not)."
);
spec!(
    DIGESTS,
    "reflexio_digests",
    "reflexio_digests_total",
    Counter,
    "{digest}",
    [],
    "Digests generated."
);
spec!(
    HALLUCINATED_FACTS,
    "reflexio_hallucinated_facts",
    "reflexio_hallucinated_facts_total",
    Counter,
    "{fact}",
    [],
    "Facts flagged as hallucinated."
);
spec!(
    ATOMICITY_VIOLATIONS,
    "reflexio_atomicity_violations",
    "reflexio_atomicity_violations_total",
    Counter,
    "{fact}",
    [],
    "Facts that were not atomic."
);
spec!(
    ATOMICITY_ASSESSED_FACTS,
    "reflexio_atomicity_assessed_facts",
    "reflexio_atomicity_assessed_facts_total",
    Counter,
    "{fact}",
    [],
    "Facts recorded with an atomicity verdict (atomic or not)."
);
spec!(
    RETENTION_OPERATIONS,
    "reflexio_retention_operations",
    "reflexio_retention_operations_total",
    Counter,
    "{run}",
    [TABLE_LABEL],
    "Retention runs, dry or not, failed or not."
);
spec!(
    RETENTION_DELETED_RECORDS,
    "reflexio_retention_deleted_records",
    "reflexio_retention_deleted_records_total",
    Counter,
    "{record}",
    [TABLE_LABEL],
    "Records deleted by retention runs that were not dry runs."
);
spec!(
    RETENTION_ERRORS,
    "reflexio_retention_errors",
    "reflexio_retention_errors_total",
    Counter,
    "{run}",
    [TABLE_LABEL],
    "Retention runs that failed."
);

spec!(
    COVE_CONFIDENCE,
    "reflexio_cove_confidence",
    "reflexio_cove_confidence",
    Histogram,
    "1",
    [],
    "CoVe confidence of each verified fact."
);
spec!(
    COVE_VERIFICATION_ROUNDS,
    "reflexio_cove_verification_rounds",
    "reflexio_cove_verification_rounds",
    Histogram,
    "{round}",
    [],
    "CoVe verification rounds of each verified fact."
);
spec!(
    CITATION_COVERAGE,
    "reflexio_citation_coverage",
    "reflexio_citation_coverage",
    Histogram,
    "1",
    [],
    "Citation coverage of each fact that has one."
);

spec!(
    COVE_ENABLED,
    "reflexio_cove_enabled",
    "reflexio_cove_enabled",
    Gauge,
    "",
    [],
    "1 if CoVe is enabled, else 0 (0 until the configuration is reported)."
);
spec!(
    COVE_CONFIDENCE_THRESHOLD,
    "reflexio_cove_confidence_threshold",
    "reflexio_cove_confidence_threshold",
    Gauge,
    "",
    [],
    "Configured CoVe confidence threshold (0 until the configuration is reported)."
);
spec!(
    COVE_AVG_CONFIDENCE_24H,
    "reflexio_cove_avg_confidence_24h",
    "reflexio_cove_avg_confidence_24h",
    Gauge,
    "",
    [],
    "Mean CoVe confidence of facts verified in the last 24h: reflexio_cove_confidence_sum_24h / reflexio_cove_verified_facts_24h, 0 when that is 0."
);
spec!(
    COVE_AVG_VERIFICATION_ROUNDS_24H,
    "reflexio_cove_avg_verification_rounds_24h",
    "reflexio_cove_avg_verification_rounds_24h",
    Gauge,
    "{round}",
    [],
    "Mean CoVe verification rounds of facts verified in the last 24h: reflexio_cove_verification_rounds_sum_24h / reflexio_cove_verified_facts_24h, 0 when that is 0."
);
spec!(
    HALLUCINATION_RATE_24H,
    "reflexio_hallucination_rate_24h",
    "reflexio_hallucination_rate_24h",
    Gauge,
    "",
    [],
    "Hallucinated facts / facts with a hallucination verdict, last 24h: reflexio_hallucinated_facts_24h / reflexio_assessed_facts_24h, 0 when that is 0."
);
spec!(
    CITATION_COVERAGE_24H,
    "reflexio_citation_coverage_24h",
    "reflexio_citation_coverage_24h",
    Gauge,
    "",
    [],
    "Mean citation coverage of facts with one, last 24h: reflexio_citation_coverage_sum_24h / reflexio_citation_assessed_facts_24h, 0 when that is 0."
);
spec!(
    ATOMICITY_VIOLATIONS_24H,
    "reflexio_atomicity_violations_24h",
    "reflexio_atomicity_violations_24h",
    Gauge,
    "{fact}",
    [],
    "Non-atomic facts, last 24h, of reflexio_atomicity_assessed_facts_24h with an atomicity verdict."
);
spec!(
    FACTS_24H,
    "reflexio_facts_24h",
    "reflexio_facts_24h",
    Gauge,
    "{fact}",
    [],
    "Facts recorded in the last 24h, with or without quality verdicts."
);
spec!(
    ASSESSED_FACTS_24H,
    "reflexio_assessed_facts_24h",
    "reflexio_assessed_facts_24h",
    Gauge,
    "{fact}",
    [],
    "Facts with a hallucination verdict in the last 24h: the denominator of reflexio_hallucination_rate_24h."
);
spec!(
    HALLUCINATED_FACTS_24H,
    "reflexio_hallucinated_facts_24h",
    "reflexio_hallucinated_facts_24h",
    Gauge,
    "{fact}",
    [],
    "Facts flagged as hallucinated in the last 24h: the numerator of reflexio_hallucination_rate_24h."
);
spec!(
    ATOMICITY_ASSESSED_FACTS_24H,
    "reflexio_atomicity_assessed_facts_24h",
    "reflexio_atomicity_assessed_facts_24h",
    Gauge,
    "{fact}",
    [],
    "Facts with an atomicity verdict in the last 24h: the denominator of reflexio_atomicity_violations_24h."
);
spec!(
    CITATION_ASSESSED_FACTS_24H,
    "reflexio_citation_assessed_facts_24h",
    "reflexio_citation_assessed_facts_24h",
    Gauge,
    "{fact}",
    [],
    "Facts with a citation coverage in the last 24h: the denominator of reflexio_citation_coverage_24h."
);
spec!(
    CITATION_COVERAGE_SUM_24H,
    "reflexio_citation_coverage_sum_24h",
    "reflexio_citation_coverage_sum_24h",
    Gauge,
    "",
    [],
    "Sum of the citation coverages of the last 24h: the numerator of reflexio_citation_coverage_24h."
);
spec!(
    COVE_CONFIDENCE_SUM_24H,
    "reflexio_cove_confidence_sum_24h",
    "reflexio_cove_confidence_sum_24h",
    Gauge,
    "",
    [],
    "Sum of the CoVe confidences of the last 24h: the numerator of reflexio_cove_avg_confidence_24h."
);
spec!(
    COVE_VERIFICATION_ROUNDS_SUM_24H,
    "reflexio_cove_verification_rounds_sum_24h",
    "reflexio_cove_verification_rounds_sum_24h",
    Gauge,
    "{round}",
    [],
    "Sum of the CoVe verification rounds of the last 24h: the numerator of reflexio_cove_avg_verification_rounds_24h."
);
spec!(
    COVE_VERIFIED_FACTS_24H,
    "reflexio_cove_verified_facts_24h",
    "reflexio_cove_verified_facts_24h",
    Gauge,
    "{fact}",
    [],
    "Facts with a CoVe result in the last 24h: the denominator of the 24h CoVe means."
);
spec!(
    RETENTION_OPERATIONS_7D,
    "reflexio_retention_operations_7d",
    "reflexio_retention_operations_7d",
    Gauge,
    "{run}",
    [],
    "Retention runs, last 7 days."
);
spec!(
    RETENTION_DELETED_RECORDS_7D,
    "reflexio_retention_deleted_records_7d",
    "reflexio_retention_deleted_records_7d",
    Gauge,
    "{record}",
    [],
    "Records deleted by non-dry retention runs, last 7 days."
);
spec!(
    RETENTION_ERRORS_7D,
    "reflexio_retention_errors_7d",
    "reflexio_retention_errors_7d",
    Gauge,
    "{run}",
    [],
    "Retention runs that failed, last 7 days."
);
spec!(
    ACTIVE_LOCKS,
    "reflexio_active_locks",
    "reflexio_active_locks",
    Gauge,
    "{lock}",
    [],
    "Process locks held now."
);
spec!(
    STALE_LOCKS,
    "reflexio_stale_locks",
    "reflexio_stale_locks",
    Gauge,
    "{lock}",
    [],
    "Process locks held for longer than the stale threshold (default 1h), or whose holder process on this host is gone."
);

spec!(
    EVICTED_LOCKS,
    "reflexio_evicted_locks",
    "reflexio_evicted_locks_total",
    Counter,
    "{lock}",
    [],
    "Locks evicted: held past the eviction age (default 24 times the stale threshold) by a holder not known to be alive, or held longest when the lock table was full (a holder not known to be alive first)."
);

spec!(
    CLOCK_BACKWARD_JUMPS,
    "reflexio_clock_backward_jumps",
    "reflexio_clock_backward_jumps_total",
    Counter,
    "{jump}",
    [],
    "Times the clock went back by more than a second; windows do not follow it back."
);

spec!(
    STORE_HEALTHY,
    "reflexio_store_healthy",
    "reflexio_store_healthy",
    Gauge,
    "",
    [],
    "1 if the store was read and the last write to it succeeded, else 0."
);
spec!(
    STORE_LAST_FLUSH,
    "reflexio_store_last_flush_timestamp_seconds",
    "reflexio_store_last_flush_timestamp_seconds",
    Gauge,
    "s",
    [],
    "Unix time of the last successful flush to the store; 0 before the first."
);
spec!(
    STORE_FLUSHES,
    "reflexio_store_flushes",
    "reflexio_store_flushes_total",
    Counter,
    "{flush}",
    [],
    "Successful flushes: each writes what is new and reads what other processes wrote."
);
spec!(
    STORE_FLUSH_ERRORS,
    "reflexio_store_flush_errors",
    "reflexio_store_flush_errors_total",
    Counter,
    "{flush}",
    [KIND_LABEL],
    "Failed flushes (or failed attempts to open or check the store), by kind of error."
);

spec!(
    INGEST_REQUESTS,
    "reflexio_ingest_requests",
    "reflexio_ingest_requests_total",
    Counter,
    "{request}",
    [OUTCOME_LABEL],
    "Requests to POST /v1/events, by outcome."
);
spec!(
    INGEST_EVENTS,
    "reflexio_ingest_events",
    "reflexio_ingest_events_total",
    Counter,
    "{event}",
    [],
    "Events committed through POST /v1/events."
);
spec!(
    HTTP_MALFORMED_REQUESTS,
    "reflexio_http_malformed_requests",
    "reflexio_http_malformed_requests_total",
    Counter,
    "{request}",
    [],
    "Requests the HTTP layer refused before any endpoint saw them: malformed request line, headers, Content-Length or Transfer-Encoding, too many headers, too long a URL, or a head that did not arrive in time."
);
spec!(
    OTLP_EXPORTS,
    "reflexio_otlp_exports",
    "reflexio_otlp_exports_total",
    Counter,
    "{export}",
    [],
    "Successful OTLP pushes (when a collector is configured)."
);
spec!(
    OTLP_EXPORT_ERRORS,
    "reflexio_otlp_export_errors",
    "reflexio_otlp_export_errors_total",
    Counter,
    "{export}",
    [],
    "Failed OTLP pushes: the collector was down, slow or refused them (when a collector is configured)."
);

spec!(
    BRIDGE_BUILD_INFO,
    "reflexio_bridge_build_info",
    "reflexio_bridge_build_info",
    Gauge,
    "",
    [VERSION_LABEL, RUSTC_VERSION_LABEL, TARGET_LABEL],
    "Always 1; the labels say which build of reflexio-bridge this is."
);

/// The labels of `reflexio_bridge_build_info`: the bridge's version, the compiler's version and
/// the target it was built for.
pub const VERSION_LABEL: &str = "version";
/// See [`VERSION_LABEL`].
pub const RUSTC_VERSION_LABEL: &str = "rustc_version";
/// See [`VERSION_LABEL`].
pub const TARGET_LABEL: &str = "target";

/// The label of `reflexio_ingest_requests_total`: `accepted`, `replayed`, `conflict`,
/// `invalid`, `unauthorized`, `too_large`, `unsupported_media_type`, `unavailable`, `timed_out`
/// or `overloaded`.
pub const OUTCOME_LABEL: &str = "outcome";

/// The label naming the kind of a store error: `busy`, `full`, `read_only`, `corrupt`,
/// `incompatible`, `io`, `gone` or `other`.
pub const KIND_LABEL: &str = "kind";

/// The label naming what the bridge reads of an existing deployment: one of its tables
/// (`transcriptions`, `facts`, `digests`, `retention_audit_log`) or `lock_dir`.
pub const SOURCE_LABEL: &str = "source";

spec!(
    LEGACY_ROWS,
    "reflexio_legacy_rows",
    "reflexio_legacy_rows_total",
    Counter,
    "{row}",
    [SOURCE_LABEL],
    "Rows of the application's database counted, by table: recorded at their time, or (older than 7 days, or without a usable time) in the totals only."
);
spec!(
    LEGACY_TIMESTAMP_ERRORS,
    "reflexio_legacy_timestamp_errors",
    "reflexio_legacy_timestamp_errors_total",
    Counter,
    "{row}",
    [SOURCE_LABEL],
    "Rows whose time is NULL or unparseable, by table: counted in the totals only, in no window."
);
spec!(
    LEGACY_INVALID_VALUES,
    "reflexio_legacy_invalid_values",
    "reflexio_legacy_invalid_values_total",
    Counter,
    "{value}",
    [SOURCE_LABEL],
    "Values of recorded rows (or lock files) left out because they were invalid, by source."
);
spec!(
    LEGACY_READ_ERRORS,
    "reflexio_legacy_read_errors",
    "reflexio_legacy_read_errors_total",
    Counter,
    "{poll}",
    [SOURCE_LABEL],
    "Polls of the application's database or lock directory that failed, by source (`database` or `lock_dir`)."
);
spec!(
    LEGACY_HEALTHY,
    "reflexio_legacy_healthy",
    "reflexio_legacy_healthy",
    Gauge,
    "",
    [SOURCE_LABEL],
    "1 if the last poll of the source (`database` or `lock_dir`) succeeded, else 0."
);

/// Every metric a recorder exports, with or without a store, in the order of the contract
/// table.
pub const ALL: &[MetricSpec] = &[
    TRANSCRIPTIONS,
    FACTS,
    DIGESTS,
    COVE_ENABLED,
    COVE_CONFIDENCE_THRESHOLD,
    COVE_AVG_CONFIDENCE_24H,
    COVE_AVG_VERIFICATION_ROUNDS_24H,
    HALLUCINATION_RATE_24H,
    CITATION_COVERAGE_24H,
    ATOMICITY_VIOLATIONS_24H,
    RETENTION_OPERATIONS_7D,
    RETENTION_DELETED_RECORDS_7D,
    RETENTION_ERRORS_7D,
    ACTIVE_LOCKS,
    STALE_LOCKS,
    FACTS_24H,
    COVE_VERIFIED_FACTS_24H,
    HALLUCINATED_FACTS,
    ATOMICITY_VIOLATIONS,
    RETENTION_OPERATIONS,
    RETENTION_DELETED_RECORDS,
    RETENTION_ERRORS,
    COVE_CONFIDENCE,
    COVE_VERIFICATION_ROUNDS,
    CITATION_COVERAGE,
    CLOCK_BACKWARD_JUMPS,
    ASSESSED_FACTS,
    ASSESSED_FACTS_24H,
    HALLUCINATED_FACTS_24H,
    ATOMICITY_ASSESSED_FACTS_24H,
    CITATION_ASSESSED_FACTS_24H,
    CITATION_COVERAGE_SUM_24H,
    COVE_CONFIDENCE_SUM_24H,
    COVE_VERIFICATION_ROUNDS_SUM_24H,
    ATOMICITY_ASSESSED_FACTS,
    EVICTED_LOCKS,
];

/// The metrics `reflexio-bridge` exports besides a recorder's.
pub const BRIDGE: &[MetricSpec] = &[
    INGEST_REQUESTS,
    INGEST_EVENTS,
    HTTP_MALFORMED_REQUESTS,
    OTLP_EXPORTS,
    OTLP_EXPORT_ERRORS,
    BRIDGE_BUILD_INFO,
];

/// The metrics `reflexio-bridge` exports when it follows an existing deployment
/// (`--legacy-db`, `--lock-dir`).
pub const LEGACY: &[MetricSpec] = &[
    LEGACY_ROWS,
    LEGACY_TIMESTAMP_ERRORS,
    LEGACY_INVALID_VALUES,
    LEGACY_READ_ERRORS,
    LEGACY_HEALTHY,
];

/// The metrics a recorder with a store exports as well.
pub const STORE: &[MetricSpec] = &[
    STORE_HEALTHY,
    STORE_LAST_FLUSH,
    STORE_FLUSHES,
    STORE_FLUSH_ERRORS,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_consistent() {
        let mut seen = HashSet::new();
        for m in ALL.iter().chain(STORE).chain(BRIDGE).chain(LEGACY) {
            assert!(seen.insert(m.exported), "{} listed twice", m.exported);
            assert!(m.instrument.starts_with("reflexio_"));
            match m.kind {
                MetricKind::Counter => {
                    assert_eq!(m.exported, format!("{}_total", m.instrument));
                    assert!(!m.instrument.ends_with("_total"), "{}", m.instrument);
                }
                _ => assert_eq!(m.exported, m.instrument),
            }
            if m.kind == MetricKind::Gauge {
                assert_ne!(
                    m.unit, "1",
                    "{}: the collector would append _ratio",
                    m.exported
                );
            }
            for suffix in ["_bucket", "_sum", "_count"] {
                assert!(
                    !m.exported.ends_with(suffix),
                    "{} looks like a histogram part",
                    m.exported
                );
            }
        }
    }
}
