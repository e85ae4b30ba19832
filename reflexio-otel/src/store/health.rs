//! The store's health as of the last attempt to write or read it: what the
//! `reflexio_store_*` metrics and `Recorder::store_health` report.

use crate::error::{StoreError, StoreErrorKind};
use std::path::PathBuf;
use std::time::SystemTime;

/// The state of the store, as of the last attempt to write or read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreHealth {
    /// The store's file.
    pub path: PathBuf,
    /// Why the last attempt failed; `None` if it succeeded.
    pub last_error: Option<StoreError>,
    /// When the current run of failures began.
    pub failing_since: Option<SystemTime>,
    /// When an attempt last succeeded.
    pub last_success: Option<SystemTime>,
    /// Successful flushes (each writes what is new and reads what others wrote).
    pub flushes: u64,
    errors: [u64; StoreErrorKind::ALL.len()],
}

impl StoreHealth {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            last_error: None,
            failing_since: None,
            last_success: None,
            flushes: 0,
            errors: [0; StoreErrorKind::ALL.len()],
        }
    }

    /// The store was read and the last attempt to write it succeeded.
    pub fn is_healthy(&self) -> bool {
        self.last_error.is_none() && self.last_success.is_some()
    }

    /// The store has been read since the recorder started.
    pub fn is_loaded(&self) -> bool {
        self.last_success.is_some()
    }

    /// Failed attempts of `kind` so far.
    pub fn errors(&self, kind: StoreErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    /// Notes an attempt that succeeded at `at`.
    pub(crate) fn succeeded(&mut self, at: SystemTime) {
        if let Some(e) = self.last_error.take() {
            tracing::info!(
                path = %self.path.display(),
                after = %e,
                "metrics store is writable again; nothing recorded meanwhile was lost"
            );
        }
        self.failing_since = None;
        self.last_success = Some(at);
        self.flushes += 1;
    }

    /// Notes an attempt that failed at `at`, logging the error when its kind changes.
    pub(crate) fn failed(&mut self, error: &StoreError, at: SystemTime) {
        let changed = self.last_error.as_ref().map(StoreError::kind) != Some(error.kind());
        if changed {
            tracing::error!(
                error = %error,
                "cannot write the metrics store; recording continues in memory and the write is retried"
            );
        } else {
            tracing::debug!(error = %error, "metrics store write failed again");
        }
        if self.last_error.is_none() {
            self.failing_since = Some(at);
        }
        self.errors[error.kind().index()] += 1;
        self.last_error = Some(error.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn failures_are_counted_by_kind_until_an_attempt_succeeds() {
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let busy = StoreError::new(StoreErrorKind::Busy, Path::new("m.db"), "locked");
        let full = StoreError::new(StoreErrorKind::Full, Path::new("m.db"), "disk full");
        let mut h = StoreHealth::new("m.db".into());
        assert!(!h.is_healthy(), "not before the store was read");
        h.failed(&busy, t(10));
        h.failed(&busy, t(11));
        h.failed(&full, t(12));
        assert_eq!(h.failing_since, Some(t(10)), "since the first of the run");
        assert_eq!(h.last_error, Some(full));
        assert_eq!(
            (
                h.errors(StoreErrorKind::Busy),
                h.errors(StoreErrorKind::Full)
            ),
            (2, 1)
        );
        assert_eq!(h.errors(StoreErrorKind::Corrupt), 0);
        h.succeeded(t(20));
        assert!(h.is_healthy());
        assert_eq!(
            (h.failing_since, h.last_success, h.flushes),
            (None, Some(t(20)), 1)
        );
        assert_eq!(h.errors(StoreErrorKind::Busy), 2, "counts never go down");
        h.failed(&busy, t(30));
        assert_eq!(h.failing_since, Some(t(30)), "a new run of failures");
        assert!(!h.is_healthy());
    }
}
