//! The one rule every count and sum follows, in memory and in the store: it stops at
//! [`MAX_COUNT`], the largest integer SQLite stores, instead of wrapping or failing. A sum that
//! reached it stays there; nothing that adds to it ever fails, so one event with an absurd value
//! cannot make the store unreadable or refuse the events committed with it.

/// The largest value of any count or sum: `i64::MAX`, the largest integer SQLite stores.
pub(crate) const MAX_COUNT: u64 = i64::MAX as u64;

/// `a + b`, stopping at [`MAX_COUNT`].
#[inline]
pub(crate) fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_COUNT)
}

/// `a - b`, stopping at 0.
#[inline]
pub(crate) fn sub(a: u64, b: u64) -> u64 {
    a.saturating_sub(b)
}

/// `a * n`, stopping at [`MAX_COUNT`]: `n` events of `a` each.
#[inline]
pub(crate) fn mul(a: u64, n: u64) -> u64 {
    a.saturating_mul(n).min(MAX_COUNT)
}

/// `v`, or [`MAX_COUNT`] if it is larger.
#[inline]
pub(crate) fn clamp(v: u64) -> u64 {
    v.min(MAX_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_products_stop_at_the_limit_and_differences_at_zero() {
        assert_eq!(add(MAX_COUNT - 2, 1), MAX_COUNT - 1);
        assert_eq!(add(MAX_COUNT - 2, 5), MAX_COUNT);
        assert_eq!(add(MAX_COUNT, MAX_COUNT), MAX_COUNT);
        assert_eq!(add(u64::MAX, 0), MAX_COUNT, "a value past it counts as it");
        assert_eq!(sub(3, 5), 0);
        assert_eq!(sub(5, 3), 2);
        assert_eq!((clamp(u64::MAX), clamp(7)), (MAX_COUNT, 7));
        assert_eq!((mul(3, 4), mul(0, u64::MAX), mul(7, 0)), (12, 0, 0));
        assert_eq!(mul(MAX_COUNT / 2 + 1, 2), MAX_COUNT, "stops at the limit");
        assert_eq!(mul(u64::MAX, 1), MAX_COUNT);
    }
}
