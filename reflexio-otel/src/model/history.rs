//! Counts of events older than every window, gathered without recording each one: they add to
//! the cumulative totals, the histograms and the per-table retention totals, and to no window.
//! A reader adopting a source's past (an application's database, say) adds them in the same
//! durable commit as the checkpoints of the rows they stand for.

use crate::error::RecordError;
use crate::event::{Event, Fact, RetentionRun};
use crate::model::bucket::{Bucket, FactBucket, RetentionBucket};
use crate::model::histogram::HistogramCounts;
use crate::model::totals::{KEPT_TABLES, TableLabel, Totals};
use std::collections::BTreeMap;

/// Counts of past events, added to the cumulative totals, histograms and per-table retention
/// totals in one durable commit ([`crate::Recorder::record_durable_with_history`]) and to no
/// window: a 30-day-old fact counts in `reflexio_facts_total`, never in `reflexio_facts_24h`.
///
/// It holds validated events ([`Fact`], [`RetentionRun`]) multiplied by how often they
/// happened, so everything it adds is what recording the events one by one would add to the
/// totals. Every count stops at the largest stored integer, like every other count. Tables past
/// the number a store keeps (1024) are counted in the overflow series, as recorded runs are.
///
/// ```
/// use reflexio_otel::{Event, Fact, History, RetentionRun};
/// let mut history = History::new();
/// history.add_facts(&Fact::new(0.97)?.hallucinated(true), 3);
/// history.add(&Event::Transcription, 2)?;
/// history.add_retention_runs(&RetentionRun::new("facts", 120)?, 1);
/// assert_eq!(history.totals().facts, 3);
/// assert_eq!(history.totals().hallucinated, 3);
/// assert_eq!(history.totals().transcriptions, 2);
/// assert_eq!(history.histograms().coverage.count(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub(crate) totals: Totals,
    pub(crate) histograms: HistogramCounts,
    /// At most [`KEPT_TABLES`] named tables, and the overflow entry.
    pub(crate) tables: BTreeMap<TableLabel, RetentionBucket>,
}

impl History {
    /// No counts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` events like `event`. Transcriptions, facts, digests and retention runs are
    /// counts; a CoVe configuration or a lock event is not, and is refused
    /// ([`RecordError::NotACount`]) without changing anything.
    pub fn add(&mut self, event: &Event, n: u64) -> Result<(), RecordError> {
        match event {
            Event::Transcription => self.add_transcriptions(n),
            Event::Digest => self.add_digests(n),
            Event::Fact(_) | Event::UnassessedFact { .. } => {
                if let Some(fact) = event.fact() {
                    self.add_facts(&fact, n);
                }
            }
            Event::Retention(run) => self.add_retention_runs(run, n),
            Event::CoveConfig(_) => return Err(RecordError::NotACount("CoVe configuration")),
            Event::LockAcquired(_) | Event::LockReleased(_) => {
                return Err(RecordError::NotACount("lock event"));
            }
        }
        Ok(())
    }

    /// Adds `n` transcriptions.
    pub fn add_transcriptions(&mut self, n: u64) {
        self.totals.add(&Totals {
            transcriptions: n,
            ..Totals::default()
        });
    }

    /// Adds `n` digests.
    pub fn add_digests(&mut self, n: u64) {
        self.totals.add(&Totals {
            digests: n,
            ..Totals::default()
        });
    }

    /// Adds `n` facts like `fact`: to the fact totals of each of its verdicts, and its citation
    /// coverage and CoVe result to the histograms.
    pub fn add_facts(&mut self, fact: &Fact, n: u64) {
        self.totals.add_facts(&FactBucket::of(fact).times(n));
        self.histograms.observe_times(fact, n);
    }

    /// Adds `n` runs like `run` to its table's retention totals.
    pub fn add_retention_runs(&mut self, run: &RetentionRun, n: u64) {
        let label = self.keep(TableLabel::Table(run.table.clone()));
        self.tables
            .entry(label)
            .or_default()
            .add(&RetentionBucket::of(run).times(n));
    }

    /// Adds the counts of `other`.
    pub fn merge(&mut self, other: &History) {
        self.totals.add(&other.totals);
        self.histograms.add(&other.histograms);
        for (label, bucket) in &other.tables {
            let label = self.keep(label.clone());
            self.tables.entry(label).or_default().add(bucket);
        }
    }

    /// Where counts for `label` are kept: its own entry while fewer than [`KEPT_TABLES`]
    /// tables are named, else the overflow entry.
    fn keep(&self, label: TableLabel) -> TableLabel {
        match label {
            TableLabel::Table(_) if self.tables.contains_key(&label) => label,
            TableLabel::Table(_) if self.named() < KEPT_TABLES => label,
            _ => TableLabel::Overflow,
        }
    }

    /// The named tables in `tables`: all but the overflow entry.
    fn named(&self) -> usize {
        self.tables.len() - usize::from(self.tables.contains_key(&TableLabel::Overflow))
    }

    /// Whether it holds no count at all.
    pub fn is_empty(&self) -> bool {
        self.totals == Totals::default()
            && self.histograms == HistogramCounts::default()
            && self.tables.is_empty()
    }

    /// The cumulative counts it adds.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The histogram observations it adds.
    pub fn histograms(&self) -> &HistogramCounts {
        &self.histograms
    }

    /// The retention totals it adds, by table.
    pub fn retention_by_table(&self) -> impl Iterator<Item = (&TableLabel, &RetentionBucket)> {
        self.tables.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CoveConfig, LockEvent, Name};
    use crate::model::count::MAX_COUNT;

