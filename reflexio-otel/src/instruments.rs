//! OpenTelemetry wiring: the contract's instruments on a user-supplied `Meter`.
//!
//! Counters and gauges are observable instruments reading the recorder's latest snapshot: the
//! first callback of a collection refreshes it, the rest read it, so one collection is one
//! consistent instant and no callback holds a lock or does I/O. Histograms are SDK histograms
//! fed by replaying the counted bucket deltas after every refresh (see [`crate::histogram`]).

use crate::contract::{self, KIND_LABEL, MetricSpec, OVERFLOW_ATTRIBUTE, TABLE_LABEL};
use crate::histogram::{CONFIDENCE, COVERAGE, Counts, HistogramCounts, Layout, ROUNDS};
use crate::persist::StoreHealth;
use crate::recorder::Inner;
use crate::snapshot::{Snapshot, TableLabel};
use crate::store::StoreErrorKind;
use crate::window::RetentionBucket;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Histogram, Meter};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

/// What has been replayed into the SDK histograms so far.
#[derive(Default)]
struct Applied {
    /// The snapshot it came from.
    seq: u64,
    /// Observations per bucket (their `sum` fields are unused).
    counts: HistogramCounts,
    /// The sum of the values recorded, per histogram, in value units.
    replayed: [f64; 3],
}

/// The SDK histograms of one registration, and the observations already replayed into them.
struct HistogramSink {
    coverage: Histogram<f64>,
    confidence: Histogram<f64>,
    rounds: Histogram<f64>,
    applied: Mutex<Applied>,
}

impl HistogramSink {
    fn new(meter: &Meter) -> Self {
        let histogram = |spec: &MetricSpec, layout: &Layout| {
            meter
                .f64_histogram(spec.instrument)
                .with_description(spec.help)
                .with_unit(spec.unit)
                .with_boundaries(layout.bounds.to_vec())
                .build()
        };
        Self {
            coverage: histogram(&contract::CITATION_COVERAGE, &COVERAGE),
            confidence: histogram(&contract::COVE_CONFIDENCE, &CONFIDENCE),
            rounds: histogram(&contract::COVE_VERIFICATION_ROUNDS, &ROUNDS),
            applied: Mutex::new(Applied::default()),
        }
    }

    /// Replays what `snapshot` counted beyond what was replayed already.
    fn sync(&self, snapshot: &Snapshot) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if snapshot.seq <= applied.seq {
            return;
        }
        let Applied {
            counts, replayed, ..
        } = &mut *applied;
        let target = &snapshot.histograms;
        replay(
            &self.coverage,
            &target.coverage,
            &mut counts.coverage,
            &mut replayed[0],
            &COVERAGE,
        );
        replay(
            &self.confidence,
            &target.confidence,
            &mut counts.confidence,
            &mut replayed[1],
            &CONFIDENCE,
        );
        replay(
            &self.rounds,
            &target.rounds,
            &mut counts.rounds,
            &mut replayed[2],
            &ROUNDS,
        );
        applied.seq = snapshot.seq;
    }
}

/// Replays the observations `target` has beyond `applied`, aiming the SDK's sum at `target`'s:
/// a snapshot taken mid-record can hold a sum without its bucket count (or, never, the other
/// way round), and the difference is made up by the next observations instead of being lost.
fn replay<const N: usize>(
    histogram: &Histogram<f64>,
    target: &Counts<N>,
    applied: &mut Counts<N>,
    replayed: &mut f64,
    layout: &Layout,
) {
    let Some(new) = target.since(&Counts {
        buckets: applied.buckets,
        sum: 0,
    }) else {
        return;
    };
    if new.count() == 0 {
        return;
    }
    let missing = target.sum as f64 / layout.scale as f64 - *replayed;
    for (value, count) in new.replay_values(layout, missing) {
        for _ in 0..count {
            histogram.record(value, &[]);
        }
        *replayed += value * count as f64;
    }
    applied.buckets = target.buckets;
}

type U64Callback = dyn Fn(&dyn AsyncInstrument<u64>) + Send + Sync;
type F64Callback = dyn Fn(&dyn AsyncInstrument<f64>) + Send + Sync;

fn u64_counter(meter: &Meter, spec: &MetricSpec, callback: Box<U64Callback>) {
    meter
        .u64_observable_counter(spec.instrument)
        .with_description(spec.help)
        .with_unit(spec.unit)
        .with_callback(callback)
        .build();
}

fn u64_gauge(meter: &Meter, spec: &MetricSpec, callback: Box<U64Callback>) {
    meter
        .u64_observable_gauge(spec.instrument)
        .with_description(spec.help)
        .with_unit(spec.unit)
        .with_callback(callback)
        .build();
}

fn f64_gauge(meter: &Meter, spec: &MetricSpec, callback: Box<F64Callback>) {
    meter
        .f64_observable_gauge(spec.instrument)
        .with_description(spec.help)
        .with_unit(spec.unit)
        .with_callback(callback)
        .build();
}

fn table_attributes(label: &TableLabel) -> [KeyValue; 1] {
    match label {
        TableLabel::Table(name) => [KeyValue::new(TABLE_LABEL, name.as_str().to_owned())],
        TableLabel::Overflow => [KeyValue::new(OVERFLOW_ATTRIBUTE, true)],
    }
}

