//! Histogram bucket layouts, cumulative bucket counts, and the values that replay a count delta
//! into an OpenTelemetry SDK histogram.
//!
//! The SDK histogram takes one observation per call and guards its buckets with a mutex, so the
//! record path does not call it. Observations are counted per bucket in lock-free shards, and the
//! counted deltas are replayed into the SDK histogram before each collection: for each bucket,
//! `count` observations of one value inside that bucket, the values chosen so that their sum
//! equals the exact sum of the real observations. Bucket counts and counts match exactly; the
//! sum matches to floating-point rounding. Minimum and maximum are not meaningful after a
//! replay; the exposition's `histogram_view` turns them off.

use crate::event::{FRACTION_SCALE, Fact, MAX_ROUNDS};
use crate::model::count;

/// How a histogram's observations are bucketed, in integer units.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Upper bounds as floats, as given to the SDK.
    pub(crate) bounds: &'static [f64],
    /// The same upper bounds in integer units (billionths for fractions).
    pub(crate) bounds_units: &'static [u64],
    /// Integer units per 1.0.
    pub(crate) scale: u64,
    /// The smallest and largest possible observation, in units.
    pub(crate) min_units: u64,
    pub(crate) max_units: u64,
}

impl Layout {
    /// The bucket holding `units`: the first whose upper bound is at least `units`, as in the
    /// OpenTelemetry SDK (buckets are `(lower, upper]`).
    pub(crate) fn bucket(&self, units: u64) -> usize {
        self.bounds_units.partition_point(|&b| b < units)
    }
}

impl Layout {
    /// A layout of observations from `min_units` to `max_units`, checked at compile time:
    /// `bounds_units` are `bounds` in units, and increase strictly within that range.
    const fn new(
        bounds: &'static [f64],
        bounds_units: &'static [u64],
        scale: u64,
        (min_units, max_units): (u64, u64),
    ) -> Self {
        assert!(bounds.len() == bounds_units.len());
        let mut i = 0;
        while i < bounds.len() {
            let units = bounds_units[i];
            let exact = bounds[i] * scale as f64;
            assert!(
                (exact - units as f64).abs() < 1e-6,
                "a bound is not whole units"
            );
            assert!(
                units >= min_units && units < max_units,
                "a bound is out of range"
            );
            assert!(
                i == 0 || units > bounds_units[i - 1],
                "bounds must increase"
            );
            i += 1;
        }
        Self {
            bounds,
            bounds_units,
            scale,
            min_units,
            max_units,
        }
    }

    /// A layout of fractions, `[0, 1]`, counted in billionths.
    const fn fractions(bounds: &'static [f64], bounds_units: &'static [u64]) -> Self {
        Self::new(bounds, bounds_units, FRACTION_SCALE, (0, FRACTION_SCALE))
    }
}

/// `bounds` in whole units of `scale` per 1.0.
const fn units<const N: usize>(bounds: [f64; N], scale: u64) -> [u64; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = (bounds[i] * scale as f64).round() as u64;
        i += 1;
    }
    out
}

const COVERAGE_BOUNDS: [f64; 7] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99];
const CONFIDENCE_BOUNDS: [f64; 11] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];
const ROUNDS_BOUNDS: [f64; 7] = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0];

/// Citation coverage, `[0, 1]`: fine steps near the 95% and 98% targets.
pub(crate) const COVERAGE: Layout =
    Layout::fractions(&COVERAGE_BOUNDS, &units(COVERAGE_BOUNDS, FRACTION_SCALE));
/// CoVe confidence, `[0, 1]`: tenths, plus 0.95 and 0.99.
pub(crate) const CONFIDENCE: Layout = Layout::fractions(
    &CONFIDENCE_BOUNDS,
    &units(CONFIDENCE_BOUNDS, FRACTION_SCALE),
);
/// CoVe verification rounds, `1..=`[`MAX_ROUNDS`].
pub(crate) const ROUNDS: Layout = Layout::new(
    &ROUNDS_BOUNDS,
    &units(ROUNDS_BOUNDS, 1),
    1,
    (1, MAX_ROUNDS as u64),
);

