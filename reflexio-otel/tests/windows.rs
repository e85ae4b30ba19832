//! Property tests: for random event streams and clock movements — facts with any subset of
//! their verdicts, events backfilled into the past — every value of a snapshot and every
//! exported series equals a brute-force recomputation from the raw events; and the windows of
//! two recorders add up to those of one recorder that got all the events.

use opentelemetry::metrics::MeterProvider;
use proptest::prelude::*;
use reflexio_otel::contract::{self, MetricSpec};
use reflexio_otel::{
    Clock, CoveConfig, DAY_MINUTES, Event, Fact, Fraction, LockEvent, ManualClock,
    PrometheusPipeline, RecordError, Recorder, RetentionRun, Snapshot, TableLabel, WEEK_MINUTES,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "support/exposition.rs"]
mod exposition;

const START: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const SKEW: Duration = Duration::from_secs(300);
const STALE_AFTER: Duration = Duration::from_secs(3600);
/// The default eviction age: 24 times the stale threshold. The locks here name no pid and host:
/// their holders are never known to be alive.
const EVICT_AFTER: Duration = Duration::from_secs(24 * 3600);
const MAX_TABLES: usize = 3;
const TABLES: [&str; 5] = ["facts", "digests", "transcriptions", "audio", "logs"];

#[derive(Debug, Clone)]
enum When {
    Now,
    /// Seconds before now (backfill), up to nine days.
    Past(u64),
    /// Seconds after now: within the allowed skew the event counts as now, beyond it is refused.
    Future(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Fact(Fact, When),
    Transcription(When),
    Digest(When),
    Retention(usize, u64, bool, bool, When),
    Cove(bool, f64, When),
    Acquire(usize, usize, When),
    Release(usize, usize),
    Check,
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        4 => Just(When::Now),
        3 => (0u64..600).prop_map(When::Past),
        2 => (0u64..9 * 86_400).prop_map(When::Past),
        1 => (0u64..600).prop_map(When::Future),
    ]
}

/// A fact with any subset of its verdicts.
fn fact() -> impl Strategy<Value = Fact> {
    let fraction = prop_oneof![
        Just(0.0),
        Just(0.5),
        Just(0.95),
        Just(0.98),
        Just(1.0),
        0.0f64..=1.0
    ];
    (
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(fraction.clone()),
        proptest::option::of((fraction, 1u32..=12)),
    )
        .prop_map(|(h, a, cov, cove)| {
            let mut f = Fact::unassessed();
            f.hallucinated = h;
            f.atomic = a;
            if let Some(cov) = cov {
                f = f.with_citation_coverage(cov).expect("valid");
            }
            match cove {
                Some((c, r)) => f.with_cove(c, r).expect("valid"),
                None => f,
            }
        })
}

/// A fact as an event: mostly `Event::Fact`, and `Event::UnassessedFact` when it has no verdict
/// but CoVe's (the two must count the same).
fn fact_event(f: Fact) -> Event {
    if f.hallucinated.is_none() && f.atomic.is_none() && f.citation_coverage.is_none() {
        Event::UnassessedFact { cove: f.cove }
    } else {
        Event::Fact(f)
    }
}

/// A fraction in billionths, as the recorder keeps it.
fn nanos(f: Fraction) -> u64 {
    (f.get() * 1e9).round() as u64
}

/// The additive fact series of a set of facts, computed from scratch: the 24h window gauges
/// over the facts of the window, or the counters over all of them.
fn fact_figures<'a>(facts: impl Iterator<Item = &'a Fact> + Clone) -> FactFigures {
    let count = |p: fn(&Fact) -> bool| facts.clone().filter(|f| p(f)).count() as u64;
    let sum = |v: fn(&Fact) -> Option<u64>| facts.clone().filter_map(v).sum::<u64>();
    FactFigures {
        facts: count(|_| true),
        hallucination_assessed: count(|f| f.hallucinated.is_some()),
        hallucinated: count(|f| f.hallucinated == Some(true)),
        atomicity_assessed: count(|f| f.atomic.is_some()),
        non_atomic: count(|f| f.atomic == Some(false)),
        citation_assessed: count(|f| f.citation_coverage.is_some()),
        coverage_nanos: sum(|f| f.citation_coverage.map(nanos)),
        cove_facts: count(|f| f.cove.is_some()),
        confidence_nanos: sum(|f| f.cove.map(|c| nanos(c.confidence))),
        rounds: sum(|f| f.cove.map(|c| u64::from(c.rounds.get()))),
    }
}

