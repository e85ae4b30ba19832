//! Cumulative counts since a recorder's history began, and the `table` label of the retention
//! series.

use crate::event::Name;
use crate::model::bucket::FactBucket;

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

impl Totals {
    /// Adds `t`, wrapping like every counter.
    pub(crate) fn add(&mut self, t: &Totals) {
        self.transcriptions = self.transcriptions.wrapping_add(t.transcriptions);
        self.facts = self.facts.wrapping_add(t.facts);
        self.unassessed = self.unassessed.wrapping_add(t.unassessed);
        self.digests = self.digests.wrapping_add(t.digests);
        self.hallucinated = self.hallucinated.wrapping_add(t.hallucinated);
        self.atomicity_violations = self
            .atomicity_violations
            .wrapping_add(t.atomicity_violations);
    }

    /// Adds the fact counts of a minute's bucket.
    pub(crate) fn add_facts(&mut self, bucket: &FactBucket) {
        self.facts = self.facts.wrapping_add(bucket.facts);
        self.unassessed = self.unassessed.wrapping_add(bucket.unassessed);
        self.hallucinated = self.hallucinated.wrapping_add(bucket.hallucinated);
        self.atomicity_violations = self.atomicity_violations.wrapping_add(bucket.non_atomic);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_and_count_a_buckets_facts() {
        let mut t = Totals {
            transcriptions: 1,
            facts: u64::MAX,
            ..Totals::default()
        };
        t.add(&Totals {
            transcriptions: 2,
            facts: 2,
            digests: 3,
            ..Totals::default()
        });
        assert_eq!((t.transcriptions, t.facts, t.digests), (3, 1, 3), "wraps");
        t.add_facts(&FactBucket {
            facts: 4,
            unassessed: 1,
            hallucinated: 2,
            non_atomic: 3,
            coverage_sum: 99,
            ..FactBucket::default()
        });
        assert_eq!(
            t,
            Totals {
                transcriptions: 3,
                facts: 5,
                unassessed: 1,
                digests: 3,
                hallucinated: 2,
                atomicity_violations: 3,
            }
        );
    }
}
