//! The recorder: the public facade over the engine. It builds the engine from its settings,
//! hands events to it, and connects it to an OpenTelemetry meter and to the store.

use crate::clock::{Clock, SystemClock};
use crate::engine::inner::{Engine, Settings};
use crate::engine::snapshot::{Snapshot, SnapshotSource};
use crate::engine::state::Limits;
use crate::error::{DurableError, RecordError, StoreError};
use crate::event::{
    CoveConfig, Event, Fact, IdempotencyKey, LockEvent, Name, RetentionRun, ValueError,
};
use crate::export::instruments;
use crate::model::changes::{Checkpoint, Keyed};
use crate::model::history::History;
use crate::model::locks::this_host;
use crate::store::health::StoreHealth;
use crate::store::options::StoreOptions;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Builds a [`Recorder`].
#[derive(Debug)]
#[must_use]
pub struct RecorderBuilder {
    clock: Arc<dyn Clock>,
    upkeep_interval: Option<Duration>,
    max_future_skew: Duration,
    limits: Limits,
    /// Set explicitly; else it follows the stale threshold.
    evict_locks_after: Option<Duration>,
    store: Option<StoreOptions>,
}

impl Default for RecorderBuilder {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            upkeep_interval: Some(Duration::from_secs(1)),
            max_future_skew: Self::DEFAULT_MAX_FUTURE_SKEW,
            limits: Limits {
                max_tables: 32,
                max_locks: 1024,
                stale_lock_after: Self::DEFAULT_STALE_LOCK_AFTER,
                // Set by `build`, from `evict_locks_after` or the stale threshold.
                evict_locks_after: Duration::ZERO,
                tables: Vec::new(),
            },
            evict_locks_after: None,
            store: None,
        }
    }
}

impl RecorderBuilder {
    /// The default of [`RecorderBuilder::max_future_skew`]: 5 minutes.
    pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

    /// The default of [`RecorderBuilder::stale_lock_after`]: 1 hour.
    pub const DEFAULT_STALE_LOCK_AFTER: Duration = Duration::from_secs(3600);

    /// The default eviction age is this many times the stale threshold: a lock left by a
    /// crashed holder counts as stale (and alerts) for a day by default before it is evicted.
    pub const EVICT_LOCKS_AFTER_STALE_TIMES: u32 = 24;

    /// How long a lock may be held before it counts as stale. Default: 1 hour.
    pub fn stale_lock_after(mut self, after: Duration) -> Self {
        self.limits.stale_lock_after = after;
        self
    }

    /// How long a lock may be held by a holder not known to be alive (no pid and host, another
    /// host, or a process of this host that is gone) before it is evicted: released, and
    /// counted in `reflexio_evicted_locks_total`. A lock whose holder is a live process of this
    /// host is never evicted by age (see [`RecorderBuilder::max_locks`]). Default: 24 times [`RecorderBuilder::stale_lock_after`] (1 day).
    pub fn evict_locks_after(mut self, after: Duration) -> Self {
        self.evict_locks_after = Some(after);
        self
    }

    /// How far ahead of the clock an event time may be (clock skew between hosts); such
    /// events are recorded at the current time. Later times are refused. Default: 5 minutes.
    pub fn max_future_skew(mut self, skew: Duration) -> Self {
        self.max_future_skew = skew;
        self
    }

    /// Retention tables that get their own `table` label; runs over further tables are counted
    /// in the overflow series. Default: 32.
    pub fn max_tables(mut self, max: usize) -> Self {
        self.limits.max_tables = max;
        self
    }

    /// Retention tables whose series exist from the start, at zero, before any run over them:
    /// so that `increase()` sees even their first failed run. Default: none.
    pub fn tables<'a>(
        mut self,
        tables: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ValueError> {
        for table in tables {
            let name = Name::new(table).map_err(|e| e.in_field("table"))?;
            if !self.limits.tables.contains(&name) {
                self.limits.tables.push(name);
            }
        }
        Ok(self)
    }