#[derive(Debug, Default, PartialEq)]
struct FactFigures {
    facts: u64,
    hallucination_assessed: u64,
    hallucinated: u64,
    atomicity_assessed: u64,
    non_atomic: u64,
    citation_assessed: u64,
    coverage_nanos: u64,
    cove_facts: u64,
    confidence_nanos: u64,
    rounds: u64,
}

impl FactFigures {
    /// The exported 24h series these figures give, by contract name.
    fn window_series(&self) -> Vec<(MetricSpec, f64)> {
        vec![
            (contract::FACTS_24H, self.facts as f64),
            (
                contract::ASSESSED_FACTS_24H,
                self.hallucination_assessed as f64,
            ),
            (contract::HALLUCINATED_FACTS_24H, self.hallucinated as f64),
            (
                contract::ATOMICITY_ASSESSED_FACTS_24H,
                self.atomicity_assessed as f64,
            ),
            (contract::ATOMICITY_VIOLATIONS_24H, self.non_atomic as f64),
            (
                contract::CITATION_ASSESSED_FACTS_24H,
                self.citation_assessed as f64,
            ),
            (
                contract::CITATION_COVERAGE_SUM_24H,
                self.coverage_nanos as f64 / 1e9,
            ),
            (contract::COVE_VERIFIED_FACTS_24H, self.cove_facts as f64),
            (
                contract::COVE_CONFIDENCE_SUM_24H,
                self.confidence_nanos as f64 / 1e9,
            ),
            (
                contract::COVE_VERIFICATION_ROUNDS_SUM_24H,
                self.rounds as f64,
            ),
        ]
    }

    /// The exported counters these figures give, by exported name.
    fn counter_series(&self) -> Vec<(&'static str, f64)> {
        vec![
            (contract::FACTS.exported, self.facts as f64),
            (
                contract::ASSESSED_FACTS.exported,
                self.hallucination_assessed as f64,
            ),
            (
                contract::HALLUCINATED_FACTS.exported,
                self.hallucinated as f64,
            ),
            (
                contract::ATOMICITY_ASSESSED_FACTS.exported,
                self.atomicity_assessed as f64,
            ),
            (
                contract::ATOMICITY_VIOLATIONS.exported,
                self.non_atomic as f64,
            ),
            (
                "reflexio_citation_coverage_count",
                self.citation_assessed as f64,
            ),
            ("reflexio_cove_confidence_count", self.cove_facts as f64),
            (
                "reflexio_cove_verification_rounds_count",
                self.cove_facts as f64,
            ),
        ]
    }
}

/// Each 24h ratio or mean, with its numerator and denominator.
const RATIOS: [(MetricSpec, MetricSpec, MetricSpec); 4] = [
    (
        contract::HALLUCINATION_RATE_24H,
        contract::HALLUCINATED_FACTS_24H,
        contract::ASSESSED_FACTS_24H,
    ),
    (
        contract::CITATION_COVERAGE_24H,
        contract::CITATION_COVERAGE_SUM_24H,
        contract::CITATION_ASSESSED_FACTS_24H,
    ),
    (
        contract::COVE_AVG_CONFIDENCE_24H,
        contract::COVE_CONFIDENCE_SUM_24H,
        contract::COVE_VERIFIED_FACTS_24H,
    ),
    (
        contract::COVE_AVG_VERIFICATION_ROUNDS_24H,
        contract::COVE_VERIFICATION_ROUNDS_SUM_24H,
        contract::COVE_VERIFIED_FACTS_24H,
    ),
];

