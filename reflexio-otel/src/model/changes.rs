//! What the store returns after a read or a write, and the checkpoints that move with a write.

use crate::event::CoveConfig;
use crate::model::bucket::{FactBucket, RetentionBucket};
use crate::model::histogram::HistogramCounts;
use crate::model::locks::HeldLock;
use crate::model::totals::{TableLabel, Totals};
use std::time::SystemTime;

/// A position in a source read exactly once (a row id of an application's table, say), moved
/// in the same transaction as the events read up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which source, e.g. `legacy:facts`.
    pub key: String,
    /// The value it holds now, as last read (`None`: it does not exist yet).
    pub expected: Option<i64>,
    /// The value to move it to.
    pub value: i64,
}

/// What a durable batch sent with an [`crate::IdempotencyKey`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed {
    /// Recorded now; the key is kept with the result.
    Recorded,
    /// The key was seen within the window, with the same fingerprint: nothing was recorded now.
    /// `accepted` is what the first batch recorded, at `at`.
    Replayed {
        /// The number of events the first batch recorded.
        accepted: u64,
        /// When it was committed.
        at: SystemTime,
    },
    /// The key was seen within the window for another batch (another fingerprint): nothing was
    /// recorded.
    Conflict {
        /// When the other batch was committed.
        at: SystemTime,
    },
}

/// Everything read back from the store: the window minutes stamped after the last read, and
/// all of the small tables.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Changes {
    pub(crate) facts: Vec<(u64, FactBucket)>,
    pub(crate) retention: Vec<(u64, RetentionBucket)>,
    pub(crate) totals: Totals,
    pub(crate) histograms: HistogramCounts,
    /// In the order the store first saw each table.
    pub(crate) tables: Vec<(TableLabel, RetentionBucket)>,
    pub(crate) cove: Option<(CoveConfig, SystemTime)>,
    pub(crate) locks: Vec<HeldLock>,
    pub(crate) checkpoints: Vec<(String, i64)>,
}
