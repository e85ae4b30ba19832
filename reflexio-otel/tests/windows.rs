//! Property test: for random event streams and clock movements, every value in a snapshot
//! equals a brute-force recomputation from the raw events.

use proptest::prelude::*;
use reflexio_otel::{
    Clock, CoveConfig, DAY_MINUTES, Event, Fact, LockEvent, ManualClock, RecordError, Recorder,
    RetentionRun, Snapshot, TableLabel, WEEK_MINUTES,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        any::<bool>(),
        any::<bool>(),
        fraction.clone(),
        proptest::option::of((fraction, 1u32..=12)),
    )
        .prop_map(|(h, a, cov, cove)| {
            let f = Fact::new(cov).expect("valid").hallucinated(h).atomic(a);
            match cove {
                Some((c, r)) => f.with_cove(c, r).expect("valid"),
                None => f,
            }
        })
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

    fn check(&self, s: &Snapshot, now: SystemTime) {
        let head = minute(now);
        let in_window = |m: u64, len: u64| m <= head && m + len > head;

        // 24h fact window, recomputed from scratch.
        let day: Vec<&Fact> = self
            .facts
            .iter()
            .filter(|(m, _)| in_window(*m, DAY_MINUTES))
            .map(|(_, f)| f)
            .collect();
        let w = &s.facts_24h;
        assert_eq!(w.facts, day.len() as u64, "facts_24h");
        assert_eq!(
            w.hallucinated,
            day.iter().filter(|f| f.hallucinated).count() as u64
        );
        assert_eq!(
            w.non_atomic,
            day.iter().filter(|f| !f.atomic).count() as u64
        );
        let cove: Vec<_> = day.iter().filter_map(|f| f.cove).collect();
        assert_eq!(w.cove_facts, cove.len() as u64);
        let n = day.len() as f64;
        let expect_rate = if day.is_empty() {
            0.0
        } else {
            day.iter().filter(|f| f.hallucinated).count() as f64 / n
        };
        let expect_cov = if day.is_empty() {
            0.0
        } else {
            day.iter().map(|f| f.citation_coverage.get()).sum::<f64>() / n
        };
        let expect_conf = if cove.is_empty() {
            0.0
        } else {
            cove.iter().map(|c| c.confidence.get()).sum::<f64>() / cove.len() as f64
        };
        let expect_rounds = if cove.is_empty() {
            0.0
        } else {
            cove.iter().map(|c| f64::from(c.rounds.get())).sum::<f64>() / cove.len() as f64
        };
        assert_eq!(w.hallucination_rate(), expect_rate);
        assert!((w.citation_coverage() - expect_cov).abs() < 1e-12);
        assert!((w.cove_avg_confidence() - expect_conf).abs() < 1e-12);
        assert!((w.cove_avg_verification_rounds() - expect_rounds).abs() < 1e-12);

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
        assert_eq!(s.totals.facts, self.facts.len() as u64);
        assert_eq!(
            s.totals.hallucinated,
            self.facts.iter().filter(|f| f.1.hallucinated).count() as u64
        );
        assert_eq!(
            s.totals.atomicity_violations,
            self.facts.iter().filter(|f| !f.1.atomic).count() as u64
        );
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
            coverage[bucket(&COVERAGE_BOUNDS, f.citation_coverage.get())] += 1;
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

fn run(ops: Vec<Op>) {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(START));
    let recorder = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .max_future_skew(SKEW)
        .stale_lock_after(STALE_AFTER)
        .max_tables(MAX_TABLES)
        .build();
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
                if let Ok(t) = record(Event::Fact(f), &w) {
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
                model.check(&recorder.snapshot(), clock.now());
            }
        }
    }
    model.evict(clock.now());
    model.check(&recorder.snapshot(), clock.now());
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