    /// Locks tracked at once. Acquiring one more evicts the lock held longest by a holder not
    /// known to be alive, or, if every holder is a live process of this host, the lock held
    /// longest; only a batch that alone takes more locks than this is refused
    /// ([`RecordError::TooManyLocks`]). Default: 1024.
    pub fn max_locks(mut self, max: usize) -> Self {
        self.limits.max_locks = max;
        self
    }

    /// How often the background upkeep thread drains the shards and moves the windows.
    /// Default: 1 second.
    pub fn upkeep_interval(mut self, interval: Duration) -> Self {
        self.upkeep_interval = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// No upkeep thread: the windows move and the shards drain only when a snapshot is taken
    /// or [`Recorder::run_upkeep`] is called. For tests that drive time themselves.
    pub fn without_upkeep_thread(mut self) -> Self {
        self.upkeep_interval = None;
        self
    }

    /// Reads time from `clock` instead of the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Keeps totals, histograms, windows, locks and the CoVe configuration in a SQLite store,
    /// so that they survive restarts and several processes can share them.
    pub fn store(mut self, options: StoreOptions) -> Self {
        self.store = Some(options);
        self
    }

    /// Builds the recorder and starts its upkeep thread.
    ///
    /// With a store, this opens and loads it first (waiting at most the busy timeout), so the
    /// recorder starts from the stored values. It never fails: if the store cannot be opened,
    /// the recorder records in memory, [`Recorder::store_health`] says why, and the writer
    /// keeps trying.
    pub fn build(self) -> Recorder {
        let mut limits = self.limits;
        limits.evict_locks_after = self.evict_locks_after.unwrap_or_else(|| {
            limits
                .stale_lock_after
                .saturating_mul(Self::EVICT_LOCKS_AFTER_STALE_TIMES)
        });
        let engine = Engine::start(Settings {
            clock: self.clock,
            upkeep_interval: self.upkeep_interval,
            max_future_skew: self.max_future_skew,
            limits,
            store: self.store,
        });
        Recorder {
            _lifeline: Arc::new(Lifeline {
                engine: Arc::clone(&engine),
            }),
            engine,
        }
    }
}

/// Records Reflexio events and keeps their rolling windows.
///
/// Cloning is cheap; clones record into the same state. Recording never blocks on I/O and
/// never panics: facts, transcriptions and digests go to the calling thread's own shard
/// without a lock; retention runs, lock events, CoVe configuration, and the rare fact whose
/// minute slot in the shard is still in use by another minute take a short mutex that is
/// never held across I/O.
#[derive(Debug, Clone)]
pub struct Recorder {
    engine: Arc<Engine>,
    _lifeline: Arc<Lifeline>,
}

/// Shared by a recorder's handles; when the last one goes, the store gets a final write.
#[derive(Debug)]
struct Lifeline {
    engine: Arc<Engine>,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if let Err(e) = self.engine.stop_persisting() {
            tracing::error!(error = %e, "the final write to the metrics store failed");
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder with default settings, on the system clock.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a recorder.
    pub fn builder() -> RecorderBuilder {
        RecorderBuilder::default()
    }

    /// The time now, by the recorder's clock.
    pub fn now(&self) -> SystemTime {
        self.engine.now()
    }

    /// Records `event` now.
    pub fn record(&self, event: impl Into<Event>) -> Result<(), RecordError> {
        self.engine.record(&event.into(), None)
    }

    /// Records `event` as having happened at `time` (backfill). A time slightly ahead of the
    /// clock (within the allowed skew) is recorded as now.
    pub fn record_at(&self, event: impl Into<Event>, time: SystemTime) -> Result<(), RecordError> {
        self.engine.record(&event.into(), Some(time))
    }

    /// Records a fact now: the hot path.
    pub fn record_fact(&self, fact: &Fact) {
        self.engine.record_fact(fact);
    }

    /// Records a transcription now.
    pub fn record_transcription(&self) {
        self.engine.record_transcription();
    }

    /// Records a digest now.
    pub fn record_digest(&self) {
        self.engine.record_digest();
    }

    /// Records a retention run now.
    pub fn record_retention(&self, run: &RetentionRun) {
        self.engine.record_retention(run);
    }

    /// Records the CoVe configuration now.
    pub fn record_cove_config(&self, config: CoveConfig) {
        self.engine.record_cove_config(config);
    }

    /// Records `lock` as taken now, filling in this process's id and host where the event has
    /// none, and returns a guard that records the release when dropped.
    ///
    /// ```
    /// use reflexio_otel::{LockEvent, Recorder};
    /// let recorder = Recorder::new();
    /// {
    ///     let _guard = recorder.acquire_lock(LockEvent::new("daily_digest", "worker-1")?)?;
    ///     assert_eq!(recorder.snapshot().locks.active, 1);
    /// }
    /// assert_eq!(recorder.snapshot().locks.active, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_lock(&self, mut event: LockEvent) -> Result<LockGuard, RecordError> {
        event.pid = event.pid.or(Some(std::process::id()));
        event.host = event.host.or_else(|| this_host().cloned());
        self.engine
            .record(&Event::LockAcquired(event.clone()), None)?;
        Ok(LockGuard {
            recorder: self.clone(),
            event,
        })
    }

