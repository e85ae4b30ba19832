//! Window buckets: one minute of facts or of retention runs, holding only integers (counts, and
//! sums in billionths), so adding buckets is exact, associative and commutative — buckets from
//! several processes, or read back from disk, merge by addition. Also the derived window values
//! (ratios and means) with the empty-window policy.

use crate::event::{FRACTION_SCALE, Fact, RetentionRun};
use crate::model::count::{self, MAX_COUNT};

/// The value a ratio or mean reports over a window with no samples.
///
/// OpenTelemetry drops NaN, and a series must never vanish, so an empty window reports 0; the
/// sample count beside it (`reflexio_assessed_facts_24h`, `reflexio_citation_assessed_facts_24h`,
/// `reflexio_cove_verified_facts_24h`) is then 0 too, which tells "no data" apart from
/// "perfect".
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
///
/// Each quality verdict has its own count of the facts that carry it, the denominator of its
/// ratio or mean: a fact counts in `hallucination_assessed` when its hallucination verdict is
/// known, whatever else is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactBucket {
    /// Facts recorded, with or without verdicts.
    pub facts: u64,
    /// Facts with a hallucination verdict (`reflexio_assessed_facts_24h`).
    pub hallucination_assessed: u64,
    /// Facts with an atomicity verdict.
    pub atomicity_assessed: u64,
    /// Facts with a citation coverage.
    pub citation_assessed: u64,
    /// Facts with a CoVe result.
    pub cove_facts: u64,
    /// Facts flagged as hallucinated.
    pub hallucinated: u64,
    /// Facts that were not atomic.
    pub non_atomic: u64,
    /// Sum of citation coverage, in billionths.
    pub coverage_sum: u64,
    /// Sum of CoVe confidence, in billionths.
    pub confidence_sum: u64,
    /// Sum of CoVe verification rounds.
    pub rounds_sum: u64,
}

impl FactBucket {
    /// How many fields a bucket has.
    pub(crate) const FIELDS: usize = 10;

    /// The bucket holding exactly one fact.
    pub(crate) fn of(fact: &Fact) -> Self {
        let (cove_facts, confidence_sum, rounds_sum) = match fact.cove {
            Some(c) => (1, c.confidence.nanos(), u64::from(c.rounds.get())),
            None => (0, 0, 0),
        };
        Self {
            facts: 1,
            hallucination_assessed: u64::from(fact.hallucinated.is_some()),
            atomicity_assessed: u64::from(fact.atomic.is_some()),
            citation_assessed: u64::from(fact.citation_coverage.is_some()),
            cove_facts,
            hallucinated: u64::from(fact.hallucinated == Some(true)),
            non_atomic: u64::from(fact.atomic == Some(false)),
            coverage_sum: fact.citation_coverage.map_or(0, |c| c.nanos()),
            confidence_sum,
            rounds_sum,
        }
    }

    /// The fields, each count before the numerators and sums it is the denominator of: the
    /// order in which the record path writes them (and the reverse of the one it reads them in).
    pub(crate) fn fields(&self) -> [u64; Self::FIELDS] {
        [
            self.facts,
            self.hallucination_assessed,
            self.atomicity_assessed,
            self.citation_assessed,
            self.cove_facts,
            self.hallucinated,
            self.non_atomic,
            self.coverage_sum,
            self.confidence_sum,
            self.rounds_sum,
        ]
    }

    /// The bucket of [`FactBucket::fields`].
    pub(crate) fn from_fields(f: [u64; Self::FIELDS]) -> Self {
        let [
            facts,
            hallucination_assessed,
            atomicity_assessed,
            citation_assessed,
            cove_facts,
            hallucinated,
            non_atomic,
            coverage_sum,
            confidence_sum,
            rounds_sum,
        ] = f;
        Self {
            facts,
            hallucination_assessed,
            atomicity_assessed,
            citation_assessed,
            cove_facts,
            hallucinated,
            non_atomic,
            coverage_sum,
            confidence_sum,
            rounds_sum,
        }
    }

    /// Facts with a hallucination verdict: the denominator of the hallucination rate.
    pub fn assessed(&self) -> u64 {
        self.hallucination_assessed
    }

    /// Hallucinated facts / facts with a hallucination verdict.
    pub fn hallucination_rate(&self) -> f64 {
        ratio(self.hallucinated as f64, self.hallucination_assessed)
    }

    /// The sum of the citation coverages.
    pub fn citation_coverage_sum(&self) -> f64 {
        fraction_sum(self.coverage_sum)
    }

    /// Mean citation coverage of the facts with one: [`FactBucket::citation_coverage_sum`] /
    /// `citation_assessed`.
    pub fn citation_coverage(&self) -> f64 {
        ratio(self.citation_coverage_sum(), self.citation_assessed)
    }