/// A sample of an exposition; a histogram that has no observation yet counts as 0.
fn get(v: &BTreeMap<String, f64>, name: &str) -> f64 {
    match v.get(name) {
        Some(x) => *x,
        None if name.ends_with("_count") => 0.0,
        None => panic!("{name} is not exported"),
    }
}

/// Every ratio or mean is its exported numerator over its exported denominator, as PromQL
/// would divide them: the same float, or 0 with a denominator of 0.
fn check_ratios(v: &BTreeMap<String, f64>) {
    for (ratio, numerator, denominator) in RATIOS {
        let (r, n, d) = (
            get(v, ratio.exported),
            get(v, numerator.exported),
            get(v, denominator.exported),
        );
        let expected = if d == 0.0 { 0.0 } else { n / d };
        assert_eq!(
            r.to_bits(),
            expected.to_bits(),
            "{} = {r}, but {} / {} = {n} / {d}",
            ratio.exported,
            numerator.exported,
            denominator.exported
        );
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![0u64..120, 0u64..7_200, 0u64..3 * 86_400].prop_map(Op::Advance),
        8 => (fact(), when()).prop_map(|(f, w)| Op::Fact(f, w)),
        1 => when().prop_map(Op::Transcription),
        1 => when().prop_map(Op::Digest),
        2 => (0..TABLES.len(), 0u64..1000, any::<bool>(), any::<bool>(), when())
            .prop_map(|(t, d, dry, err, w)| Op::Retention(t, d, dry, err, w)),
        1 => (any::<bool>(), 0.0f64..=1.0, when()).prop_map(|(e, t, w)| Op::Cove(e, t, w)),
        1 => (0usize..3, 0usize..2, when()).prop_map(|(n, h, w)| Op::Acquire(n, h, w)),
        1 => (0usize..3, 0usize..2).prop_map(|(n, h)| Op::Release(n, h)),
        2 => Just(Op::Check),
    ]
}

/// What the recorder should hold: every accepted event with the time it counts at.
#[derive(Default)]
struct Model {
    facts: Vec<(u64, Fact)>,
    retention: Vec<(u64, usize, u64, bool, bool)>,
    transcriptions: u64,
    digests: u64,
    cove: Option<(CoveConfig, SystemTime)>,
    locks: HashMap<(usize, usize), SystemTime>,
    /// Locks evicted (their release is accepted), and how many evictions there were.
    evicted: HashSet<(usize, usize)>,
    evictions: u64,
    table_order: Vec<usize>,
}

fn minute(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs() / 60
}

fn bucket(bounds: &[f64], v: f64) -> usize {
    bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len())
}

const COVERAGE_BOUNDS: [f64; 7] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99];
const CONFIDENCE_BOUNDS: [f64; 11] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];
const ROUNDS_BOUNDS: [f64; 7] = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0];