    /// Registers the contract's instruments on `meter` (once per meter provider). Counters and
    /// gauges read the recorder's snapshot; the histograms are fed from it. For Prometheus
    /// names as in the contract, build the provider with [`crate::with_prometheus`] (or add
    /// [`crate::histogram_view`] to your own).
    pub fn register(&self, meter: &opentelemetry::metrics::Meter) {
        instruments::register(Arc::clone(&self.engine) as Arc<dyn SnapshotSource>, meter);
    }

    /// Drains the shards and publishes a snapshot taken now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.engine.snapshot()
    }

    /// Runs one round of upkeep now (what the upkeep thread does every interval).
    pub fn run_upkeep(&self) {
        self.snapshot();
    }

    /// Records every event of `batch` or none, and returns only once they are committed to the
    /// store: an acknowledged batch survives a crash of the process. Batches submitted
    /// concurrently share one commit. The events become visible in snapshots once committed.
    ///
    /// Each event carries its own time, or `None` for now. A batch with an invalid event
    /// ([`DurableError::Invalid`]), or one that cannot be committed ([`DurableError::Store`]),
    /// records nothing, so it can safely be sent again.
    pub fn record_durable(
        &self,
        batch: &[(Event, Option<SystemTime>)],
    ) -> Result<(), DurableError> {
        self.record_durable_checked(batch, Vec::new())
    }

