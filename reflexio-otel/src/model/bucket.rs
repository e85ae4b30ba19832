//! Window buckets: one minute of facts or of retention runs, holding only integers (counts, and
//! sums in billionths), so adding buckets is exact, associative and commutative — buckets from
//! several processes, or read back from disk, merge by addition. Also the derived window values
//! (ratios and means) with the empty-window policy.

use crate::event::{CoveResult, FRACTION_SCALE, Fact, RetentionRun};
use crate::model::count::{self, MAX_COUNT};

/// The value a ratio or mean reports over a window with no samples.
///
/// OpenTelemetry drops NaN, and a series must never vanish, so an empty window reports 0; the
/// sample count beside it (`reflexio_facts_24h`, `reflexio_cove_verified_facts_24h`) is then 0
/// too, which tells "no data" apart from "perfect".
pub const EMPTY_WINDOW_VALUE: f64 = 0.0;

/// An additive window bucket: every field is a count or a sum, added by the rule of
/// `model::count` (stopping at [`MAX_COUNT`]) and subtracted stopping at 0.
pub(crate) trait Bucket: Copy + Default + PartialEq {
    /// Applies `op` field by field.
    fn zip(&mut self, other: &Self, op: impl Fn(u64, u64) -> u64);

    #[inline]
    fn add(&mut self, other: &Self) {
        self.zip(other, count::add);
    }

    #[inline]
    fn sub(&mut self, other: &Self) {
        self.zip(other, count::sub);
    }

    /// Whether any field stopped at [`MAX_COUNT`] (its real sum may be larger).
    fn is_saturated(&self) -> bool {
        let mut at_max = *self;
        at_max.zip(&Self::default(), |v, _| u64::from(v >= MAX_COUNT));
        at_max != Self::default()
    }
}

/// One minute of facts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactBucket {
    /// Facts recorded, assessed or not.
    pub facts: u64,
    /// Facts whose quality (hallucination, atomicity, citation coverage) is not known; the
    /// others are the sample count of the ratios and means.
    pub unassessed: u64,
    /// Facts flagged as hallucinated.
    pub hallucinated: u64,
    /// Facts that were not atomic.
    pub non_atomic: u64,
    /// Sum of citation coverage, in billionths.
    pub coverage_sum: u64,
    /// Facts with a CoVe result.
    pub cove_facts: u64,
    /// Sum of CoVe confidence, in billionths.
    pub confidence_sum: u64,
    /// Sum of CoVe verification rounds.
    pub rounds_sum: u64,
}

impl FactBucket {
    /// The bucket holding exactly one fact.
    pub(crate) fn of(fact: &Fact) -> Self {
        Self {
            hallucinated: u64::from(fact.hallucinated),
            non_atomic: u64::from(!fact.atomic),
            coverage_sum: fact.citation_coverage.nanos(),
            ..Self::cove(1, fact.cove)
        }
    }

    /// The bucket holding one fact whose quality is not known.
    pub(crate) fn unassessed(cove: Option<CoveResult>) -> Self {
        Self {
            unassessed: 1,
            ..Self::cove(1, cove)
        }
    }

    fn cove(facts: u64, cove: Option<CoveResult>) -> Self {
        let (cove_facts, confidence_sum, rounds_sum) = match cove {
            Some(c) => (1, c.confidence.nanos(), u64::from(c.rounds.get())),
            None => (0, 0, 0),
        };
        Self {
            facts,
            cove_facts,
            confidence_sum,
            rounds_sum,
            ..Self::default()
        }
    }

    /// Facts whose quality is known: the sample count of the ratios and means.
    pub fn assessed(&self) -> u64 {
        count::sub(self.facts, self.unassessed)
    }

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

fn mean(sum: u64, count: u64, scale: u64) -> f64 {
    if count == 0 {
        EMPTY_WINDOW_VALUE
    } else {
        sum as f64 / count as f64 / scale as f64
    }
}

impl Bucket for FactBucket {
    #[inline]
    fn zip(&mut self, o: &Self, op: impl Fn(u64, u64) -> u64) {
        self.facts = op(self.facts, o.facts);
        self.unassessed = op(self.unassessed, o.unassessed);
        self.hallucinated = op(self.hallucinated, o.hallucinated);
        self.non_atomic = op(self.non_atomic, o.non_atomic);
        self.coverage_sum = op(self.coverage_sum, o.coverage_sum);
        self.cove_facts = op(self.cove_facts, o.cove_facts);
        self.confidence_sum = op(self.confidence_sum, o.confidence_sum);
        self.rounds_sum = op(self.rounds_sum, o.rounds_sum);
    }
}

/// One minute of retention runs (all tables together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionBucket {
    /// Runs, dry or not, failed or not.
    pub operations: u64,
    /// Records deleted by runs that were not dry runs.
    pub deleted_records: u64,
    /// Runs that failed.
    pub errors: u64,
}

impl RetentionBucket {
    /// The bucket holding exactly one run.
    pub(crate) fn of(run: &RetentionRun) -> Self {
        Self {
            operations: 1,
            deleted_records: count::clamp(run.counted_deletions()),
            errors: u64::from(run.error.is_some()),
        }
    }
}

impl Bucket for RetentionBucket {
    #[inline]
    fn zip(&mut self, o: &Self, op: impl Fn(u64, u64) -> u64) {
        self.operations = op(self.operations, o.operations);
        self.deleted_records = op(self.deleted_records, o.deleted_records);
        self.errors = op(self.errors, o.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_add_and_subtract_exactly() {
        let a = FactBucket {
            facts: 3,
            unassessed: 1,
            hallucinated: 1,
            non_atomic: 2,
            coverage_sum: 2_940_000_000,
            cove_facts: 2,
            confidence_sum: 1_800_000_000,
            rounds_sum: 3,
        };
        let mut s = FactBucket::default();
        s.add(&a);
        s.add(&a);
        s.sub(&a);
        assert_eq!(s, a);
        s.sub(&a);
        assert_eq!(s, FactBucket::default());
    }

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

    #[test]
    fn one_event_buckets_count_what_the_event_says() {
        let fact = Fact::new(0.9)
            .expect("valid")
            .hallucinated(true)
            .atomic(false)
            .with_cove(0.8, 3)
            .expect("valid");
        let b = FactBucket::of(&fact);
        assert_eq!(
            b,
            FactBucket {
                facts: 1,
                unassessed: 0,
                hallucinated: 1,
                non_atomic: 1,
                coverage_sum: 900_000_000,
                cove_facts: 1,
                confidence_sum: 800_000_000,
                rounds_sum: 3,
            }
        );
        let u = FactBucket::unassessed(None);
        assert_eq!(
            (u.facts, u.unassessed, u.assessed(), u.cove_facts),
            (1, 1, 0, 0)
        );
        let run = RetentionRun::new("facts", 7)
            .expect("valid")
            .dry_run(true)
            .failed("locked");
        assert_eq!(
            RetentionBucket::of(&run),
            RetentionBucket {
                operations: 1,
                deleted_records: 0,
                errors: 1
            }
        );
    }
}
