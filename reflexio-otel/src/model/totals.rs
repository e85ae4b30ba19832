//! Cumulative counts since a recorder's history began, and the `table` label of the retention
//! series.

use crate::event::Name;
use crate::model::bucket::FactBucket;
use crate::model::count;

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
    /// Adds `t`, by the rule of every count (`model::count`).
    pub(crate) fn add(&mut self, t: &Totals) {
        self.transcriptions = count::add(self.transcriptions, t.transcriptions);
        self.facts = count::add(self.facts, t.facts);
        self.unassessed = count::add(self.unassessed, t.unassessed);
        self.digests = count::add(self.digests, t.digests);
        self.hallucinated = count::add(self.hallucinated, t.hallucinated);
        self.atomicity_violations = count::add(self.atomicity_violations, t.atomicity_violations);
    }

    /// Adds the fact counts of a minute's bucket.
    pub(crate) fn add_facts(&mut self, bucket: &FactBucket) {
        self.facts = count::add(self.facts, bucket.facts);
        self.unassessed = count::add(self.unassessed, bucket.unassessed);
        self.hallucinated = count::add(self.hallucinated, bucket.hallucinated);
        self.atomicity_violations = count::add(self.atomicity_violations, bucket.non_atomic);
    }
}

/// Table names the state and the store keep at most; runs over further tables count in the
/// overflow series (and the store's overflow row). Bounds memory and the store whatever names
/// arrive.
pub(crate) const KEPT_TABLES: usize = 1024;

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
        assert_eq!(
            (t.transcriptions, t.facts, t.digests),
            (3, count::MAX_COUNT, 3),
            "stops at the limit"
        );
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
                facts: count::MAX_COUNT,
                unassessed: 1,
                digests: 3,
                hallucinated: 2,
                atomicity_violations: 3,
            }
        );
    }
}