    /// Like [`Recorder::record_durable`], for a batch sent with an idempotency key: a client
    /// that sends a batch again after a lost answer gives the same key, and the batch is
    /// recorded once.
    ///
    /// The key is kept in the same transaction as the batch, so a key whose batch was committed
    /// is known after a crash and restart, and to every process sharing the store. A key claimed
    /// within the window ([`StoreOptions::idempotency_window`], 24 hours by default) records
    /// nothing: [`Keyed::Replayed`] with what the first batch recorded, or [`Keyed::Conflict`]
    /// if its fingerprint differs (the key was reused for another batch). Two batches with the
    /// same key committed at the same time record once. A batch that is refused (invalid, or
    /// the store failed) keeps no key, so it can be sent again with it.
    ///
    /// ```
    /// use reflexio_otel::{Event, IdempotencyKey, Keyed, Recorder, StoreOptions};
    /// let dir = tempfile::tempdir()?;
    /// let recorder = Recorder::builder()
    ///     .store(StoreOptions::new(dir.path().join("metrics.db")))
    ///     .build();
    /// let batch = [(Event::Digest, None)];
    /// let key = IdempotencyKey::new("batch-1")?.with_fingerprint(*b"hash of the body");
    /// assert_eq!(recorder.record_durable_keyed(&batch, &key)?, Keyed::Recorded);
    /// assert!(matches!(
    ///     recorder.record_durable_keyed(&batch, &key)?,
    ///     Keyed::Replayed { accepted: 1, .. }
    /// ));
    /// assert_eq!(recorder.snapshot().totals.digests, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record_durable_keyed(
        &self,
        batch: &[(Event, Option<SystemTime>)],
        key: &IdempotencyKey,
    ) -> Result<Keyed, DurableError> {
        self.engine.record_durable_keyed(batch, key.clone())
    }

    /// Like [`Recorder::record_durable`], and moves `checkpoints` in the same transaction: a
    /// reader of another source (an application's table, say) records the rows it read and
    /// how far it read together, so that each row is counted exactly once even across crashes
    /// and concurrent readers. If a checkpoint no longer holds its expected value, nothing is
    /// recorded ([`DurableError::CheckpointMoved`]): read [`Recorder::checkpoint`] again and
    /// continue from there.
    pub fn record_durable_checked(
        &self,
        batch: &[(Event, Option<SystemTime>)],
        checkpoints: Vec<Checkpoint>,
    ) -> Result<(), DurableError> {
        self.engine
            .record_durable(batch, &History::new(), checkpoints)
    }

    /// Like [`Recorder::record_durable_checked`], and adds `history` — counts of events older
    /// than every window — to the cumulative totals, histograms and per-table retention totals
    /// in the same transaction, and to no window. A reader adopting a source's past counts its
    /// old rows this way, without recording them one by one, exactly once with its
    /// checkpoints. If anything is refused, nothing is recorded.
    ///
    /// ```
    /// use reflexio_otel::{Checkpoint, Event, Fact, History, Recorder, StoreOptions};
    /// # let dir = tempfile::tempdir()?;
    /// let recorder = Recorder::builder()
    ///     .store(StoreOptions::new(dir.path().join("metrics.db")))
    ///     .build();
    /// let mut past = History::new();
    /// past.add_facts(&Fact::new(0.9)?, 1_000);
    /// let recent = [(Event::Fact(Fact::new(0.95)?), None)];
    /// let cursor = Checkpoint { key: "app:facts".into(), expected: None, value: 1_001 };
    /// recorder.record_durable_with_history(&recent, &past, vec![cursor])?;
    /// let snapshot = recorder.snapshot();
    /// assert_eq!(snapshot.totals.facts, 1_001);
    /// assert_eq!(snapshot.facts_24h.facts, 1);
    /// assert_eq!(recorder.checkpoint("app:facts"), Some(1_001));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record_durable_with_history(
        &self,
        batch: &[(Event, Option<SystemTime>)],
        history: &History,
        checkpoints: Vec<Checkpoint>,
    ) -> Result<(), DurableError> {
        self.engine.record_durable(batch, history, checkpoints)
    }

    /// The process locks held now, each with the time it was taken (with a store: as last
    /// read from it, plus this process's changes).
    pub fn held_locks(&self) -> Vec<(LockEvent, SystemTime)> {
        self.engine.held_locks()
    }

    /// The value of checkpoint `key` as last read from the store (`None` if it does not exist
    /// or the recorder has no store). It is read back after every commit; call
    /// [`Recorder::flush`] first to see one moved by another process just now.
    pub fn checkpoint(&self, key: &str) -> Option<i64> {
        self.engine.checkpoint(key)
    }

    /// Writes everything recorded so far to the store and waits for the commit.
    pub fn flush(&self) -> Result<(), DurableError> {
        self.engine.flush()
    }

    /// Writes everything recorded so far and stops writing to the store (dropping the last
    /// handle of the recorder does the same). Events recorded afterwards stay in memory.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.engine.stop_persisting()
    }

    /// The store's health, if the recorder has one.
    pub fn store_health(&self) -> Option<StoreHealth> {
        self.engine.store_health()
    }
}

/// A held process lock; dropping it records the release.
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock at once"]
pub struct LockGuard {
    recorder: Recorder,
    event: LockEvent,
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &Name {
        &self.event.name
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let released = self
            .recorder
            .engine
            .record(&Event::LockReleased(self.event.clone()), None);
        if let Err(e) = released {
            // Only possible if a LockReleased event for the same holder was recorded by hand.
            tracing::debug!(error = %e, "lock guard released a lock that was no longer held");
        }
    }
}