impl Model {
    /// What a snapshot at `now` does first: evicts the locks held longer than the eviction age.
    fn evict(&mut self, now: SystemTime) {
        let expired: Vec<_> = self
            .locks
            .iter()
            .filter(|(_, at)| now.duration_since(**at).is_ok_and(|d| d > EVICT_AFTER))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.locks.remove(&k);
            self.evicted.insert(k);
            self.evictions += 1;
        }
    }

    /// Checks a snapshot, and the series `exported` at the same instant.
    fn check(&self, s: &Snapshot, exported: &BTreeMap<String, f64>, now: SystemTime) {
        let head = minute(now);
        let in_window = |m: u64, len: u64| m <= head && m + len > head;

        // 24h fact window, recomputed from scratch: the snapshot, and every exported series.
        let day = self
            .facts
            .iter()
            .filter(|(m, _)| in_window(*m, DAY_MINUTES))
            .map(|(_, f)| f);
        let day = fact_figures(day);
        let w = &s.facts_24h;
        assert_eq!(
            FactFigures {
                facts: w.facts,
                hallucination_assessed: w.hallucination_assessed,
                hallucinated: w.hallucinated,
                atomicity_assessed: w.atomicity_assessed,
                non_atomic: w.non_atomic,
                citation_assessed: w.citation_assessed,
                coverage_nanos: w.coverage_sum,
                cove_facts: w.cove_facts,
                confidence_nanos: w.confidence_sum,
                rounds: w.rounds_sum,
            },
            day,
            "facts_24h"
        );
        for (spec, expected) in day.window_series() {
            assert_eq!(
                exported.get(spec.exported),
                Some(&expected),
                "{}",
                spec.exported
            );
        }
        check_ratios(exported);
        let mean = |sum: f64, count: u64| if count == 0 { 0.0 } else { sum / count as f64 };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12;
        assert_eq!(
            w.hallucination_rate(),
            mean(day.hallucinated as f64, day.hallucination_assessed)
        );
        assert!(close(
            w.citation_coverage(),
            mean(day.coverage_nanos as f64 / 1e9, day.citation_assessed)
        ));
        assert!(close(
            w.cove_avg_confidence(),
            mean(day.confidence_nanos as f64 / 1e9, day.cove_facts)
        ));
        assert!(close(
            w.cove_avg_verification_rounds(),
            mean(day.rounds as f64, day.cove_facts)
        ));

        // 7d retention window.
        let week: Vec<_> = self
            .retention
            .iter()
            .filter(|r| in_window(r.0, WEEK_MINUTES))
            .collect();
        assert_eq!(s.retention_7d.operations, week.len() as u64);
        assert_eq!(
            s.retention_7d.deleted_records,
            week.iter().filter(|r| !r.3).map(|r| r.2).sum::<u64>()
        );
        assert_eq!(
            s.retention_7d.errors,
            week.iter().filter(|r| r.4).count() as u64
        );

        // Totals and per-table totals, with the tables past the limit in the overflow series.
        let all = fact_figures(self.facts.iter().map(|(_, f)| f));
        assert_eq!(s.totals.facts, all.facts);
        assert_eq!(s.totals.hallucination_assessed, all.hallucination_assessed);
        assert_eq!(s.totals.hallucinated, all.hallucinated);
        assert_eq!(s.totals.atomicity_assessed, all.atomicity_assessed);
        assert_eq!(s.totals.atomicity_violations, all.non_atomic);
        for (name, expected) in all.counter_series() {
            assert_eq!(get(exported, name), expected, "{name}");
        }
        assert_eq!(s.totals.transcriptions, self.transcriptions);
        assert_eq!(s.totals.digests, self.digests);
        let label = |t: usize| match self.table_order.iter().position(|&x| x == t) {
            Some(i) if i < MAX_TABLES => TableLabel::Table(TABLES[t].try_into().expect("valid")),
            _ => TableLabel::Overflow,
        };
        let mut tables = BTreeMap::<TableLabel, (u64, u64, u64)>::new();
        for r in &self.retention {
            let e = tables.entry(label(r.1)).or_default();
            e.0 += 1;
            e.1 += if r.3 { 0 } else { r.2 };
            e.2 += u64::from(r.4);
        }
        let got: BTreeMap<_, _> = s
            .retention_by_table
            .iter()
            .map(|(l, b)| (l.clone(), (b.operations, b.deleted_records, b.errors)))
            .collect();
        assert_eq!(got, tables);

        // Histograms.
        let mut coverage = [0u64; 8];
        let mut confidence = [0u64; 12];
        let mut rounds = [0u64; 8];
        for (_, f) in &self.facts {
            if let Some(cov) = f.citation_coverage {
                coverage[bucket(&COVERAGE_BOUNDS, cov.get())] += 1;
            }
            if let Some(c) = f.cove {
                confidence[bucket(&CONFIDENCE_BOUNDS, c.confidence.get())] += 1;
                rounds[bucket(&ROUNDS_BOUNDS, f64::from(c.rounds.get()))] += 1;
            }
        }
        assert_eq!(s.histograms.coverage.buckets, coverage);
        assert_eq!(s.histograms.confidence.buckets, confidence);
        assert_eq!(s.histograms.rounds.buckets, rounds);

        // Locks and configuration.
        assert_eq!(s.locks.active, self.locks.len() as u64);
        let stale = self
            .locks
            .values()
            .filter(|&&at| now.duration_since(at).is_ok_and(|d| d > STALE_AFTER))
            .count();
        assert_eq!(s.locks.stale, stale as u64);
        assert_eq!(s.locks.evicted, self.evictions);
        assert_eq!(s.cove, self.cove.map(|c| c.0));
    }
}

