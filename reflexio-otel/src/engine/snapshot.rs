//! A consistent view of every exported value at one instant, and the narrow source the
//! exporters read snapshots from.

use crate::event::CoveConfig;
use crate::model::bucket::{FactBucket, RetentionBucket};
use crate::model::histogram::HistogramCounts;
use crate::model::totals::{TableLabel, Totals};
use crate::store::health::StoreHealth;
use std::sync::Arc;
use std::time::SystemTime;

/// Lock counts at the snapshot's instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockCounts {
    /// Locks held.
    pub active: u64,
    /// Locks held for longer than the stale threshold.
    pub stale: u64,
    /// Locks evicted so far.
    pub evicted: u64,
}

/// Everything the recorder exports, at one instant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// When it was taken.
    pub at: SystemTime,
    /// Cumulative counters.
    pub totals: Totals,
    /// Facts of the last 24 hours; see [`FactBucket::hallucination_rate`] and friends.
    pub facts_24h: FactBucket,
    /// Retention runs of the last 7 days, all tables together.
    pub retention_7d: RetentionBucket,
    /// Cumulative retention counts per table.
    pub retention_by_table: Vec<(TableLabel, RetentionBucket)>,
    /// Cumulative histogram observations.
    pub histograms: HistogramCounts,
    /// Process locks.
    pub locks: LockCounts,
    /// The latest CoVe configuration reported, if any.
    pub cove: Option<CoveConfig>,
    /// The store's health, if the recorder has a store.
    pub store: Option<StoreHealth>,
    /// How often the clock went back by more than a second.
    pub clock_jumps_back: u64,
    /// Increases with every snapshot of the same recorder.
    pub(crate) seq: u64,
}

impl Snapshot {
    pub(crate) fn empty() -> Self {
        Self {
            at: SystemTime::UNIX_EPOCH,
            totals: Totals::default(),
            facts_24h: FactBucket::default(),
            retention_7d: RetentionBucket::default(),
            retention_by_table: Vec::new(),
            histograms: HistogramCounts::default(),
            locks: LockCounts::default(),
            cove: None,
            store: None,
            clock_jumps_back: 0,
            seq: 0,
        }
    }
}

/// Called after each refresh with the new snapshot (the OpenTelemetry histogram replay).
pub(crate) type RefreshHook = Box<dyn Fn(&Snapshot) + Send + Sync>;

/// Where exporters read snapshots from: the engine, or a fake in tests.
pub(crate) trait SnapshotSource: Send + Sync {
    /// Takes in what was recorded, publishes a snapshot taken now, runs the refresh hooks, and
    /// returns the snapshot.
    fn refresh(&self) -> Arc<Snapshot>;

    /// The snapshot published last. Its `store` is `Some` exactly when there is a store.
    fn latest(&self) -> Arc<Snapshot>;

    /// Calls `hook` with every snapshot published from now on.
    fn on_refresh(&self, hook: RefreshHook);
}
