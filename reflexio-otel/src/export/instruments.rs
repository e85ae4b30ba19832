//! OpenTelemetry wiring: the contract's instruments on a user-supplied `Meter`.
//!
//! Counters and gauges are observable instruments reading the recorder's latest snapshot: the
//! first callback of a collection refreshes it, the rest read it, so one collection is one
//! consistent instant. No callback does I/O; the first takes the engine's locks briefly to
//! refresh the snapshot, the rest read it. Histograms are SDK histograms
//! fed by replaying the counted bucket deltas after every refresh (see `model::histogram`).
//!
//! The callbacks read through a [`SnapshotSource`], never the engine itself.

use crate::contract::{self, KIND_LABEL, OVERFLOW_ATTRIBUTE, TABLE_LABEL};
use crate::engine::snapshot::{Snapshot, SnapshotSource};
use crate::error::StoreErrorKind;
use crate::model::bucket::RetentionBucket;
use crate::model::histogram::{CONFIDENCE, COVERAGE, Counts, HistogramCounts, Layout, ROUNDS};
use crate::model::totals::TableLabel;
use crate::store::health::StoreHealth;
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
        Self {
            coverage: contract::CITATION_COVERAGE.histogram(meter, COVERAGE.bounds),
            confidence: contract::COVE_CONFIDENCE.histogram(meter, CONFIDENCE.bounds),
            rounds: contract::COVE_VERIFICATION_ROUNDS.histogram(meter, ROUNDS.bounds),
            applied: Mutex::new(Applied::default()),
        }
    }

    /// Replays what `snapshot` counted beyond what was replayed already.
    fn sync(&self, snapshot: &Snapshot) {
        if !exported(snapshot) {
            return;
        }
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

/// Whether the domain series are exported from `snapshot`: always without a store; with one,
/// once it has been read. A store that cannot be read at start is not exported as zeros (nor
/// as the little recorded since), which a scraper would take for a counter reset followed by a
/// huge increase once the store is read: until then only the `reflexio_store_*` series are.
fn exported(snapshot: &Snapshot) -> bool {
    snapshot.store.as_ref().is_none_or(StoreHealth::is_loaded)
}

type U64Callback = dyn Fn(&dyn AsyncInstrument<u64>) + Send + Sync;
type F64Callback = dyn Fn(&dyn AsyncInstrument<f64>) + Send + Sync;

fn table_attributes(label: &TableLabel) -> [KeyValue; 1] {
    match label {
        TableLabel::Table(name) => [KeyValue::new(TABLE_LABEL, name.as_str().to_owned())],
        TableLabel::Overflow => [KeyValue::new(OVERFLOW_ATTRIBUTE, true)],
    }
}

/// Registers every contract instrument on `meter`, reading from `source`.
pub(crate) fn register(source: Arc<dyn SnapshotSource>, meter: &Meter) {
    let sink = Arc::new(HistogramSink::new(meter));
    {
        let sink = Arc::clone(&sink);
        source.on_refresh(Box::new(move |s| sink.sync(s)));
    }
    // Callbacks run in registration order, and this one runs first in each collection.
    {
        let source = Arc::clone(&source);
        contract::TRANSCRIPTIONS.observe_u64(meter, move |o| {
            let snapshot = source.refresh();
            if exported(&snapshot) {
                o.observe(snapshot.totals.transcriptions, &[]);
            }
        });
    }
    let latest = |f: fn(&Snapshot) -> u64| -> Box<U64Callback> {
        let source = Arc::clone(&source);
        Box::new(move |o| {
            let s = source.latest();
            if exported(&s) {
                o.observe(f(&s), &[]);
            }
        })
    };
    let latest_f64 = |f: fn(&Snapshot) -> f64| -> Box<F64Callback> {
        let source = Arc::clone(&source);
        Box::new(move |o| {
            let s = source.latest();
            if exported(&s) {
                o.observe(f(&s), &[]);
            }
        })
    };
    let per_table = |f: fn(&RetentionBucket) -> u64| -> Box<U64Callback> {
        let source = Arc::clone(&source);
        Box::new(move |o| {
            let s = source.latest();
            if exported(&s) {
                for (label, totals) in &s.retention_by_table {
                    o.observe(f(totals), &table_attributes(label));
                }
            }
        })
    };

    contract::FACTS.observe_u64(meter, latest(|s| s.totals.facts));
    contract::ASSESSED_FACTS.observe_u64(meter, latest(|s| s.totals.hallucination_assessed));
    contract::DIGESTS.observe_u64(meter, latest(|s| s.totals.digests));
    contract::HALLUCINATED_FACTS.observe_u64(meter, latest(|s| s.totals.hallucinated));
    contract::ATOMICITY_ASSESSED_FACTS.observe_u64(meter, latest(|s| s.totals.atomicity_assessed));
    contract::ATOMICITY_VIOLATIONS.observe_u64(meter, latest(|s| s.totals.atomicity_violations));
    contract::RETENTION_OPERATIONS.observe_u64(meter, per_table(|t| t.operations));
    contract::RETENTION_DELETED_RECORDS.observe_u64(meter, per_table(|t| t.deleted_records));
    contract::RETENTION_ERRORS.observe_u64(meter, per_table(|t| t.errors));

    contract::COVE_ENABLED.observe_u64(
        meter,
        latest(|s| s.cove.map_or(0, |c| u64::from(c.enabled))),
    );
    contract::COVE_CONFIDENCE_THRESHOLD.observe_f64(
        meter,
        latest_f64(|s| s.cove.map_or(0.0, |c| c.threshold.get())),
    );
    contract::COVE_AVG_CONFIDENCE_24H
        .observe_f64(meter, latest_f64(|s| s.facts_24h.cove_avg_confidence()));
    contract::COVE_AVG_VERIFICATION_ROUNDS_24H.observe_f64(
        meter,
        latest_f64(|s| s.facts_24h.cove_avg_verification_rounds()),
    );
    contract::HALLUCINATION_RATE_24H
        .observe_f64(meter, latest_f64(|s| s.facts_24h.hallucination_rate()));
    contract::CITATION_COVERAGE_24H
        .observe_f64(meter, latest_f64(|s| s.facts_24h.citation_coverage()));
    contract::ATOMICITY_VIOLATIONS_24H.observe_u64(meter, latest(|s| s.facts_24h.non_atomic));
    // Each 24h ratio or mean, with its numerator and denominator, from the same snapshot.
    contract::FACTS_24H.observe_u64(meter, latest(|s| s.facts_24h.facts));
    contract::ASSESSED_FACTS_24H.observe_u64(meter, latest(|s| s.facts_24h.hallucination_assessed));
    contract::HALLUCINATED_FACTS_24H.observe_u64(meter, latest(|s| s.facts_24h.hallucinated));
    contract::ATOMICITY_ASSESSED_FACTS_24H
        .observe_u64(meter, latest(|s| s.facts_24h.atomicity_assessed));
    contract::CITATION_ASSESSED_FACTS_24H
        .observe_u64(meter, latest(|s| s.facts_24h.citation_assessed));
    contract::CITATION_COVERAGE_SUM_24H
        .observe_f64(meter, latest_f64(|s| s.facts_24h.citation_coverage_sum()));
    contract::COVE_VERIFIED_FACTS_24H.observe_u64(meter, latest(|s| s.facts_24h.cove_facts));
    contract::COVE_CONFIDENCE_SUM_24H
        .observe_f64(meter, latest_f64(|s| s.facts_24h.cove_confidence_sum()));
    contract::COVE_VERIFICATION_ROUNDS_SUM_24H
        .observe_u64(meter, latest(|s| s.facts_24h.rounds_sum));
    contract::RETENTION_OPERATIONS_7D.observe_u64(meter, latest(|s| s.retention_7d.operations));
    contract::RETENTION_DELETED_RECORDS_7D
        .observe_u64(meter, latest(|s| s.retention_7d.deleted_records));
    contract::RETENTION_ERRORS_7D.observe_u64(meter, latest(|s| s.retention_7d.errors));
    contract::ACTIVE_LOCKS.observe_u64(meter, latest(|s| s.locks.active));
    contract::STALE_LOCKS.observe_u64(meter, latest(|s| s.locks.stale));
    contract::EVICTED_LOCKS.observe_u64(meter, latest(|s| s.locks.evicted));
    contract::CLOCK_BACKWARD_JUMPS.observe_u64(meter, latest(|s| s.clock_jumps_back));

    if source.latest().store.is_some() {
        register_store(&source, meter);
    }
}

/// The store's health metrics.
fn register_store(source: &Arc<dyn SnapshotSource>, meter: &Meter) {
    let health = |f: fn(&StoreHealth) -> u64| -> Box<U64Callback> {
        let source = Arc::clone(source);
        Box::new(move |o| {
            if let Some(h) = &source.latest().store {
                o.observe(f(h), &[]);
            }
        })
    };
    contract::STORE_HEALTHY.observe_u64(meter, health(|h| u64::from(h.is_healthy())));
    contract::STORE_LAST_FLUSH.observe_u64(
        meter,
        health(|h| {
            h.last_success
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        }),
    );
    contract::STORE_FLUSHES.observe_u64(meter, health(|h| h.flushes));
    let source = Arc::clone(source);
    contract::STORE_FLUSH_ERRORS.observe_u64(meter, move |o| {
        if let Some(h) = &source.latest().store {
            for kind in StoreErrorKind::ALL {
                o.observe(h.errors(kind), &[KeyValue::new(KIND_LABEL, kind.as_str())]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot::RefreshHook;
    use crate::error::StoreError;
    use crate::event::{Fact, Name};
    use crate::export::prometheus::PrometheusPipeline;
    use crate::model::bucket::FactBucket;
    use crate::model::totals::Totals;
    use opentelemetry::metrics::MeterProvider;
    use std::path::Path;

    /// A source that publishes `next` (with a new `seq`) on every refresh.
    struct FakeSource {
        next: Mutex<Snapshot>,
        latest: Mutex<Arc<Snapshot>>,
        hooks: Mutex<Vec<RefreshHook>>,
        refreshes: Mutex<u64>,
    }

    impl FakeSource {
        fn new(snapshot: Snapshot) -> Arc<Self> {
            Arc::new(Self {
                latest: Mutex::new(Arc::new(snapshot.clone())),
                next: Mutex::new(snapshot),
                hooks: Mutex::new(Vec::new()),
                refreshes: Mutex::new(0),
            })
        }

        fn refreshes(&self) -> u64 {
            *self.refreshes.lock().expect("not poisoned")
        }
    }

    impl SnapshotSource for FakeSource {
        fn refresh(&self) -> Arc<Snapshot> {
            let mut count = self.refreshes.lock().expect("not poisoned");
            *count += 1;
            let mut next = self.next.lock().expect("not poisoned").clone();
            next.seq = *count;
            let next = Arc::new(next);
            *self.latest.lock().expect("not poisoned") = Arc::clone(&next);
            for hook in self.hooks.lock().expect("not poisoned").iter() {
                hook(&next);
            }
            next
        }

        fn latest(&self) -> Arc<Snapshot> {
            Arc::clone(&self.latest.lock().expect("not poisoned"))
        }

        fn on_refresh(&self, hook: RefreshHook) {
            self.hooks.lock().expect("not poisoned").push(hook);
        }
    }

    fn registered(source: &Arc<FakeSource>) -> PrometheusPipeline {
        let pipeline = PrometheusPipeline::new().expect("pipeline");
        register(
            Arc::clone(source) as Arc<dyn SnapshotSource>,
            &pipeline.provider.meter("test"),
        );
        pipeline
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    #[test]
    fn each_collection_refreshes_once_and_reads_that_one_snapshot() {
        let source = FakeSource::new(Snapshot {
            totals: Totals {
                transcriptions: 3,
                facts: 10,
                hallucination_assessed: 8,
                ..Totals::default()
            },
            facts_24h: FactBucket {
                facts: 10,
                hallucination_assessed: 8,
                hallucinated: 2,
                citation_assessed: 4,
                coverage_sum: 3_500_000_000,
                ..FactBucket::default()
            },
            ..Snapshot::empty()
        });
        let pipeline = registered(&source);
        let text = pipeline.encode().expect("encoded");
        assert_eq!(source.refreshes(), 1);
        assert_eq!(sample(&text, "reflexio_transcriptions_total"), Some(3.0));
        assert_eq!(sample(&text, "reflexio_facts_total"), Some(10.0));
        assert_eq!(sample(&text, "reflexio_assessed_facts_total"), Some(8.0));
        assert_eq!(sample(&text, "reflexio_hallucination_rate_24h"), Some(0.25));
        assert_eq!(sample(&text, "reflexio_hallucinated_facts_24h"), Some(2.0));
        assert_eq!(
            sample(&text, "reflexio_citation_assessed_facts_24h"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "reflexio_citation_coverage_sum_24h"),
            Some(3.5)
        );
        assert_eq!(sample(&text, "reflexio_citation_coverage_24h"), Some(0.875));
        assert_eq!(sample(&text, "reflexio_cove_enabled"), Some(0.0));
        assert!(
            !text.contains("reflexio_store_"),
            "no store, no store metrics"
        );
        pipeline.encode().expect("encoded");
        assert_eq!(source.refreshes(), 2);
    }

    #[test]
    fn store_health_is_exported_when_the_snapshots_carry_it() {
        let mut health = StoreHealth::new("m.db".into());
        let busy = StoreError::new(StoreErrorKind::Busy, Path::new("m.db"), "locked");
        health.succeeded(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        health.failed(
            &busy,
            UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_001),
        );
        let source = FakeSource::new(Snapshot {
            store: Some(health),
            ..Snapshot::empty()
        });
        let text = registered(&source).encode().expect("encoded");
        assert_eq!(sample(&text, "reflexio_store_healthy"), Some(0.0));
        assert_eq!(
            sample(&text, "reflexio_store_last_flush_timestamp_seconds"),
            Some(1_700_000_000.0)
        );
        assert_eq!(sample(&text, "reflexio_store_flushes_total"), Some(1.0));
        assert_eq!(
            sample(&text, "reflexio_store_flush_errors_total{kind=\"busy\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "reflexio_store_flush_errors_total{kind=\"corrupt\"}"),
            Some(0.0),
            "every kind has its series"
        );
    }

    #[test]
    fn tables_past_the_limit_are_exported_as_the_overflow_series() {
        let ops = |operations| RetentionBucket {
            operations,
            ..RetentionBucket::default()
        };
        let source = FakeSource::new(Snapshot {
            retention_by_table: vec![
                (TableLabel::Table(name("facts")), ops(2)),
                (TableLabel::Overflow, ops(5)),
            ],
            ..Snapshot::empty()
        });
        let text = registered(&source).encode().expect("encoded");
        assert_eq!(
            sample(
                &text,
                "reflexio_retention_operations_total{table=\"facts\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "reflexio_retention_operations_total{otel_metric_overflow=\"true\"}"
            ),
            Some(5.0)
        );
    }

    #[test]
    fn histograms_replay_only_what_is_new_in_each_snapshot() {
        let mut counted = HistogramCounts::default();
        for coverage in [0.4, 0.96, 1.0] {
            counted.observe(&Fact::new(coverage).expect("valid"));
        }
        let source = FakeSource::new(Snapshot {
            histograms: counted,
            ..Snapshot::empty()
        });
        let pipeline = registered(&source);
        let text = pipeline.encode().expect("encoded");
        assert_eq!(sample(&text, "reflexio_citation_coverage_count"), Some(3.0));
        assert_eq!(
            sample(&text, "reflexio_citation_coverage_bucket{le=\"0.5\"}"),
            Some(1.0)
        );
        let sum = sample(&text, "reflexio_citation_coverage_sum").expect("sum");
        assert!((sum - 2.36).abs() < 1e-9, "sum {sum}");

        // A snapshot seen again replays nothing.
        let again = source.latest();
        for hook in source.hooks.lock().expect("not poisoned").iter() {
            hook(&again);
        }
        counted.observe(&Fact::new(0.75).expect("valid"));
        source.next.lock().expect("not poisoned").histograms = counted;
        let text = pipeline.encode().expect("encoded");
        assert_eq!(sample(&text, "reflexio_citation_coverage_count"), Some(4.0));
        assert_eq!(
            sample(&text, "reflexio_citation_coverage_bucket{le=\"0.8\"}"),
            Some(2.0)
        );
    }
}