/// Collects `pipeline` (which refreshes the recorder's snapshot) and returns its samples with
/// the snapshot it exported.
fn collect(
    pipeline: &PrometheusPipeline,
    recorder: &Recorder,
) -> (Snapshot, BTreeMap<String, f64>) {
    let exported = exposition::samples(&pipeline.encode().expect("encode"));
    // Nothing is recorded in between, so a snapshot taken now holds the same values.
    ((*recorder.snapshot()).clone(), exported)
}

fn run(ops: Vec<Op>) {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(START));
    let recorder = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .max_future_skew(SKEW)
        .stale_lock_after(STALE_AFTER)
        .max_tables(MAX_TABLES)
        .build();
    let pipeline = PrometheusPipeline::new().expect("pipeline");
    recorder.register(&pipeline.provider.meter("reflexio"));
    let mut model = Model::default();
    let lock = |n: usize, h: usize| {
        LockEvent::new(["digest", "retention", "import"][n], ["w1", "w2"][h]).expect("valid")
    };

    for op in ops {
        let now = clock.now();
        // Records `event` at `when`; returns the time it counts at, if it was accepted.
        let record = |event: Event, when: &When| -> Result<SystemTime, RecordError> {
            match when {
                When::Now => recorder.record(event).map(|()| now),
                When::Past(s) => {
                    let t = now - Duration::from_secs(*s);
                    recorder.record_at(event, t).map(|()| t)
                }
                When::Future(s) => {
                    let t = now + Duration::from_secs(*s);
                    let result = recorder.record_at(event, t).map(|()| now);
                    assert_eq!(
                        matches!(result, Err(RecordError::FutureTime { .. })),
                        Duration::from_secs(*s) > SKEW,
                        "future times beyond the skew are refused"
                    );
                    result
                }
            }
        };
        match op {
            Op::Advance(s) => clock.advance(Duration::from_secs(s)),
            Op::Fact(f, w) => {
                if let Ok(t) = record(fact_event(f), &w) {
                    model.facts.push((minute(t), f));
                }
            }
            Op::Transcription(w) => {
                if record(Event::Transcription, &w).is_ok() {
                    model.transcriptions += 1;
                }
            }
            Op::Digest(w) => {
                if record(Event::Digest, &w).is_ok() {
                    model.digests += 1;
                }
            }
            Op::Retention(t, deleted, dry, err, w) => {
                let mut run = RetentionRun::new(TABLES[t], deleted)
                    .expect("valid")
                    .dry_run(dry);
                if err {
                    run = run.failed("disk I/O error");
                }
                if let Ok(at) = record(Event::Retention(run), &w) {
                    model.retention.push((minute(at), t, deleted, dry, err));
                    if !model.table_order.contains(&t) {
                        model.table_order.push(t);
                    }
                }
            }
            Op::Cove(enabled, threshold, w) => {
                let config = CoveConfig::new(enabled, threshold).expect("valid");
                if let Ok(at) = record(Event::CoveConfig(config), &w)
                    && model.cove.is_none_or(|(_, t)| at >= t)
                {
                    model.cove = Some((config, at));
                }
            }
            Op::Acquire(n, h, w) => {
                let held = model.locks.contains_key(&(n, h));
                match record(Event::LockAcquired(lock(n, h)), &w) {
                    Ok(at) => {
                        assert!(!held, "acquiring a held lock must fail");
                        model.locks.insert((n, h), at);
                        model.evicted.remove(&(n, h));
                    }
                    Err(RecordError::LockAlreadyHeld { .. }) => assert!(held),
                    Err(RecordError::FutureTime { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::Release(n, h) => {
                let result = recorder.record(Event::LockReleased(lock(n, h)));
                let released = model.locks.remove(&(n, h)).is_some();
                assert_eq!(
                    result.is_ok(),
                    released || model.evicted.contains(&(n, h)),
                    "a release is accepted if the lock is held, or was evicted"
                );
            }
            Op::Check => {
                model.evict(clock.now());
                let (snapshot, exported) = collect(&pipeline, &recorder);
                model.check(&snapshot, &exported, clock.now());
            }
        }
    }
    model.evict(clock.now());
    let (snapshot, exported) = collect(&pipeline, &recorder);
    model.check(&snapshot, &exported, clock.now());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_match_a_brute_force_recomputation(ops in prop::collection::vec(op(), 1..300)) {
        run(ops);
    }
}

#[test]
fn windows_slide_and_do_not_move_back_with_the_clock() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(START));
    let recorder = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .build();
    let fact = Fact::new(0.9).expect("valid").hallucinated(true);
    recorder.record_fact(&fact);
    recorder
        .record(RetentionRun::new("facts", 5).expect("valid"))
        .expect("recorded");
    assert_eq!(recorder.snapshot().facts_24h.facts, 1);

    // 23h59m later the fact is still inside the 24h window; a minute later it is not.
    clock.advance(Duration::from_secs(DAY_MINUTES * 60 - 60));
    assert_eq!(recorder.snapshot().facts_24h.facts, 1);
    clock.advance(Duration::from_secs(60));
    let s = recorder.snapshot();
    assert_eq!(s.facts_24h.facts, 0);
    assert_eq!(s.facts_24h.hallucination_rate(), 0.0);
    assert_eq!(s.totals.facts, 1, "totals never slide");
    assert_eq!(s.retention_7d.operations, 1);

    // The clock jumps back a day: the windows stay where they were, and events stamped "now"
    // count in the latest minute seen instead of vanishing into the past.
    clock.set(UNIX_EPOCH + Duration::from_secs(START));
    recorder.record_fact(&fact);
    recorder.record(Event::Transcription).expect("recorded");
    recorder.record(fact).expect("recorded");
    let s = recorder.snapshot();
    assert_eq!(s.facts_24h.facts, 2);
    assert_eq!(s.totals.facts, 3);
    assert_eq!(s.retention_7d.operations, 1);

    clock.set(UNIX_EPOCH + Duration::from_secs(START + WEEK_MINUTES * 60));
    assert_eq!(recorder.snapshot().retention_7d.operations, 0);
}

/// An event for one of two recorders (`true`: the first); the pooled recorder gets them all.
#[derive(Debug, Clone)]
enum PoolOp {
    Advance(u64),
    Fact(Fact, When, bool),
    Retention(u64, bool, bool, When, bool),
    Check,
}

fn pool_op() -> impl Strategy<Value = PoolOp> {
    prop_oneof![
        2 => prop_oneof![0u64..600, 0u64..7_200, 0u64..2 * 86_400].prop_map(PoolOp::Advance),
        8 => (fact(), when(), any::<bool>()).prop_map(|(f, w, a)| PoolOp::Fact(f, w, a)),
        1 => (0u64..1000, any::<bool>(), any::<bool>(), when(), any::<bool>())
            .prop_map(|(d, dry, err, w, a)| PoolOp::Retention(d, dry, err, w, a)),
        2 => Just(PoolOp::Check),
    ]
}

/// The series of one instance that pooling adds up: every window count and sum, and the raw
/// counters.
fn additive() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = FactFigures::default()
        .window_series()
        .into_iter()
        .map(|(spec, _)| spec.exported)
        .collect();
    names.extend(
        FactFigures::default()
            .counter_series()
            .into_iter()
            .map(|(name, _)| name),
    );
    names.extend([
        contract::RETENTION_OPERATIONS_7D.exported,
        contract::RETENTION_DELETED_RECORDS_7D.exported,
        contract::RETENTION_ERRORS_7D.exported,
    ]);
    names
}

