//! Wall-clock time sources: the real (coarse) clock and a manual clock that tests drive.
//!
//! Windows are bucketed by the minute, so the recorder reads the kernel's coarse real-time
//! clock (`CLOCK_REALTIME_COARSE`, a few milliseconds of resolution, about 2 ns per read on
//! Linux) instead of the precise one (about 30 ns). Every window function takes the time as a
//! parameter; the [`Clock`] only supplies "now" when an event carries no time of its own.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's real-time clock, read at coarse resolution where the platform offers it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(target_os = "linux")]
    fn now(&self) -> SystemTime {
        use rustix::time::{ClockId, clock_gettime};
        let ts = clock_gettime(ClockId::RealtimeCoarse);
        match (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
            (Ok(secs), Ok(nanos)) => UNIX_EPOCH + Duration::new(secs, nanos),
            _ => SystemTime::now(),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// ```
/// use reflexio_otel::{Clock, ManualClock};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_700_000_090));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    nanos_since_epoch: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `start` (times before the Unix epoch read as the epoch).
    pub fn new(start: SystemTime) -> Self {
        let clock = Self {
            nanos_since_epoch: Arc::new(AtomicU64::new(0)),
        };
        clock.set(start);
        clock
    }

    /// Moves the clock to `time`, forwards or backwards.
    pub fn set(&self, time: SystemTime) {
        self.nanos_since_epoch
            .store(nanos_since_epoch(time), Ordering::Relaxed);
    }

    /// Moves the clock forwards by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos_since_epoch
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos_since_epoch.load(Ordering::Relaxed))
    }
}

/// Nanoseconds since the Unix epoch: 0 before it, saturating far after it.
pub(crate) fn nanos_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whole minutes since the Unix epoch: the index of the aligned one-minute window bucket that
/// holds `time`, or `None` for times before the epoch.
pub(crate) fn minute_of(time: SystemTime) -> Option<u64> {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_agrees_with_precise_clock() {
        let coarse = SystemClock.now();
        let precise = SystemTime::now();
        let gap = match precise.duration_since(coarse) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(
            gap < Duration::from_millis(50),
            "coarse clock is {gap:?} off"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = UNIX_EPOCH + Duration::from_secs(600);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(61));
        assert_eq!(minute_of(clock.now()), Some(11));
        clock.set(start - Duration::from_secs(1));
        assert_eq!(minute_of(clock.now()), Some(9));
    }

    #[test]
    fn minute_of_rejects_pre_epoch_times() {
        assert_eq!(minute_of(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(minute_of(UNIX_EPOCH + Duration::from_secs(59)), Some(0));
    }
}
