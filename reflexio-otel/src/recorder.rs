//! The recorder: validates event times, routes events to the lock-free shards or the shared
//! state, keeps the latest snapshot, runs background upkeep, and connects the store.

use crate::clock::{Clock, SystemClock, minute_of};
use crate::delta::Delta;
use crate::event::{CoveConfig, Event, Fact, LockEvent, Name, RetentionRun};
use crate::locks::{HeldLock, LockConflict};
use crate::persist::{DurableError, Persister, StoreHealth};
use crate::shard::Shards;
use crate::snapshot::Snapshot;
use crate::state::{Limits, State};
use crate::store::{Changes, Checkpoint, StoreError, StoreOptions};
use crate::window::{DAY_MINUTES, FactBucket, RetentionBucket, WEEK_MINUTES};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why an event was not recorded. A refused event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The event's time is further ahead of the clock than the allowed skew.
    #[error(
        "event time is {} ahead of the clock; at most {} is allowed",
        humantime::format_duration(*ahead),
        humantime::format_duration(*max)
    )]
    FutureTime {
        /// How far ahead it is.
        ahead: Duration,
        /// The allowed skew.
        max: Duration,
    },
    /// The event's time is before 1970-01-01.
    #[error("event time is before the Unix epoch")]
    BeforeEpoch,
    /// The holder already holds this lock.
    #[error("lock `{name}` is already held by `{holder}`")]
    LockAlreadyHeld {
        /// The lock.
        name: Name,
        /// The holder.
        holder: Name,
    },
    /// The holder does not hold this lock.
    #[error("lock `{name}` is not held by `{holder}`")]
    LockNotHeld {
        /// The lock.
        name: Name,
        /// The holder.
        holder: Name,
    },
    /// As many locks as the limit allows are held already.
    #[error("{limit} locks are held already, the most the recorder tracks")]
    TooManyLocks {
        /// The limit.
        limit: usize,
    },
}

/// Builds a [`Recorder`].
#[derive(Debug)]
#[must_use]
pub struct RecorderBuilder {
    clock: Arc<dyn Clock>,
    upkeep_interval: Option<Duration>,
    max_future_skew: Duration,
    limits: Limits,
    store: Option<StoreOptions>,
}

impl Default for RecorderBuilder {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            upkeep_interval: Some(Duration::from_secs(1)),
            max_future_skew: Duration::from_secs(5 * 60),
            limits: Limits {
                max_tables: 32,
                max_locks: 1024,
                stale_lock_after: Duration::from_secs(3600),
                tables: Vec::new(),
            },
            store: None,
        }
    }
}

impl RecorderBuilder {
    /// How long a lock may be held before it counts as stale. Default: 1 hour.
    pub fn stale_lock_after(mut self, after: Duration) -> Self {
        self.limits.stale_lock_after = after;
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
    ) -> Result<Self, crate::ValueError> {
        for table in tables {
            let name = Name::new(table).map_err(|e| e.in_field("table"))?;
            if !self.limits.tables.contains(&name) {
                self.limits.tables.push(name);
            }
        }
        Ok(self)
    }

    /// Locks tracked at once; acquiring more is refused. Default: 1024.
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
        let persistent = self.store.is_some();
        let inner = Arc::new(Inner {
            clock: self.clock,
            max_future_skew: self.max_future_skew,
            shards: Shards::default(),
            latest_now: AtomicU64::new(0),
            state: Mutex::new(State::new(self.limits, persistent)),
            latest: ArcSwap::from_pointee(Snapshot::empty()),
            hooks: Mutex::new(Vec::new()),
            persister: self.store.map(Persister::new),
        });
        if let Some(persister) = &inner.persister {
            persister.start(&inner);
        }
        let now = inner.clock.now();
        inner.refresh(now);
        if let Some(interval) = self.upkeep_interval {
            spawn_upkeep(Arc::downgrade(&inner), interval);
        }
        Recorder {
            _lifeline: Arc::new(Lifeline {
                inner: Arc::clone(&inner),
            }),
            inner,
        }
    }
}

fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Called after each refresh with the new snapshot (the OpenTelemetry histogram replay).
pub(crate) type RefreshHook = Box<dyn Fn(&Snapshot) + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) clock: Arc<dyn Clock>,
    max_future_skew: Duration,
    shards: Shards,
    /// The latest time the clock read at a refresh, in nanoseconds since the epoch: events
    /// stamped "now" never count before it, even when the clock goes back.
    latest_now: AtomicU64,
    state: Mutex<State>,
    latest: ArcSwap<Snapshot>,
    hooks: Mutex<Vec<RefreshHook>>,
    persister: Option<Persister>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("clock", &self.clock)
            .field("max_future_skew", &self.max_future_skew)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent integers behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drains the shards, moves the windows to `now`, publishes a new snapshot and runs the
    /// refresh hooks.
    pub(crate) fn refresh(&self, now: SystemTime) -> Arc<Snapshot> {
        let snapshot = {
            let mut state = self.state();
            self.absorb(&mut state, now);
            let mut snapshot = state.snapshot(now);
            snapshot.store = self.persister.as_ref().map(Persister::health);
            let snapshot = Arc::new(snapshot);
            // Published under the lock, so snapshots are published in order.
            self.latest.store(Arc::clone(&snapshot));
            snapshot
        };
        for hook in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            hook(&snapshot);
        }
        snapshot
    }

    /// Moves the windows to `now` and takes in what the shards gathered.
    fn absorb(&self, state: &mut State, now: SystemTime) {
        state.observe_clock(now);
        let now = self.now_at_least_latest(now);
        self.latest_now
            .fetch_max(nanos_since_epoch(now), Ordering::Relaxed);
        state.advance(minute_of(now).unwrap_or(0));
        let drained = self.shards.drain(|m, b| state.add_facts(m, b));
        state.add_drained(&drained);
    }

    /// `now`, or the latest time seen if the clock went back behind it.
    fn now_at_least_latest(&self, now: SystemTime) -> SystemTime {
        let latest = UNIX_EPOCH + Duration::from_nanos(self.latest_now.load(Ordering::Relaxed));
        now.max(latest)
    }

    /// For a write: everything recorded so far, and the minutes at or before which the store
    /// can prune facts and retention runs.
    ///
    /// With `everything`, the whole state instead: for a fresh store (one that replaced a
    /// damaged file, say) to continue where the state is, so exported counters never go down.
    pub(crate) fn take_unflushed(&self, now: SystemTime, everything: bool) -> (Delta, (u64, u64)) {
        let mut state = self.state();
        self.absorb(&mut state, now);
        // By this process's clock: another process's clock must not prune everyone's minutes.
        let minute = minute_of(now).unwrap_or(0);
        let prune = (
            minute.saturating_sub(DAY_MINUTES),
            minute.saturating_sub(WEEK_MINUTES),
        );
        let unflushed = state.take_unflushed();
        let delta = if everything {
            state.full_delta()
        } else {
            unflushed
        };
        (delta, prune)
    }

    pub(crate) fn restore_unflushed(&self, taken: Delta) {
        self.state().restore_unflushed(taken);
    }

    /// Applies what the store returned, read at `now`.
    pub(crate) fn apply_changes(&self, changes: Changes, now: SystemTime) {
        let skew_minutes = self.max_future_skew.as_secs().div_ceil(60);
        let newest = minute_of(now).unwrap_or(0).saturating_add(skew_minutes);
        self.state().apply_changes(changes, newest);
    }

    /// Stops the writer after a final write, and stops keeping changes for it.
    fn stop_persisting(&self) -> Result<(), StoreError> {
        let Some(persister) = &self.persister else {
            return Ok(());
        };
        let result = persister.stop();
        self.state().stop_tracking();
        result
    }

    pub(crate) fn has_store(&self) -> bool {
        self.persister.is_some()
    }

    /// Validates a batch and turns it into one delta: every event, or an error naming the
    /// first invalid one.
    fn durable_delta(&self, events: &[(Event, Option<SystemTime>)]) -> Result<Delta, DurableError> {
        let invalid = |index, error| DurableError::Invalid { index, error };
        let times = events
            .iter()
            .enumerate()
            .map(|(i, (_, t))| self.resolve(*t).map_err(|e| invalid(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let state = self.state();
        state
            .check_locks(events.iter().enumerate().filter_map(|(i, (e, _))| match e {
                Event::LockAcquired(l) => Some((i, l, true)),
                Event::LockReleased(l) => Some((i, l, false)),
                _ => None,
            }))
            .map_err(|(i, c)| match &events[i].0 {
                Event::LockAcquired(l) | Event::LockReleased(l) => invalid(i, conflict(c, l)),
                _ => invalid(i, RecordError::BeforeEpoch),
            })?;
        let mut delta = Delta::default();
        for ((event, _), (at, minute)) in events.iter().zip(times) {
            match event {
                Event::Transcription => delta.totals.transcriptions += 1,
                Event::Digest => delta.totals.digests += 1,
                Event::Fact(fact) => {
                    delta.add_facts(minute, &FactBucket::of(fact));
                    delta.histograms.observe(fact);
                }
                Event::UnassessedFact { cove } => {
                    delta.add_facts(minute, &FactBucket::unassessed(*cove));
                    delta.histograms.observe_cove(*cove);
                }
                Event::Retention(run) => {
                    let label = state.table_label(&run.table);
                    delta.add_retention(minute, label, &RetentionBucket::of(run));
                }
                Event::CoveConfig(config) => delta.set_cove(*config, at),
                Event::LockAcquired(l) => {
                    delta.lock(&l.name, &l.holder, Some(HeldLock::new(l, at)));
                }
                Event::LockReleased(l) => delta.lock(&l.name, &l.holder, None),
            }
        }
        Ok(delta)
    }

    pub(crate) fn latest(&self) -> Arc<Snapshot> {
        self.latest.load_full()
    }

    pub(crate) fn add_hook(&self, hook: RefreshHook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// The minute an event stamped "now" counts in: the clock's, or the latest one seen if the
    /// clock has gone back.
    fn now_minute(&self, now: SystemTime) -> Option<u64> {
        minute_of(self.now_at_least_latest(now))
    }

    /// The time an event is recorded at and the minute it counts in: its own time (now, if it
    /// is ahead of the clock by no more than the allowed skew), or now.
    fn resolve(&self, time: Option<SystemTime>) -> Result<(SystemTime, u64), RecordError> {
        let now = self.clock.now();
        let past = match time {
            None => None,
            Some(t) => match t.duration_since(now) {
                Ok(ahead) if ahead > self.max_future_skew => {
                    return Err(RecordError::FutureTime {
                        ahead,
                        max: self.max_future_skew,
                    });
                }
                Ok(_) => None,
                Err(_) => Some(t),
            },
        };
        match past {
            Some(t) => Ok((t, minute_of(t).ok_or(RecordError::BeforeEpoch)?)),
            None => {
                let now = self.now_at_least_latest(now);
                Ok((now, minute_of(now).ok_or(RecordError::BeforeEpoch)?))
            }
        }
    }

    fn record(&self, event: &Event, time: Option<SystemTime>) -> Result<(), RecordError> {
        let (at, minute) = self.resolve(time)?;
        match event {
            Event::Transcription => self.shards.record_transcription(),
            Event::Digest => self.shards.record_digest(),
            Event::Fact(fact) => self.record_fact(minute, fact),
            Event::UnassessedFact { cove } => self.state().add_unassessed_fact(minute, *cove),
            Event::Retention(run) => self.state().add_retention(minute, run),
            Event::CoveConfig(config) => self.state().set_cove(*config, at),
            Event::LockAcquired(lock) => self
                .state()
                .acquire_lock(lock, at)
                .map_err(|c| conflict(c, lock))?,
            Event::LockReleased(lock) => self
                .state()
                .release_lock(lock)
                .map_err(|c| conflict(c, lock))?,
        }
        Ok(())
    }

    fn record_fact(&self, minute: u64, fact: &Fact) {
        if !self.shards.record_fact(minute, fact) {
            self.state().add_fact(minute, fact);
        }
    }
}

fn conflict(conflict: LockConflict, lock: &LockEvent) -> RecordError {
    match conflict {
        LockConflict::AlreadyHeld => RecordError::LockAlreadyHeld {
            name: lock.name.clone(),
            holder: lock.holder.clone(),
        },
        LockConflict::NotHeld => RecordError::LockNotHeld {
            name: lock.name.clone(),
            holder: lock.holder.clone(),
        },
        LockConflict::Full { limit } => RecordError::TooManyLocks { limit },
    }
}

fn spawn_upkeep(inner: Weak<Inner>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("reflexio-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(inner) = inner.upgrade() else { break };
                let now = inner.clock.now();
                inner.refresh(now);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(
            error = %e,
            "cannot start the upkeep thread; windows will move only when snapshots are taken"
        );
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
    pub(crate) inner: Arc<Inner>,
    _lifeline: Arc<Lifeline>,
}

/// Shared by a recorder's handles; when the last one goes, the store gets a final write.
#[derive(Debug)]
struct Lifeline {
    inner: Arc<Inner>,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if let Err(e) = self.inner.stop_persisting() {
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

    /// Records `event` now.
    pub fn record(&self, event: impl Into<Event>) -> Result<(), RecordError> {
        self.inner.record(&event.into(), None)
    }

    /// Records `event` as having happened at `time` (backfill). A time slightly ahead of the
    /// clock (within the allowed skew) is recorded as now.
    pub fn record_at(&self, event: impl Into<Event>, time: SystemTime) -> Result<(), RecordError> {
        self.inner.record(&event.into(), Some(time))
    }

    /// Records a fact now: the hot path.
    pub fn record_fact(&self, fact: &Fact) {
        // The system clock never reads before the epoch; a manual one may, and is ignored.
        if let Some(minute) = self.inner.now_minute(self.inner.clock.now()) {
            self.inner.record_fact(minute, fact);
        }
    }

    /// Records a transcription now.
    pub fn record_transcription(&self) {
        self.inner.shards.record_transcription();
    }

    /// Records a digest now.
    pub fn record_digest(&self) {
        self.inner.shards.record_digest();
    }

    /// Records a retention run now.
    pub fn record_retention(&self, run: &RetentionRun) {
        if let Some(minute) = self.inner.now_minute(self.inner.clock.now()) {
            self.inner.state().add_retention(minute, run);
        }
    }

    /// Records the CoVe configuration now.
    pub fn record_cove_config(&self, config: CoveConfig) {
        let now = self.inner.now_at_least_latest(self.inner.clock.now());
        self.inner.state().set_cove(config, now);
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
        event.host = event.host.or_else(|| crate::locks::this_host().cloned());
        self.inner
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
        crate::instruments::register(&self.inner, meter);
    }

    /// Drains the shards and publishes a snapshot taken now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let now = self.inner.clock.now();
        self.inner.refresh(now)
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
        let persister = self.inner.persister.as_ref().ok_or(DurableError::NoStore)?;
        let delta = self.inner.durable_delta(batch)?;
        persister.commit(delta, checkpoints)
    }

    /// The process locks held now, each with the time it was taken (with a store: as last
    /// read from it, plus this process's changes).
    pub fn held_locks(&self) -> Vec<(LockEvent, SystemTime)> {
        self.inner.state().held_locks()
    }

    /// The value of checkpoint `key` as last read from the store (`None` if it does not exist
    /// or the recorder has no store). It is read back after every commit; call
    /// [`Recorder::flush`] first to see one moved by another process just now.
    pub fn checkpoint(&self, key: &str) -> Option<i64> {
        self.inner.state().checkpoint(key)
    }

    /// Writes everything recorded so far to the store and waits for the commit.
    pub fn flush(&self) -> Result<(), DurableError> {
        let persister = self.inner.persister.as_ref().ok_or(DurableError::NoStore)?;
        persister.commit(Delta::default(), Vec::new())
    }

    /// Writes everything recorded so far and stops writing to the store (dropping the last
    /// handle of the recorder does the same). Events recorded afterwards stay in memory.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.stop_persisting()
    }

    /// The store's health, if the recorder has one.
    pub fn store_health(&self) -> Option<StoreHealth> {
        self.inner.persister.as_ref().map(Persister::health)
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
            .inner
            .record(&Event::LockReleased(self.event.clone()), None);
        if let Err(e) = released {
            // Only possible if a LockReleased event for the same holder was recorded by hand.
            tracing::debug!(error = %e, "lock guard released a lock that was no longer held");
        }
    }
}