/// Registers every contract instrument on `meter`, reading from `inner`.
pub(crate) fn register(inner: &Arc<Inner>, meter: &Meter) {
    let sink = Arc::new(HistogramSink::new(meter));
    {
        let sink = Arc::clone(&sink);
        inner.add_hook(Box::new(move |s| sink.sync(s)));
    }
    // Callbacks run in registration order, and this one runs first in each collection.
    {
        let inner = Arc::clone(inner);
        u64_counter(
            meter,
            &contract::TRANSCRIPTIONS,
            Box::new(move |o| {
                let snapshot = inner.refresh(inner.clock.now());
                o.observe(snapshot.totals.transcriptions, &[]);
            }),
        );
    }
    let latest = |f: fn(&Snapshot) -> u64| -> Box<U64Callback> {
        let inner = Arc::clone(inner);
        Box::new(move |o| o.observe(f(&inner.latest()), &[]))
    };
    let latest_f64 = |f: fn(&Snapshot) -> f64| -> Box<F64Callback> {
        let inner = Arc::clone(inner);
        Box::new(move |o| o.observe(f(&inner.latest()), &[]))
    };
    let per_table = |f: fn(&RetentionBucket) -> u64| -> Box<U64Callback> {
        let inner = Arc::clone(inner);
        Box::new(move |o| {
            for (label, totals) in &inner.latest().retention_by_table {
                o.observe(f(totals), &table_attributes(label));
            }
        })
    };

    u64_counter(meter, &contract::FACTS, latest(|s| s.totals.facts));
    u64_counter(
        meter,
        &contract::ASSESSED_FACTS,
        latest(|s| s.totals.facts.wrapping_sub(s.totals.unassessed)),
    );
    u64_counter(meter, &contract::DIGESTS, latest(|s| s.totals.digests));
    u64_counter(
        meter,
        &contract::HALLUCINATED_FACTS,
        latest(|s| s.totals.hallucinated),
    );
    u64_counter(
        meter,
        &contract::ATOMICITY_VIOLATIONS,
        latest(|s| s.totals.atomicity_violations),
    );
    u64_counter(
        meter,
        &contract::RETENTION_OPERATIONS,
        per_table(|t| t.operations),
    );
    u64_counter(
        meter,
        &contract::RETENTION_DELETED_RECORDS,
        per_table(|t| t.deleted_records),
    );
    u64_counter(meter, &contract::RETENTION_ERRORS, per_table(|t| t.errors));

    u64_gauge(
        meter,
        &contract::COVE_ENABLED,
        latest(|s| s.cove.map_or(0, |c| u64::from(c.enabled))),
    );
    f64_gauge(
        meter,
        &contract::COVE_CONFIDENCE_THRESHOLD,
        latest_f64(|s| s.cove.map_or(0.0, |c| c.threshold.get())),
    );
    f64_gauge(
        meter,
        &contract::COVE_AVG_CONFIDENCE_24H,
        latest_f64(|s| s.facts_24h.cove_avg_confidence()),
    );
    f64_gauge(
        meter,
        &contract::COVE_AVG_VERIFICATION_ROUNDS_24H,
        latest_f64(|s| s.facts_24h.cove_avg_verification_rounds()),
    );
    f64_gauge(
        meter,
        &contract::HALLUCINATION_RATE_24H,
        latest_f64(|s| s.facts_24h.hallucination_rate()),
    );
    f64_gauge(
        meter,
        &contract::CITATION_COVERAGE_24H,
        latest_f64(|s| s.facts_24h.citation_coverage()),
    );
    u64_gauge(
        meter,
        &contract::ATOMICITY_VIOLATIONS_24H,
        latest(|s| s.facts_24h.non_atomic),
    );
    u64_gauge(meter, &contract::FACTS_24H, latest(|s| s.facts_24h.facts));
    u64_gauge(
        meter,
        &contract::ASSESSED_FACTS_24H,
        latest(|s| s.facts_24h.assessed()),
    );
    u64_gauge(
        meter,
        &contract::COVE_VERIFIED_FACTS_24H,
        latest(|s| s.facts_24h.cove_facts),
    );
    u64_gauge(
        meter,
        &contract::RETENTION_OPERATIONS_7D,
        latest(|s| s.retention_7d.operations),
    );
    u64_gauge(
        meter,
        &contract::RETENTION_DELETED_RECORDS_7D,
        latest(|s| s.retention_7d.deleted_records),
    );
    u64_gauge(
        meter,
        &contract::RETENTION_ERRORS_7D,
        latest(|s| s.retention_7d.errors),
    );
    u64_gauge(meter, &contract::ACTIVE_LOCKS, latest(|s| s.locks.active));
    u64_gauge(meter, &contract::STALE_LOCKS, latest(|s| s.locks.stale));
    u64_counter(
        meter,
        &contract::CLOCK_BACKWARD_JUMPS,
        latest(|s| s.clock_jumps_back),
    );

    if inner.has_store() {
        register_store(inner, meter);
    }
}

/// The store's health metrics.
fn register_store(inner: &Arc<Inner>, meter: &Meter) {
    let health = |f: fn(&StoreHealth) -> u64| -> Box<U64Callback> {
        let inner = Arc::clone(inner);
        Box::new(move |o| {
            if let Some(h) = &inner.latest().store {
                o.observe(f(h), &[]);
            }
        })
    };
    u64_gauge(
        meter,
        &contract::STORE_HEALTHY,
        health(|h| u64::from(h.is_healthy())),
    );
    u64_gauge(
        meter,
        &contract::STORE_LAST_FLUSH,
        health(|h| {
            h.last_success
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        }),
    );
    u64_counter(meter, &contract::STORE_FLUSHES, health(|h| h.flushes));
    let inner = Arc::clone(inner);
    u64_counter(
        meter,
        &contract::STORE_FLUSH_ERRORS,
        Box::new(move |o| {
            if let Some(h) = &inner.latest().store {
                for kind in StoreErrorKind::ALL {
                    o.observe(h.errors(kind), &[KeyValue::new(KIND_LABEL, kind.as_str())]);
                }
            }
        }),
    );
}
