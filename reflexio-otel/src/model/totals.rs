//! Cumulative counts since a recorder's history began, and the `table` label of the retention
//! series.

use crate::event::Name;
use crate::model::bucket::FactBucket;
use crate::model::count;

/// Cumulative counts since the recorder's history began.
///
/// The facts with a citation coverage and those with a CoVe result are the `count`s of the
/// citation coverage and CoVe confidence histograms ([`crate::HistogramCounts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Transcriptions.
    pub transcriptions: u64,
    /// Facts, with or without verdicts.
    pub facts: u64,
    /// Facts with a hallucination verdict (`reflexio_assessed_facts_total`).
    pub hallucination_assessed: u64,
    /// Digests.
    pub digests: u64,
    /// Hallucinated facts.
    pub hallucinated: u64,
    /// Facts with an atomicity verdict.
    pub atomicity_assessed: u64,
    /// Non-atomic facts.
    pub atomicity_violations: u64,
}

impl Totals {
    /// Adds `t`, by the rule of every count (`model::count`).
    pub(crate) fn add(&mut self, t: &Totals) {
        self.transcriptions = count::add(self.transcriptions, t.transcriptions);
        self.facts = count::add(self.facts, t.facts);
        self.hallucination_assessed =
            count::add(self.hallucination_assessed, t.hallucination_assessed);
        self.digests = count::add(self.digests, t.digests);
        self.hallucinated = count::add(self.hallucinated, t.hallucinated);
        self.atomicity_assessed = count::add(self.atomicity_assessed, t.atomicity_assessed);
        self.atomicity_violations = count::add(self.atomicity_violations, t.atomicity_violations);
    }

    /// Adds the fact counts of a minute's bucket.
    pub(crate) fn add_facts(&mut self, bucket: &FactBucket) {
        self.add(&Totals {
            facts: bucket.facts,
            hallucination_assessed: bucket.hallucination_assessed,
            hallucinated: bucket.hallucinated,
            atomicity_assessed: bucket.atomicity_assessed,
            atomicity_violations: bucket.non_atomic,
            ..Totals::default()
        });
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
            hallucination_assessed: 3,
            hallucinated: 2,
            atomicity_assessed: 4,
            non_atomic: 3,
            citation_assessed: 1,
            coverage_sum: 99,
            ..FactBucket::default()
        });
        assert_eq!(
            t,
            Totals {
                transcriptions: 3,
                facts: count::MAX_COUNT,
                hallucination_assessed: 3,
                digests: 3,
                hallucinated: 2,
                atomicity_assessed: 4,
                atomicity_violations: 3,
            }
        );
    }
}