    /// The sum of the CoVe confidences.
    pub fn cove_confidence_sum(&self) -> f64 {
        fraction_sum(self.confidence_sum)
    }

    /// Mean CoVe confidence of the facts with a CoVe result.
    pub fn cove_avg_confidence(&self) -> f64 {
        ratio(self.cove_confidence_sum(), self.cove_facts)
    }

    /// Mean CoVe verification rounds of the facts with a CoVe result.
    pub fn cove_avg_verification_rounds(&self) -> f64 {
        ratio(self.rounds_sum as f64, self.cove_facts)
    }
}

/// A sum of fractions kept in billionths, as a float.
fn fraction_sum(nanos: u64) -> f64 {
    nanos as f64 / FRACTION_SCALE as f64
}

/// `numerator / count`, computed from exactly the two values exported beside it, so that a
/// ratio and the quotient of its exported numerator and denominator are the same float.
fn ratio(numerator: f64, count: u64) -> f64 {
    if count == 0 {
        EMPTY_WINDOW_VALUE
    } else {
        numerator / count as f64
    }
}

impl Bucket for FactBucket {
    #[inline]
    fn zip(&mut self, o: &Self, op: impl Fn(u64, u64) -> u64) {
        let (a, b) = (self.fields(), o.fields());
        *self = Self::from_fields(std::array::from_fn(|i| op(a[i], b[i])));
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
        let a = FactBucket::from_fields([3, 2, 1, 2, 2, 1, 1, 1_940_000_000, 1_800_000_000, 3]);
        let mut s = FactBucket::default();
        s.add(&a);
        s.add(&a);
        s.sub(&a);
        assert_eq!(s, a);
        s.sub(&a);
        assert_eq!(s, FactBucket::default());
        assert_eq!(FactBucket::from_fields(a.fields()), a);
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
    fn means_are_the_float_quotient_of_the_exported_sum_and_count() {
        let b = FactBucket {
            facts: 10,
            hallucination_assessed: 10,
            hallucinated: 1,
            citation_assessed: 10,
            coverage_sum: 10 * 980_000_000,
            cove_facts: 4,
            confidence_sum: 4 * 910_000_000,
            rounds_sum: 6,
            ..Default::default()
        };
        assert_eq!(b.hallucination_rate(), 0.1);
        assert_eq!(b.citation_coverage_sum(), 9.8);
        // 9.8 / 10 in floating point, as PromQL divides the two exported values.
        assert_eq!(b.citation_coverage(), 9.8 / 10.0);
        assert!((b.citation_coverage() - 0.98).abs() < 1e-15);
        assert_eq!(b.cove_confidence_sum(), 3.64);
        assert_eq!(b.cove_avg_confidence(), 3.64 / 4.0);
        assert_eq!(b.cove_avg_verification_rounds(), 1.5);
    }

    #[test]
    fn each_ratio_is_its_exported_numerator_over_its_own_denominator() {
        let b = FactBucket {
            facts: 12,
            hallucination_assessed: 10,
            hallucinated: 1,
            atomicity_assessed: 4,
            non_atomic: 1,
            citation_assessed: 3,
            coverage_sum: 2_950_000_001,
            cove_facts: 7,
            confidence_sum: 4_333_333_333,
            rounds_sum: 10,
        };
        assert_eq!(b.assessed(), 10);
        assert_eq!(b.hallucination_rate(), 0.1);
        assert_eq!(b.citation_coverage_sum(), 2.950_000_001);
        assert_eq!(
            b.citation_coverage().to_bits(),
            (b.citation_coverage_sum() / 3.0).to_bits()
        );
        assert_eq!(
            b.cove_avg_confidence().to_bits(),
            (b.cove_confidence_sum() / 7.0).to_bits()
        );
        assert_eq!(b.cove_avg_verification_rounds(), 10.0 / 7.0);
        let none = FactBucket {
            facts: 3,
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
        assert_eq!(
            FactBucket::of(&fact),
            FactBucket {
                facts: 1,
                hallucination_assessed: 1,
                atomicity_assessed: 1,
                citation_assessed: 1,
                cove_facts: 1,
                hallucinated: 1,
                non_atomic: 1,
                coverage_sum: 900_000_000,
                confidence_sum: 800_000_000,
                rounds_sum: 3,
            }
        );
        assert_eq!(
            FactBucket::of(&Fact::unassessed().hallucinated(true)),
            FactBucket {
                facts: 1,
                hallucination_assessed: 1,
                hallucinated: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            FactBucket::of(&Fact::unassessed().atomic(true)),
            FactBucket {
                facts: 1,
                atomicity_assessed: 1,
                ..Default::default()
            }
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
