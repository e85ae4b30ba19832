//! A consistent view of every exported value at one instant, and the derived window values
//! (ratios and means) with the empty-window policy.

use crate::event::{CoveConfig, FRACTION_SCALE, Name};
use crate::histogram::HistogramCounts;
use crate::persist::StoreHealth;
use crate::window::{FactBucket, RetentionBucket};
use std::time::SystemTime;

/// The value a ratio or mean reports over a window with no samples.
///
/// OpenTelemetry drops NaN, and a series must never vanish, so an empty window reports 0; the
/// sample count beside it (`reflexio_facts_24h`, `reflexio_cove_verified_facts_24h`) is then 0
/// too, which tells "no data" apart from "perfect".
pub const EMPTY_WINDOW_VALUE: f64 = 0.0;

fn mean(sum: u64, count: u64, scale: u64) -> f64 {
    if count == 0 {
        EMPTY_WINDOW_VALUE
    } else {
        sum as f64 / count as f64 / scale as f64
    }
}

impl FactBucket {
    /// Hallucinated facts / assessed facts.
    pub fn hallucination_rate(&self) -> f64 {
        mean(self.hallucinated, self.assessed(), 1)
    }

    /// Mean citation coverage of the assessed facts.
    pub fn citation_coverage(&self) -> f64 {
        mean(self.coverage_sum, self.assessed(), FRACTION_SCALE)
    }

    /// Mean CoVe confidence of the facts with a CoVe result.
    pub fn cove_avg_confidence(&self) -> f64 {
        mean(self.confidence_sum, self.cove_facts, FRACTION_SCALE)
    }

    /// Mean CoVe verification rounds of the facts with a CoVe result.
    pub fn cove_avg_verification_rounds(&self) -> f64 {
        mean(self.rounds_sum, self.cove_facts, 1)
    }
}

/// Cumulative counts since the recorder's history began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Transcriptions.
    pub transcriptions: u64,
    /// Facts, assessed or not.
    pub facts: u64,
    /// Facts whose quality is not known.
    pub unassessed: u64,
    /// Digests.
    pub digests: u64,
    /// Hallucinated facts.
    pub hallucinated: u64,
    /// Non-atomic facts.
    pub atomicity_violations: u64,
}

/// The `table` label of a retention series: a table name, or the overflow series that collects
/// tables past the cardinality limit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableLabel {
    /// A table within the limit.
    Table(Name),
    /// Every table past the limit, together.
    Overflow,
}

/// Lock counts at the snapshot's instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockCounts {
    /// Locks held.
    pub active: u64,
    /// Locks held for longer than the stale threshold.
    pub stale: u64,
}

/// Everything the recorder exports, at one instant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// When it was taken.
    pub at: SystemTime,
    /// Cumulative counters.
    pub totals: Totals,
    /// Facts of the last 24 hours; see [`FactBucket::hallucination_rate`] and friends.
    pub facts_24h: FactBucket,
    /// Retention runs of the last 7 days, all tables together.
    pub retention_7d: RetentionBucket,
    /// Cumulative retention counts per table.
    pub retention_by_table: Vec<(TableLabel, RetentionBucket)>,
    /// Cumulative histogram observations.
    pub histograms: HistogramCounts,
    /// Process locks.
    pub locks: LockCounts,
    /// The latest CoVe configuration reported, if any.
    pub cove: Option<CoveConfig>,
    /// The store's health, if the recorder has a store.
    pub store: Option<StoreHealth>,
    /// How often the clock went back by more than a second.
    pub clock_jumps_back: u64,
    /// Increases with every snapshot of the same recorder.
    pub(crate) seq: u64,
}

impl Snapshot {
    pub(crate) fn empty() -> Self {
        Self {
            at: SystemTime::UNIX_EPOCH,
            totals: Totals::default(),
            facts_24h: FactBucket::default(),
            retention_7d: RetentionBucket::default(),
            retention_by_table: Vec::new(),
            histograms: HistogramCounts::default(),
            locks: LockCounts::default(),
            cove: None,
            store: None,
            clock_jumps_back: 0,
            seq: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_windows_report_the_documented_value() {
        let b = FactBucket::default();
        assert_eq!(b.hallucination_rate(), EMPTY_WINDOW_VALUE);
        assert_eq!(b.citation_coverage(), EMPTY_WINDOW_VALUE);
        assert_eq!(b.cove_avg_confidence(), EMPTY_WINDOW_VALUE);
        assert_eq!(b.cove_avg_verification_rounds(), EMPTY_WINDOW_VALUE);
    }

    #[test]
    fn ratios_print_as_their_decimal_values() {
        let b = FactBucket {
            facts: 10,
            hallucinated: 1,
            coverage_sum: 10 * 980_000_000,
            cove_facts: 4,
            confidence_sum: 4 * 910_000_000,
            rounds_sum: 6,
            ..Default::default()
        };
        assert_eq!(b.hallucination_rate(), 0.1);
        assert_eq!(b.citation_coverage(), 0.98);
        assert_eq!(b.cove_avg_confidence(), 0.91);
        assert_eq!(b.cove_avg_verification_rounds(), 1.5);
    }

    #[test]
    fn ratios_leave_out_unassessed_facts() {
        let b = FactBucket {
            facts: 12,
            unassessed: 2,
            hallucinated: 1,
            coverage_sum: 10 * 980_000_000,
            ..Default::default()
        };
        assert_eq!(b.assessed(), 10);
        assert_eq!(b.hallucination_rate(), 0.1);
        assert_eq!(b.citation_coverage(), 0.98);
        let none = FactBucket {
            facts: 3,
            unassessed: 3,
            ..Default::default()
        };
        assert_eq!(none.hallucination_rate(), EMPTY_WINDOW_VALUE);
        assert_eq!(none.citation_coverage(), EMPTY_WINDOW_VALUE);
    }
}
