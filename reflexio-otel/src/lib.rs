//! Typed Reflexio events recorded as OpenTelemetry instruments, with rolling 24-hour and
//! 7-day windows.
//!
//! A [`Recorder`] takes typed events — transcriptions, [`Fact`]s, digests, [`RetentionRun`]s,
//! [`CoveConfig`]urations and process locks — and keeps cumulative totals, histograms and
//! minute-bucketed rolling windows of them. [`Recorder::register`] puts the metric contract
//! ([`contract`], `docs/metrics.md`) on an OpenTelemetry `Meter` of your provider; the
//! windowed values are observable gauges read from an in-memory [`Snapshot`].
//!
//! ```
//! use opentelemetry::metrics::MeterProvider;
//! use reflexio_otel::{Fact, PrometheusPipeline, Recorder, RetentionRun};
//!
//! let pipeline = PrometheusPipeline::new()?;
//! let recorder = Recorder::new();
//! recorder.register(&pipeline.provider.meter("reflexio"));
//!
//! for i in 0..10 {
//!     recorder.record_fact(&Fact::new(0.98)?.hallucinated(i == 0).with_cove(0.91, 1)?);
//! }
//! recorder.record(RetentionRun::new("facts", 120)?)?;
//!
//! let text = pipeline.encode()?;
//! assert!(text.contains("reflexio_hallucination_rate_24h 0.1\n"));
//! assert!(text.contains("reflexio_facts_total 10\n"));
//! assert!(text.contains("reflexio_retention_operations_total{table=\"facts\"} 1\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! - **Record**: facts, transcriptions and digests are a dozen plain loads and stores into the
//!   calling thread's own shard — no lock, no atomic read-modify-write, no allocation, no I/O.
//!   Rare events (retention runs, locks, CoVe configuration, facts backfilled far enough back
//!   to collide with a recent minute) take a short mutex that is never held across I/O.
//! - **Upkeep**: a background thread (every second by default) takes what the shards gathered
//!   into the shared state, moves the windows, and feeds the SDK histograms.
//! - **Windows**: fixed, aligned one-minute buckets holding only integers, so they add exactly
//!   and merge in any order. The 24h window is the current minute and the 1439 before it; the
//!   7d window is the current minute and the 10079 before it.
//! - **History** ([`History`], [`Recorder::record_durable_with_history`]): counts of events
//!   older than every window — a followed database's past, say — go to the totals, histograms
//!   and per-table retention totals in one durable commit, without one event per row.
//! - **Verdicts**: each quality verdict of a [`Fact`] (hallucinated, atomic, citation coverage,
//!   CoVe result) is optional and counts on its own, with its own denominator.
//! - **Export** ([`Recorder::register`], [`with_prometheus`], [`encode_text`]): each collection
//!   refreshes one [`Snapshot`] that every callback reads. Every 24h ratio or mean is exported
//!   with its numerator and denominator (`reflexio_hallucinated_facts_24h` /
//!   `reflexio_assessed_facts_24h`, ...), which add up across instances; an empty window
//!   reports [`EMPTY_WINDOW_VALUE`], and its denominator, 0, says it is empty.
//! - **Time** ([`Clock`]): window code takes the time as a parameter; the clock only supplies
//!   "now". [`ManualClock`] lets tests drive it.

//!
//! # Layers
//!
//! Each layer imports only from the layers below it (`scripts/check-layers` checks it):
//!
//! 1. `event`, `clock`, `contract`: the typed events and their validated values, the time
//!    source, the metric contract — the vocabulary everything else speaks.
//! 2. `error`: every error past the event boundary.
//! 3. `model`: value types — the rule every count follows (it stops at the largest stored
//!    integer), window buckets and windows, histogram layouts and counts, process locks and their
//!    eviction, totals and table labels, counts of past events, deltas for the store and the
//!    changes it returns.
//! 4. `store`: the SQLite store — options and health, schema and migrations, row writes and
//!    read-back, the files opened (to notice one deleted or replaced) — and its writer thread,
//!    which reads from a `store::writer::Source` and checks the file's integrity periodically.
//! 5. `engine`: the lock-free shards, the shared state, the snapshot, and the engine that
//!    implements the writer's `Source` and the exporters' `SnapshotSource`.
//! 6. `export`: the OpenTelemetry instruments (reading a `SnapshotSource`) and the Prometheus
//!    wiring.
//! 7. `recorder`: the public [`Recorder`] over the engine.

#![warn(missing_docs)]

mod clock;
pub mod contract;
mod engine;
mod error;
mod event;
mod export;
mod model;
mod recorder;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::snapshot::{LockCounts, Snapshot};
pub use error::{DurableError, ExportError, RecordError, StoreError, StoreErrorKind};
pub use event::{
    CoveConfig, CoveResult, Event, Fact, Fraction, IdempotencyKey, LockEvent, MAX_NAME_LEN,
    MAX_ROUNDS, Name, Problem, RetentionRun, Rounds, ValueError,
};
pub use export::prometheus::{
    PrometheusPipeline, TEXT_CONTENT_TYPE, encode_text, histogram_view, with_prometheus,
};
pub use model::bucket::{EMPTY_WINDOW_VALUE, FactBucket, RetentionBucket};
pub use model::changes::{Checkpoint, Keyed};
pub use model::histogram::{Counts, HistogramCounts};
pub use model::history::History;
pub use model::totals::{TableLabel, Totals};
pub use model::window::{DAY_MINUTES, WEEK_MINUTES};
pub use recorder::{LockGuard, Recorder, RecorderBuilder};
pub use store::health::StoreHealth;
pub use store::options::{StoreOptions, Synchronous};