/// Two recorders and a third that gets every event of both: the sums of the two's series equal
/// the third's, which equal a recount of the events, and each pooled ratio (the sum of the
/// numerators over the sum of the denominators) is the ratio over all events.
fn run_pooled(ops: Vec<PoolOp>) {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(START));
    let instance = || {
        let recorder = Recorder::builder()
            .clock(clock.clone())
            .without_upkeep_thread()
            .max_future_skew(SKEW)
            .build();
        let pipeline = PrometheusPipeline::new().expect("pipeline");
        recorder.register(&pipeline.provider.meter("reflexio"));
        (recorder, pipeline)
    };
    let instances = [instance(), instance(), instance()];
    let mut facts: Vec<(u64, Fact)> = Vec::new();
    let check = |facts: &[(u64, Fact)]| {
        let [a, b, pooled] = instances.each_ref().map(|(r, p)| collect(p, r).1);
        let head = minute(clock.now());
        let day = facts
            .iter()
            .filter(|(m, _)| *m <= head && m + DAY_MINUTES > head)
            .map(|(_, f)| f);
        let truth = fact_figures(day);
        for (spec, expected) in truth.window_series() {
            assert_eq!(pooled[spec.exported], expected, "{}", spec.exported);
        }
        for name in additive() {
            let (x, y, all) = (get(&a, name), get(&b, name), get(&pooled, name));
            // Counts add exactly; sums of fractions to floating-point rounding.
            assert!(
                (x + y - all).abs() <= 1e-9 * all.abs().max(1.0),
                "{name}: {x} + {y} != {all}"
            );
            if !name.contains("_sum") {
                assert_eq!(x + y, all, "{name}");
            }
        }
        for (ratio, numerator, denominator) in RATIOS {
            let n = get(&a, numerator.exported) + get(&b, numerator.exported);
            let d = get(&a, denominator.exported) + get(&b, denominator.exported);
            let pooled_ratio = if d == 0.0 { 0.0 } else { n / d };
            let truth = get(&pooled, ratio.exported);
            assert!(
                (pooled_ratio - truth).abs() <= 1e-12,
                "{}: pooled {pooled_ratio}, truth {truth}",
                ratio.exported
            );
        }
        check_ratios(&a);
        check_ratios(&b);
        check_ratios(&pooled);
    };
    for op in ops {
        let now = clock.now();
        let at = |w: &When| match w {
            When::Now => now,
            When::Past(s) => now - Duration::from_secs(*s),
            // Ahead by no more than the skew: counts now; further ahead: refused by all three.
            When::Future(s) => now + Duration::from_secs(*s),
        };
        let record = |event: Event, w: &When, first: bool| -> Option<SystemTime> {
            let t = at(w);
            let one = &instances[usize::from(!first)].0;
            let results = [one, &instances[2].0].map(|r| r.record_at(event.clone(), t).is_ok());
            assert_eq!(results[0], results[1]);
            results[0].then(|| t.min(now))
        };
        match op {
            PoolOp::Advance(s) => clock.advance(Duration::from_secs(s)),
            PoolOp::Fact(f, w, first) => {
                if let Some(t) = record(fact_event(f), &w, first) {
                    facts.push((minute(t), f));
                }
            }
            PoolOp::Retention(deleted, dry, err, w, first) => {
                let mut run = RetentionRun::new("facts", deleted)
                    .expect("valid")
                    .dry_run(dry);
                if err {
                    run = run.failed("database is locked");
                }
                record(Event::Retention(run), &w, first);
            }
            PoolOp::Check => check(&facts),
        }
    }
    check(&facts);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn windows_of_two_instances_add_up_to_the_pooled_truth(
        ops in prop::collection::vec(pool_op(), 1..200)
    ) {
        run_pooled(ops);
    }
}
