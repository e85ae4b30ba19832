//! Rolling windows: fixed, minute-aligned buckets in a ring, with a running sum.
//!
//! A window of `len` minutes at head minute `h` covers minutes `h - len + 1 ..= h`: the current
//! minute and the `len - 1` before it. Memory and the cost of reading a window depend on `len`,
//! never on the number of events. Its buckets (`bucket`) add exactly, so a window read back from
//! disk, or merged from several processes, sums the same.

use crate::model::bucket::Bucket;

/// Minutes in the 24-hour window.
pub const DAY_MINUTES: u64 = 24 * 60;
/// Minutes in the 7-day window.
pub const WEEK_MINUTES: u64 = 7 * DAY_MINUTES;

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
        // A sum that stopped at the limit cannot be taken from: count it again afterwards.
        let saturated = self.sum.is_saturated();
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
        if saturated {
            self.resum();
        }
    }

    /// Sums the buckets inside the window again.
    fn resum(&mut self) {
        let mut sum = B::default();
        for (_, b) in self.buckets() {
            sum.add(&b);
        }
        self.sum = sum;
    }

    /// The slot of `minute`'s bucket, first advancing the head if `minute` is newer; a slot
    /// that held an expired minute is emptied for it. `None` if `minute` is older than the
    /// window.
    fn claim(&mut self, minute: u64) -> Option<usize> {
        self.advance(minute);
        if !self.covers(minute) {
            return None;
        }
        let slot = self.slot(minute);
        let (tag, bucket) = &mut self.ring[slot];
        if *tag != minute {
            *tag = minute;
            *bucket = B::default();
        }
        Some(slot)
    }

    /// Adds `delta` to the bucket of `minute`, first advancing the head if `minute` is newer.
    /// Returns `false`, changing nothing, if `minute` is older than the window.
    pub(crate) fn add(&mut self, minute: u64, delta: &B) -> bool {
        let Some(slot) = self.claim(minute) else {
            return false;
        };
        self.ring[slot].1.add(delta);
        self.sum.add(delta);
        true
    }

    /// Sets the bucket of `minute` to `value`, first advancing the head if `minute` is newer.
    /// Returns `false`, changing nothing, if `minute` is older than the window.
    pub(crate) fn set(&mut self, minute: u64, value: &B) -> bool {
        let Some(slot) = self.claim(minute) else {
            return false;
        };
        let saturated = self.sum.is_saturated();
        let bucket = &mut self.ring[slot].1;
        self.sum.sub(bucket);
        *bucket = *value;
        self.sum.add(value);
        if saturated {
            self.resum();
        }
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
    use crate::model::bucket::RetentionBucket;

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
    fn a_sum_that_stopped_at_the_limit_is_counted_again_when_buckets_leave() {
        use crate::model::count::MAX_COUNT;
        let mut w = Window::<RetentionBucket>::new(3);
        w.add(10, &ops(MAX_COUNT - 1));
        w.add(11, &ops(5));
        assert_eq!(w.sum().operations, MAX_COUNT, "stops at the limit");
        w.advance(13);
        assert_eq!(w.sum().operations, 5, "minute 10 left");
        w.set(12, &ops(MAX_COUNT));
        w.set(12, &ops(1));
        assert_eq!(w.sum().operations, 6);
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
}
