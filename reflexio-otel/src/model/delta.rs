//! Changes not yet in the store: additive buckets and counts, the latest CoVe configuration,
//! and the net effect of lock events. Deltas merge by addition, so the ones of several
//! intervals, or of several durable batches, combine into one write.

use crate::event::{CoveConfig, Name};
use crate::model::bucket::{Bucket, FactBucket, RetentionBucket};
use crate::model::histogram::HistogramCounts;
use crate::model::locks::HeldLock;
use crate::model::totals::{TableLabel, Totals};
use crate::model::window::{DAY_MINUTES, WEEK_MINUTES};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// What happens to a lock in the store: held with these details, or released.
pub(crate) type LockChange = Option<HeldLock>;

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Delta {
    pub(crate) facts: BTreeMap<u64, FactBucket>,
    pub(crate) retention: BTreeMap<u64, RetentionBucket>,
    pub(crate) totals: Totals,
    pub(crate) histograms: HistogramCounts,
    pub(crate) tables: BTreeMap<TableLabel, RetentionBucket>,
    pub(crate) cove: Option<(CoveConfig, SystemTime)>,
    pub(crate) locks: BTreeMap<(Name, Name), LockChange>,
}

/// Keeps the configuration with the latest time (the later one on a tie).
pub(crate) fn newer_cove(
    a: Option<(CoveConfig, SystemTime)>,
    b: Option<(CoveConfig, SystemTime)>,
) -> Option<(CoveConfig, SystemTime)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.1 >= a.1 { b } else { a }),
        (a, b) => b.or(a),
    }
}

impl Delta {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Delta::default()
    }

    /// A minute of facts, with its totals.
    pub(crate) fn add_facts(&mut self, minute: u64, bucket: &FactBucket) {
        self.facts.entry(minute).or_default().add(bucket);
        self.totals.add_facts(bucket);
    }

    pub(crate) fn add_retention(&mut self, minute: u64, table: TableLabel, run: &RetentionBucket) {
        self.retention.entry(minute).or_default().add(run);
        self.tables.entry(table).or_default().add(run);
    }

    pub(crate) fn set_cove(&mut self, config: CoveConfig, at: SystemTime) {
        self.cove = newer_cove(self.cove, Some((config, at)));
    }

    pub(crate) fn lock(&mut self, name: &Name, holder: &Name, change: LockChange) {
        self.locks.insert((name.clone(), holder.clone()), change);
    }

    /// Adds `later` to this delta: `later` happened after it.
    pub(crate) fn merge(&mut self, later: Delta) {
        for (m, b) in &later.facts {
            self.facts.entry(*m).or_default().add(b);
        }
        for (m, b) in &later.retention {
            self.retention.entry(*m).or_default().add(b);
        }
        self.totals.add(&later.totals);
        self.histograms.add(&later.histograms);
        for (t, b) in &later.tables {
            self.tables.entry(t.clone()).or_default().add(b);
        }
        self.cove = newer_cove(self.cove, later.cove);
        self.locks.extend(later.locks);
    }

    /// Drops window buckets that no window covers any more at `head`: the store prunes them,
    /// and no reader needs them. Totals keep counting them. Keeps a delta bounded while the
    /// store cannot be written.
    pub(crate) fn forget_expired(&mut self, head: u64) {
        if let Some(oldest) = (head + 1).checked_sub(DAY_MINUTES) {
            self.facts = self.facts.split_off(&oldest);
        }
        if let Some(oldest) = (head + 1).checked_sub(WEEK_MINUTES) {
            self.retention = self.retention.split_off(&oldest);
        }
    }
}

#[cfg(test)]
impl Delta {
    /// `n` facts (of unknown quality and no CoVe result) in `minute`.
    pub(crate) fn of_facts(minute: u64, n: u64) -> Self {
        let mut d = Delta::default();
        d.add_facts(
            minute,
            &FactBucket {
                facts: n,
                ..FactBucket::default()
            },
        );
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn bucket(facts: u64) -> FactBucket {
        FactBucket {
            facts,
            ..Default::default()
        }
    }

    #[test]
    fn deltas_merge_by_addition_and_latest_configuration() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let mut a = Delta::default();
        a.add_facts(10, &bucket(2));
        a.set_cove(CoveConfig::new(true, 0.7).expect("valid"), t0);
        let mut b = Delta::default();
        b.add_facts(10, &bucket(3));
        b.add_facts(11, &bucket(1));
        b.set_cove(
            CoveConfig::new(false, 0.5).expect("valid"),
            t0 - Duration::from_secs(1),
        );
        a.merge(b);
        assert_eq!(a.facts[&10].facts, 5);
        assert_eq!(a.facts[&11].facts, 1);
        assert_eq!(a.totals.facts, 6);
        assert_eq!(
            a.cove.map(|c| c.0.enabled),
            Some(true),
            "the older one loses"
        );
        assert!(!a.is_empty());
        assert!(Delta::default().is_empty());
    }

    #[test]
    fn expired_buckets_are_forgotten_but_totals_kept() {
        let mut d = Delta::default();
        for m in [100, 5_000, 20_000] {
            d.add_facts(m, &bucket(1));
            d.add_retention(m, TableLabel::Overflow, &RetentionBucket::default());
        }
        d.forget_expired(20_000);
        assert_eq!(d.facts.keys().copied().collect::<Vec<_>>(), vec![20_000]);
        assert_eq!(
            d.retention.keys().copied().collect::<Vec<_>>(),
            vec![20_000]
        );
        assert_eq!(d.totals.facts, 3);
        d.forget_expired(12_000);
        assert_eq!(d.retention.len(), 1);
    }

    #[test]
    fn the_later_lock_change_wins_and_durable_batches_merge_in_order() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let lock = crate::event::LockEvent::new("digest", "w1").expect("valid");
        let mut earlier = Delta::default();
        earlier.lock(&lock.name, &lock.holder, Some(HeldLock::new(&lock, t0)));
        let mut later = Delta::default();
        later.lock(&lock.name, &lock.holder, None);
        let mut merged = earlier.clone();
        merged.merge(later.clone());
        assert_eq!(
            merged.locks.values().collect::<Vec<_>>(),
            [&None],
            "released"
        );
        later.merge(earlier);
        assert!(
            matches!(later.locks.values().next(), Some(Some(_))),
            "held again"
        );
    }
}