    fn fact() -> Fact {
        Fact::new(0.97)
            .expect("valid")
            .hallucinated(true)
            .with_cove(0.8, 2)
            .expect("valid")
    }

    /// What adding the events one at a time gives: the oracle of the multiplied adds.
    fn one_by_one(events: &[(Event, u64)]) -> History {
        let mut h = History::new();
        for (event, n) in events {
            for _ in 0..*n {
                h.add(event, 1).expect("a count");
            }
        }
        h
    }

    #[test]
    fn n_events_at_once_count_as_n_events_one_by_one() {
        let run = RetentionRun::new("facts", 12)
            .expect("valid")
            .failed("locked");
        let dry = RetentionRun::new("digests", 5)
            .expect("valid")
            .dry_run(true);
        let events = [
            (Event::Transcription, 4),
            (Event::Digest, 2),
            (Event::Fact(fact()), 5),
            (Event::Fact(Fact::unassessed().atomic(false)), 3),
            (Event::UnassessedFact { cove: None }, 1),
            (Event::Retention(run), 3),
            (Event::Retention(dry), 2),
        ];
        let mut at_once = History::new();
        for (event, n) in &events {
            at_once.add(event, *n).expect("a count");
        }
        assert_eq!(at_once, one_by_one(&events));
        let t = at_once.totals();
        assert_eq!(
            (t.transcriptions, t.digests, t.facts, t.hallucinated),
            (4, 2, 9, 5)
        );
        assert_eq!((t.atomicity_assessed, t.atomicity_violations), (8, 3));
        assert_eq!(at_once.histograms().coverage.count(), 5);
        assert_eq!(at_once.histograms().coverage.sum, 5 * 970_000_000);
        assert_eq!(at_once.histograms().rounds.sum, 10);
        let tables: Vec<_> = at_once
            .retention_by_table()
            .map(|(l, b)| (l.clone(), *b))
            .collect();
        let name = |s| TableLabel::Table(Name::new(s).expect("valid"));
        assert_eq!(
            tables,
            [
                (
                    name("digests"),
                    RetentionBucket {
                        operations: 2,
                        deleted_records: 0,
                        errors: 0
                    }
                ),
                (
                    name("facts"),
                    RetentionBucket {
                        operations: 3,
                        deleted_records: 36,
                        errors: 3
                    }
                ),
            ]
        );
        assert!(!at_once.is_empty() && History::new().is_empty());
        assert!(History::new().add(&Event::Fact(fact()), 0).is_ok());
    }

    #[test]
    fn settings_and_locks_are_not_counts_and_change_nothing() {
        let mut h = History::new();
        let config = CoveConfig::new(true, 0.7).expect("valid");
        assert_eq!(
            h.add(&Event::CoveConfig(config), 1),
            Err(RecordError::NotACount("CoVe configuration"))
        );
        let lock = LockEvent::new("daily_digest", "w1").expect("valid");
        assert!(h.add(&Event::LockAcquired(lock.clone()), 1).is_err());
        assert!(h.add(&Event::LockReleased(lock), 1).is_err());
        assert!(h.is_empty());
    }

    #[test]
    fn counts_stop_at_the_largest_stored_integer() {
        let mut h = History::new();
        h.add_facts(&fact(), u64::MAX);
        h.add_facts(&fact(), 5);
        h.add_transcriptions(u64::MAX);
        h.add_retention_runs(
            &RetentionRun::new("facts", 1 << 53).expect("valid"),
            u64::MAX,
        );
        let t = h.totals();
        assert_eq!(
            (t.facts, t.hallucinated, t.transcriptions),
            (MAX_COUNT, MAX_COUNT, MAX_COUNT)
        );
        assert_eq!(h.histograms().coverage.sum, MAX_COUNT);
        assert_eq!(
            h.histograms().coverage.buckets.iter().max(),
            Some(&MAX_COUNT)
        );
        let (_, facts) = h.retention_by_table().next().expect("a table");
        assert_eq!(
            (facts.operations, facts.deleted_records),
            (MAX_COUNT, MAX_COUNT)
        );
    }

    #[test]
    fn tables_past_the_kept_number_go_to_the_overflow_series() {
        let run = |i: usize| RetentionRun::new(&format!("t{i}"), 1).expect("valid");
        let mut h = History::new();
        for i in 0..KEPT_TABLES + 10 {
            h.add_retention_runs(&run(i), 1);
        }
        // A kept table stays kept.
        h.add_retention_runs(&run(0), 1);
        assert_eq!(h.tables.len(), KEPT_TABLES + 1);
        assert_eq!(h.tables[&TableLabel::Overflow].operations, 10);
        assert_eq!(
            h.tables[&TableLabel::Table(Name::new("t0").expect("valid"))].operations,
            2
        );
        // Merging keeps the bound, whatever the other holds.
        let mut other = History::new();
        for i in KEPT_TABLES..KEPT_TABLES + 5 {
            other.add_retention_runs(&run(i + 100), 1);
        }
        other.add_retention_runs(&run(0), 1);
        h.merge(&other);
        assert_eq!(h.tables.len(), KEPT_TABLES + 1);
        assert_eq!(h.tables[&TableLabel::Overflow].operations, 15);
        let mut small = History::new();
        small.merge(&other);
        assert_eq!(small, other, "merged into nothing: the same");
    }
}
