//! Rolling windows: fixed, minute-aligned buckets in a ring, with a running sum.
//!
//! A bucket holds only integers (counts and sums in billionths), so adding buckets is exact,
//! associative and commutative: buckets from several processes, or read back from disk, merge
//! by addition. A window of `len` minutes at head minute `h` covers minutes `h - len + 1 ..= h`:
//! the current minute and the `len - 1` before it. Memory and the cost of reading a window
//! depend on `len`, never on the number of events.

use crate::event::{CoveResult, Fact};

/// Minutes in the 24-hour window.
pub const DAY_MINUTES: u64 = 24 * 60;
/// Minutes in the 7-day window.
pub const WEEK_MINUTES: u64 = 7 * DAY_MINUTES;

/// An additive window bucket.
pub(crate) trait Bucket: Copy + Default + PartialEq {
    fn add(&mut self, other: &Self);
    fn sub(&mut self, other: &Self);
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
        self.facts.wrapping_sub(self.unassessed)
    }
}

impl Bucket for FactBucket {
    fn add(&mut self, o: &Self) {
        self.facts = self.facts.wrapping_add(o.facts);
        self.unassessed = self.unassessed.wrapping_add(o.unassessed);
        self.hallucinated = self.hallucinated.wrapping_add(o.hallucinated);
        self.non_atomic = self.non_atomic.wrapping_add(o.non_atomic);
        self.coverage_sum = self.coverage_sum.wrapping_add(o.coverage_sum);
        self.cove_facts = self.cove_facts.wrapping_add(o.cove_facts);
        self.confidence_sum = self.confidence_sum.wrapping_add(o.confidence_sum);
        self.rounds_sum = self.rounds_sum.wrapping_add(o.rounds_sum);
    }

    fn sub(&mut self, o: &Self) {
        self.facts = self.facts.wrapping_sub(o.facts);
        self.unassessed = self.unassessed.wrapping_sub(o.unassessed);
        self.hallucinated = self.hallucinated.wrapping_sub(o.hallucinated);
        self.non_atomic = self.non_atomic.wrapping_sub(o.non_atomic);
        self.coverage_sum = self.coverage_sum.wrapping_sub(o.coverage_sum);
        self.cove_facts = self.cove_facts.wrapping_sub(o.cove_facts);
        self.confidence_sum = self.confidence_sum.wrapping_sub(o.confidence_sum);
        self.rounds_sum = self.rounds_sum.wrapping_sub(o.rounds_sum);
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
    pub(crate) fn of(run: &crate::event::RetentionRun) -> Self {
        Self {
            operations: 1,
            deleted_records: run.counted_deletions(),
            errors: u64::from(run.error.is_some()),
        }
    }
}

impl Bucket for RetentionBucket {
    fn add(&mut self, o: &Self) {
        self.operations = self.operations.wrapping_add(o.operations);
        self.deleted_records = self.deleted_records.wrapping_add(o.deleted_records);
        self.errors = self.errors.wrapping_add(o.errors);
    }

    fn sub(&mut self, o: &Self) {
        self.operations = self.operations.wrapping_sub(o.operations);
        self.deleted_records = self.deleted_records.wrapping_sub(o.deleted_records);
        self.errors = self.errors.wrapping_sub(o.errors);
    }
}

/// A ring of `len` minute buckets and their running sum.
#[derive(Debug, Clone)]
pub(crate) struct Window<B> {
    /// `(minute, bucket)`; a slot whose minute has left the window is stale and reads as empty.
    ring: Box<[(u64, B)]>,
    /// Sum of the buckets inside the window.
    sum: B,
    /// The newest minute seen; the window covers `head - len + 1 ..= head`.
    head: u64,
}

impl<B: Bucket> Window<B> {
    pub(crate) fn new(len: u64) -> Self {
        let len = usize::try_from(len.max(1)).unwrap_or(usize::MAX);
        Self {
            ring: vec![(u64::MAX, B::default()); len].into_boxed_slice(),
            sum: B::default(),
            head: 0,
        }
    }

    fn len(&self) -> u64 {
        self.ring.len() as u64
    }

    fn slot(&self, minute: u64) -> usize {
        // The remainder is below `ring.len()`, which is a usize.
        (minute % self.len()) as usize
    }

    /// Whether `minute` lies inside the window.
    pub(crate) fn covers(&self, minute: u64) -> bool {
        minute <= self.head && minute + self.len() > self.head
    }

