//! Where the store lives and how it is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How SQLite makes a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is on disk before it returns (`PRAGMA synchronous = FULL`): survives power
    /// loss. The default.
    #[default]
    Full,
    /// Commits survive a crash of the process, not of the machine
    /// (`PRAGMA synchronous = NORMAL`).
    Normal,
}

/// Where the store lives and how it is written.
#[derive(Debug, Clone)]
#[must_use]
pub struct StoreOptions {
    pub(crate) path: PathBuf,
    pub(crate) flush_interval: Duration,
    pub(crate) busy_timeout: Duration,
    pub(crate) synchronous: Synchronous,
    pub(crate) integrity_check_interval: Duration,
    pub(crate) idempotency_window: Duration,
    pub(crate) max_idempotency_keys: u64,
}

impl StoreOptions {
    /// A store at `path` (created if missing), flushed every second.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            flush_interval: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            integrity_check_interval: Duration::from_secs(60),
            idempotency_window: Self::DEFAULT_IDEMPOTENCY_WINDOW,
            max_idempotency_keys: Self::DEFAULT_MAX_IDEMPOTENCY_KEYS,
        }
    }

    /// The default of [`StoreOptions::idempotency_window`]: 24 hours.
    pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

    /// The default of [`StoreOptions::max_idempotency_keys`]: 100,000 (about 15 MiB of store).
    pub const DEFAULT_MAX_IDEMPOTENCY_KEYS: u64 = 100_000;

    /// How long the key of a durable batch is kept
    /// ([`crate::Recorder::record_durable_keyed`]): a batch sent again with its key within this
    /// long is not recorded again. Default: 24 hours.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window.max(Duration::from_millis(1));
        self
    }

    /// The most idempotency keys kept: past it, the oldest are dropped first, even within the
    /// window. Default: 100,000.
    pub fn max_idempotency_keys(mut self, max: u64) -> Self {
        self.max_idempotency_keys = max.max(1);
        self
    }

    /// How often recorded events are written. Default: 1 second. A crash loses at most this
    /// much of the events not recorded through the durable path.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a write waits for another process's lock on the file before it fails (and is
    /// retried at the next interval). Default: 5 seconds.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How durable each commit is. Default: [`Synchronous::Full`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How often the store's file is checked for damage (`PRAGMA quick_check`). Default: 1 minute.
    pub fn integrity_check_interval(mut self, interval: Duration) -> Self {
        self.integrity_check_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