/// Buckets of each layout, including `+Inf`: the sizes of the counts the record path indexes.
pub(crate) const COVERAGE_BUCKETS: usize = COVERAGE_BOUNDS.len() + 1;
pub(crate) const CONFIDENCE_BUCKETS: usize = CONFIDENCE_BOUNDS.len() + 1;
pub(crate) const ROUNDS_BUCKETS: usize = ROUNDS_BOUNDS.len() + 1;

/// Cumulative observations of one histogram: per-bucket counts and the exact sum in units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts<const N: usize> {
    /// Observations per bucket (not cumulative across buckets); the last is `+Inf`.
    pub buckets: [u64; N],
    /// Sum of the observations, in the layout's integer units.
    pub sum: u64,
}

impl<const N: usize> Default for Counts<N> {
    fn default() -> Self {
        Self {
            buckets: [0; N],
            sum: 0,
        }
    }
}

impl<const N: usize> Counts<N> {
    /// Total observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, &b| count::add(a, b))
    }

    /// Adds `other`, by the rule of every count (`model::count`).
    pub(crate) fn add(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a = count::add(*a, b);
        }
        self.sum = count::add(self.sum, other.sum);
    }

    /// `self - earlier`, bucket by bucket; `None` if any part went down.
    pub(crate) fn since(&self, earlier: &Self) -> Option<Self> {
        let mut delta = Self::default();
        for i in 0..N {
            delta.buckets[i] = self.buckets[i].checked_sub(earlier.buckets[i])?;
        }
        delta.sum = self.sum.checked_sub(earlier.sum)?;
        Some(delta)
    }

    /// The values to replay these new observations with into an SDK histogram with
    /// `layout`'s bounds: for each non-empty bucket, `(value, count)` with `value` inside the
    /// bucket, such that `sum(value * count)` is as close to `sum` (in value units) as the
    /// buckets allow — equal to it, to rounding, when `sum` is the observations' real sum.
    ///
    /// Every value is `lower + t * (upper - lower)` of its bucket, with one `t` for all
    /// buckets, solved from the sum; real observations of a bucket lie in `(lower, upper]`,
    /// so `t` is in `(0, 1]` and each value is inside its bucket.
    pub(crate) fn replay_values(&self, layout: &Layout, sum: f64) -> Vec<(f64, u64)> {
        let bound = |i: usize, default: u64| layout.bounds_units.get(i).copied().unwrap_or(default);
        let range = |i: usize| {
            let lower = if i == 0 {
                layout.min_units
            } else {
                bound(i - 1, layout.max_units)
            };
            let upper = bound(i, layout.max_units).max(lower);
            (lower, upper)
        };
        let (mut base, mut width) = (0f64, 0f64);
        for (i, &c) in self.buckets.iter().enumerate() {
            let (lower, upper) = range(i);
            base += c as f64 * lower as f64;
            width += c as f64 * (upper - lower) as f64;
        }
        let scale = layout.scale as f64;
        let t = if width > 0.0 {
            ((sum * scale - base) / width).clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| {
                let (lower, upper) = range(i);
                let upper_f = layout
                    .bounds
                    .get(i)
                    .copied()
                    .unwrap_or(upper as f64 / scale);
                let mut v = (lower as f64 + t * (upper - lower) as f64) / scale;
                if i > 0 {
                    // Strictly above the previous bound, at most this bound, as the SDK buckets.
                    let lower_f = layout.bounds[i - 1];
                    if v <= lower_f {
                        v = lower_f.next_up();
                    }
                }
                (v.min(upper_f), c)
            })
            .collect()
    }
}

/// The cumulative observations of the three histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramCounts {
    /// Citation coverage of every fact that has one, in billionths.
    pub coverage: Counts<COVERAGE_BUCKETS>,
    /// CoVe confidence of facts with a CoVe result, in billionths.
    pub confidence: Counts<CONFIDENCE_BUCKETS>,
    /// CoVe verification rounds of facts with a CoVe result.
    pub rounds: Counts<ROUNDS_BUCKETS>,
}

impl HistogramCounts {
    pub(crate) fn add(&mut self, other: &Self) {
        self.coverage.add(&other.coverage);
        self.confidence.add(&other.confidence);
        self.rounds.add(&other.rounds);
    }