    /// Moves the head forwards to `minute`, expiring the buckets that fall out. Never moves it
    /// backwards. Costs at most `len` steps, however far it moves.
    pub(crate) fn advance(&mut self, minute: u64) {
        if minute <= self.head {
            return;
        }
        // Minutes of the old window (`head - len + 1 ..= head`) that the new one no longer
        // covers (`..= minute - len`): at most `len` of them.
        let len = self.len();
        if let Some(newest_expired) = minute.checked_sub(len) {
            let first = (self.head + 1).saturating_sub(len);
            for expiring in first..=newest_expired.min(self.head) {
                let slot = self.slot(expiring);
                let (tag, bucket) = &mut self.ring[slot];
                if *tag == expiring {
                    self.sum.sub(bucket);
                    *tag = u64::MAX;
                    *bucket = B::default();
                }
            }
        }
        self.head = minute;
    }

    /// Adds `delta` to the bucket of `minute`, first advancing the head if `minute` is newer.
    /// Returns `false`, changing nothing, if `minute` is older than the window.
    pub(crate) fn add(&mut self, minute: u64, delta: &B) -> bool {
        self.advance(minute);
        if !self.covers(minute) {
            return false;
        }
        let slot = self.slot(minute);
        let (tag, bucket) = &mut self.ring[slot];
        if *tag != minute {
            *tag = minute;
            *bucket = B::default();
        }
        bucket.add(delta);
        self.sum.add(delta);
        true
    }

    /// Sets the bucket of `minute` to `value`, first advancing the head if `minute` is newer.
    /// Returns `false`, changing nothing, if `minute` is older than the window.
    pub(crate) fn set(&mut self, minute: u64, value: &B) -> bool {
        self.advance(minute);
        if !self.covers(minute) {
            return false;
        }
        let slot = self.slot(minute);
        let (tag, bucket) = &mut self.ring[slot];
        if *tag != minute {
            *tag = minute;
            *bucket = B::default();
        }
        self.sum.sub(bucket);
        *bucket = *value;
        self.sum.add(value);
        true
    }

    /// The buckets inside the window, by minute.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (u64, B)> + '_ {
        self.ring
            .iter()
            .filter(|(minute, _)| self.covers(*minute))
            .map(|(minute, b)| (*minute, *b))
    }

    /// The sum over the window.
    pub(crate) fn sum(&self) -> B {
        self.sum
    }

    /// The newest minute seen.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: u64) -> RetentionBucket {
        RetentionBucket {
            operations: n,
            ..Default::default()
        }
    }

    #[test]
    fn window_sums_the_last_len_minutes() {
        let mut w = Window::<RetentionBucket>::new(3);
        assert!(w.add(100, &ops(1)));
        assert!(w.add(101, &ops(2)));
        assert!(w.add(102, &ops(4)));
        assert_eq!(w.sum().operations, 7);
        w.advance(103);
        assert_eq!(w.sum().operations, 6, "minute 100 left the window");
        assert!(!w.add(100, &ops(8)), "too old");
        assert!(w.add(101, &ops(8)), "late but inside");
        assert_eq!(w.sum().operations, 14);
        w.advance(1_000);
        assert_eq!(w.sum(), RetentionBucket::default());
        assert!(w.add(998, &ops(1)));
        assert_eq!(w.sum().operations, 1);
    }

    #[test]
    fn set_replaces_a_bucket_and_keeps_the_sum() {
        let mut w = Window::<RetentionBucket>::new(3);
        w.add(10, &ops(2));
        w.add(11, &ops(3));
        assert!(w.set(10, &ops(7)));
        assert_eq!(w.sum().operations, 10);
        assert!(w.set(12, &ops(1)), "a newer minute moves the head");
        assert_eq!(w.sum().operations, 11);
        assert!(!w.set(9, &ops(100)), "too old");
        assert!(w.set(13, &ops(0)));
        assert_eq!(w.sum().operations, 4, "minute 10 expired");
    }

    #[test]
    fn window_never_moves_backwards() {
        let mut w = Window::<RetentionBucket>::new(5);
        w.add(50, &ops(1));
        w.advance(40);
        assert_eq!(w.head(), 50);
        assert_eq!(w.sum().operations, 1);
        assert!(w.add(46, &ops(1)));
        assert!(!w.add(45, &ops(1)));
    }

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
}
