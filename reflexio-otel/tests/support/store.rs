//! What the store tests share (`tests/store.rs` and `tests/faults.rs`): a manual clock at a
//! fixed start, a recorder registered on a Prometheus pipeline, and what they report back.

use opentelemetry::metrics::MeterProvider;
use reflexio_otel::{ManualClock, PrometheusPipeline, Recorder, StoreErrorKind};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z, where [`clock`] starts.
pub(crate) const START: u64 = 1_767_225_600;

/// A manual clock at [`START`].
pub(crate) fn clock() -> ManualClock {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(START))
}

/// A Prometheus pipeline with `r`'s instruments registered on it.
pub(crate) fn registered(r: &Recorder) -> PrometheusPipeline {
    let pipeline = PrometheusPipeline::new().expect("pipeline");
    r.register(&pipeline.provider.meter("reflexio"));
    pipeline
}

/// The samples of `pipeline`'s exposition whose series starts with `prefix` (all with `""`).
pub(crate) fn scraped(pipeline: &PrometheusPipeline, prefix: &str) -> BTreeMap<String, f64> {
    let mut samples = crate::exposition::samples(&pipeline.encode().expect("encode"));
    samples.retain(|series, _| series.starts_with(prefix));
    samples
}

/// The kind of the store's last error, if it has one.
pub(crate) fn error_kind(r: &Recorder) -> Option<StoreErrorKind> {
    r.store_health()
        .and_then(|h| h.last_error.map(|e| e.kind()))
}