    /// Counts `fact`'s observations: its citation coverage and CoVe result, if it has them.
    pub(crate) fn observe(&mut self, fact: &Fact) {
        if let Some(coverage) = fact.citation_coverage {
            let cov = coverage.nanos();
            bump(&mut self.coverage.buckets[COVERAGE.bucket(cov)]);
            self.coverage.sum = count::add(self.coverage.sum, cov);
        }
        if let Some(c) = fact.cove {
            let conf = c.confidence.nanos();
            let rounds = u64::from(c.rounds.get());
            bump(&mut self.confidence.buckets[CONFIDENCE.bucket(conf)]);
            self.confidence.sum = count::add(self.confidence.sum, conf);
            bump(&mut self.rounds.buckets[ROUNDS.bucket(rounds)]);
            self.rounds.sum = count::add(self.rounds.sum, rounds);
        }
    }
}

fn bump(c: &mut u64) {
    *c = count::add(*c, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nanos(x: f64) -> u64 {
        (x * FRACTION_SCALE as f64).round() as u64
    }

    #[test]
    fn layouts_agree_with_their_float_bounds() {
        for layout in [&COVERAGE, &CONFIDENCE, &ROUNDS] {
            assert_eq!(layout.bounds.len(), layout.bounds_units.len());
            for (f, u) in layout.bounds.iter().zip(layout.bounds_units) {
                assert_eq!((f * layout.scale as f64).round() as u64, *u);
            }
            assert!(layout.bounds.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(COVERAGE.bounds.len() + 1, COVERAGE_BUCKETS);
        assert_eq!(CONFIDENCE.bounds.len() + 1, CONFIDENCE_BUCKETS);
        assert_eq!(ROUNDS.bounds.len() + 1, ROUNDS_BUCKETS);
    }

    #[test]
    fn buckets_are_upper_inclusive() {
        assert_eq!(COVERAGE.bucket(nanos(0.5)), 0);
        assert_eq!(COVERAGE.bucket(nanos(0.5) + 1), 1);
        assert_eq!(COVERAGE.bucket(FRACTION_SCALE), COVERAGE_BUCKETS - 1);
        assert_eq!(ROUNDS.bucket(1), 0);
        assert_eq!(ROUNDS.bucket(6), 5);
        assert_eq!(ROUNDS.bucket(1000), ROUNDS_BUCKETS - 1);
    }

    /// The SDK's bucketing of a float, for checking replayed values.
    fn sdk_bucket(bounds: &[f64], v: f64) -> usize {
        bounds.partition_point(|&b| b < v)
    }

    fn check_replay<const N: usize>(layout: &Layout, observations: &[u64]) {
        let mut counts = Counts::<N>::default();
        for &u in observations {
            counts.buckets[layout.bucket(u)] += 1;
            counts.sum += u;
        }
        let mut replayed = [0u64; N];
        let mut sum = 0f64;
        for (v, c) in counts.replay_values(layout, counts.sum as f64 / layout.scale as f64) {
            replayed[sdk_bucket(layout.bounds, v)] += c;
            sum += v * c as f64;
        }
        assert_eq!(
            replayed, counts.buckets,
            "replayed values left their buckets"
        );
        let exact = counts.sum as f64 / layout.scale as f64;
        assert!(
            (sum - exact).abs() <= 1e-9 * exact.max(1.0) * observations.len().max(1) as f64,
            "replayed sum {sum} != {exact}"
        );
    }

    proptest! {
        #[test]
        fn replay_keeps_buckets_and_sum(obs in prop::collection::vec(0u64..=FRACTION_SCALE, 0..200)) {
            check_replay::<COVERAGE_BUCKETS>(&COVERAGE, &obs);
            check_replay::<CONFIDENCE_BUCKETS>(&CONFIDENCE, &obs);
        }

        #[test]
        fn replay_keeps_round_buckets_and_sum(obs in prop::collection::vec(1u64..=1000, 0..200)) {
            check_replay::<ROUNDS_BUCKETS>(&ROUNDS, &obs);
        }
    }

    #[test]
    fn replay_handles_values_on_bounds() {
        check_replay::<COVERAGE_BUCKETS>(
            &COVERAGE,
            &[0, 500_000_000, nanos(0.5) + 1, nanos(0.99) + 1],
        );
        check_replay::<COVERAGE_BUCKETS>(&COVERAGE, &[FRACTION_SCALE; 5]);
        check_replay::<ROUNDS_BUCKETS>(&ROUNDS, &[1, 1, 1, 10, 11, 1000]);
    }
}
