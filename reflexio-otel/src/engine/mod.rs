//! The engine behind a `Recorder`: the lock-free shards, the shared state, and the snapshot it
//! publishes.
//!
//! - `shard`: the lock-free record path, one shard per recording thread;
//! - `state`: windows, totals, histograms, tables, locks and CoVe configuration behind one mutex;
//! - `snapshot`: every exported value at one instant, and the [`snapshot::SnapshotSource`] the
//!   OpenTelemetry callbacks read through;
//! - `inner`: the [`inner::Engine`] that routes events, runs upkeep and owns the store writer,
//!   which sees it only as its `store::writer::Source`.

pub(crate) mod inner;
pub(crate) mod shard;
pub(crate) mod snapshot;
pub(crate) mod state;
