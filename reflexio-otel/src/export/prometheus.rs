//! Prometheus exposition: a meter provider wired to a Prometheus registry so that names come
//! out exactly as in the contract, and the one place that encodes the registry to text.

use crate::contract;
use crate::error::ExportError;
use crate::model::histogram::{CONFIDENCE, COVERAGE, ROUNDS};
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, MeterProviderBuilder, SdkMeterProvider, Stream,
};
use prometheus::{Registry, TextEncoder};

/// The content type of the text exposition.
pub const TEXT_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// A view for the contract's histograms: their bucket bounds, and no min/max (replayed
/// observations make them meaningless). Add it to a provider you build yourself;
/// [`with_prometheus`] adds it for you.
pub fn histogram_view() -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync + 'static {
    |instrument: &Instrument| {
        let bounds = match instrument.name() {
            n if n == contract::CITATION_COVERAGE.instrument => COVERAGE.bounds,
            n if n == contract::COVE_CONFIDENCE.instrument => CONFIDENCE.bounds,
            n if n == contract::COVE_VERIFICATION_ROUNDS.instrument => ROUNDS.bounds,
            _ => return None,
        };
        Stream::builder()
            .with_aggregation(Aggregation::ExplicitBucketHistogram {
                boundaries: bounds.to_vec(),
                record_min_max: false,
            })
            .build()
            .ok()
    }
}

/// Adds a Prometheus reader that exports into `registry` with contract names (no unit
/// suffixes, no `target_info`, no scope labels), plus [`histogram_view`].
pub fn with_prometheus(
    builder: MeterProviderBuilder,
    registry: &Registry,
) -> Result<MeterProviderBuilder, ExportError> {
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_units()
        .without_target_info()
        .scope_info_enabled(false)
        .build()
        .map_err(|e| ExportError::Exporter(e.to_string()))?;
    Ok(builder.with_reader(exporter).with_view(histogram_view()))
}

/// A meter provider exporting to a fresh Prometheus registry.
#[derive(Debug, Clone)]
pub struct PrometheusPipeline {
    /// Register instruments on its meters.
    pub provider: SdkMeterProvider,
    /// Encode this with [`encode_text`].
    pub registry: Registry,
}

impl PrometheusPipeline {
    /// A provider with only the Prometheus reader.
    pub fn new() -> Result<Self, ExportError> {
        let registry = Registry::new();
        let provider = with_prometheus(SdkMeterProvider::builder(), &registry)?.build();
        Ok(Self { provider, registry })
    }

    /// The registry's exposition as text.
    pub fn encode(&self) -> Result<String, ExportError> {
        encode_text(&self.registry)
    }
}

/// Encodes everything in `registry` in the Prometheus text format ([`TEXT_CONTENT_TYPE`]).
pub fn encode_text(registry: &Registry) -> Result<String, ExportError> {
    Ok(TextEncoder::new().encode_to_string(&registry.gather())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::MetricKind;
    use opentelemetry::metrics::MeterProvider;

    #[test]
    fn a_spec_registers_as_its_kind_with_its_help() {
        let pipeline = PrometheusPipeline::new().expect("pipeline");
        let meter = pipeline.provider.meter("test");
        let counter = contract::INGEST_EVENTS;
        let gauge = contract::LEGACY_HEALTHY;
        let ratio = contract::HALLUCINATION_RATE_24H;
        assert_eq!(
            (counter.kind, gauge.kind, ratio.kind),
            (MetricKind::Counter, MetricKind::Gauge, MetricKind::Gauge)
        );
        counter.observe_u64(&meter, |o| o.observe(7, &[]));
        gauge.observe_u64(&meter, |o| o.observe(1, &[]));
        ratio.observe_f64(&meter, |o| o.observe(0.25, &[]));
        let h = contract::CITATION_COVERAGE.histogram(&meter, COVERAGE.bounds);
        h.record(0.97, &[]);
        let text = pipeline.encode().expect("encoded");
        for (spec, sample) in [
            (counter, "reflexio_ingest_events_total 7"),
            (gauge, "reflexio_legacy_healthy 1"),
            (ratio, "reflexio_hallucination_rate_24h 0.25"),
            (
                contract::CITATION_COVERAGE,
                "reflexio_citation_coverage_count 1",
            ),
        ] {
            let head = format!(
                "# HELP {0} {1}\n# TYPE {0} {2}\n",
                spec.exported,
                spec.help,
                spec.kind.as_str()
            );
            assert!(text.contains(&head), "{head} missing in:\n{text}");
            assert!(text.contains(&format!("\n{sample}\n")), "{sample}");
        }
        assert!(
            text.contains("reflexio_citation_coverage_bucket{le=\"0.98\"} 1\n"),
            "the contract's bounds"
        );
    }
}
