//! The engine: validates event times, routes events to the lock-free shards or the shared
//! state, keeps the latest snapshot, runs background upkeep, and owns the store writer.
//!
//! The writer sees the engine only as its `Source` (take what is new, put it back on failure,
//! apply what the store returned); the OpenTelemetry callbacks see it only as a
//! [`SnapshotSource`]. Neither knows the type.

use crate::clock::{Clock, minute_of, nanos_since_epoch};
use crate::engine::shard::Shards;
use crate::engine::snapshot::{RefreshHook, Snapshot, SnapshotSource};
use crate::engine::state::{Limits, State};
use crate::error::{DurableError, RecordError, StoreError};
use crate::event::{CoveConfig, Event, Fact, IdempotencyKey, LockEvent, RetentionRun};
use crate::model::bucket::{Bucket, FactBucket, RetentionBucket};
use crate::model::changes::{Changes, Checkpoint, Keyed};
use crate::model::delta::Delta;
use crate::model::history::History;
use crate::model::locks::{HeldLock, LockConflict};
use crate::model::totals::TableLabel;
use crate::model::window::{DAY_MINUTES, WEEK_MINUTES};
use crate::store::health::StoreHealth;
use crate::store::options::StoreOptions;
use crate::store::writer::{Prune, Source, Writer};
use arc_swap::ArcSwap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How an engine is set up.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) clock: Arc<dyn Clock>,
    /// How often the upkeep thread runs; `None`: no upkeep thread.
    pub(crate) upkeep_interval: Option<Duration>,
    pub(crate) max_future_skew: Duration,
    pub(crate) limits: Limits,
    pub(crate) store: Option<StoreOptions>,
}

/// The engine of one recorder: shared by its handles, the upkeep thread, the store writer (as
/// its `Source`) and the OpenTelemetry callbacks (as their `SnapshotSource`).
pub(crate) struct Engine {
    clock: Arc<dyn Clock>,
    max_future_skew: Duration,
    shards: Shards,
    /// The latest time the clock read at a refresh, in nanoseconds since the epoch: events
    /// stamped "now" never count before it, even when the clock goes back.
    latest_now: AtomicU64,
    state: Mutex<State>,
    latest: ArcSwap<Snapshot>,
    hooks: Mutex<Vec<RefreshHook>>,
    writer: Option<Writer>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("clock", &self.clock)
            .field("max_future_skew", &self.max_future_skew)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine and starts it: with a store, opens and loads it first (waiting at most
    /// the busy timeout) and starts the writer; then publishes a first snapshot and starts the
    /// upkeep thread.
    pub(crate) fn start(settings: Settings) -> Arc<Self> {
        let persistent = settings.store.is_some();
        let engine = Arc::new(Self {
            clock: settings.clock,
            max_future_skew: settings.max_future_skew,
            shards: Shards::default(),
            latest_now: AtomicU64::new(0),
            state: Mutex::new(State::new(settings.limits, persistent)),
            latest: ArcSwap::from_pointee(Snapshot::empty()),
            hooks: Mutex::new(Vec::new()),
            writer: settings.store.map(Writer::new),
        });
        if let Some(writer) = &engine.writer {
            writer.start(Arc::clone(&engine) as Arc<dyn Source>);
        }
        engine.refresh_at(engine.clock.now());
        if let Some(interval) = settings.upkeep_interval {
            spawn_upkeep(Arc::downgrade(&engine), interval);
        }
        engine
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent integers behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drains the shards, moves the windows to `now`, publishes a new snapshot and runs the
    /// refresh hooks.
    pub(crate) fn refresh_at(&self, now: SystemTime) -> Arc<Snapshot> {
        let snapshot = {
            let mut state = self.state();
            self.absorb(&mut state, now);
            let mut snapshot = state.snapshot(now);
            snapshot.store = self.store_health();
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

    /// Drains the shards and publishes a snapshot taken now.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.refresh_at(self.clock.now())
    }

    /// Moves the windows to `now`, evicts the locks held too long, and takes in what the shards
    /// gathered.
    fn absorb(&self, state: &mut State, now: SystemTime) {
        state.observe_clock(now);
        let now = self.now_at_least_latest(now);
        self.latest_now
            .fetch_max(nanos_since_epoch(now), Ordering::Relaxed);
        state.advance(minute_of(now).unwrap_or(0));
        state.evict_locks(now);
        let drained = self.shards.drain(|m, b| state.add_facts(m, b));
        state.add_drained(&drained);
    }

    /// `now`, or the latest time seen if the clock went back behind it.
    fn now_at_least_latest(&self, now: SystemTime) -> SystemTime {
        let latest = UNIX_EPOCH + Duration::from_nanos(self.latest_now.load(Ordering::Relaxed));
        now.max(latest)
    }

    /// The minute an event stamped "now" counts in: the clock's, or the latest one seen if the
    /// clock has gone back. `None` for a (manual) clock before the epoch.
    fn now_minute(&self) -> Option<u64> {
        minute_of(self.now_at_least_latest(self.clock.now()))
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

    /// Records `event` at `time` (`None`: now).
    pub(crate) fn record(
        &self,
        event: &Event,
        time: Option<SystemTime>,
    ) -> Result<(), RecordError> {
        let (at, minute) = self.resolve(time)?;
        match event {
            Event::Transcription => self.shards.record_transcription(),
            Event::Digest => self.shards.record_digest(),
            Event::Fact(_) | Event::UnassessedFact { .. } => {
                if let Some(fact) = event.fact() {
                    self.record_fact_in(minute, &fact);
                }
            }
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

    fn record_fact_in(&self, minute: u64, fact: &Fact) {
        if !self.shards.record_fact(minute, fact) {
            self.state().add_fact(minute, fact);
        }
    }

    /// Records a fact now: the hot path.
    pub(crate) fn record_fact(&self, fact: &Fact) {
        // The system clock never reads before the epoch; a manual one may, and is ignored.
        if let Some(minute) = self.now_minute() {
            self.record_fact_in(minute, fact);
        }
    }

    /// Records a transcription now.
    pub(crate) fn record_transcription(&self) {
        self.shards.record_transcription();
    }

    /// Records a digest now.
    pub(crate) fn record_digest(&self) {
        self.shards.record_digest();
    }

    /// Records a retention run now.
    pub(crate) fn record_retention(&self, run: &RetentionRun) {
        if let Some(minute) = self.now_minute() {
            self.state().add_retention(minute, run);
        }
    }

    /// Records the CoVe configuration now.
    pub(crate) fn record_cove_config(&self, config: CoveConfig) {
        let now = self.now_at_least_latest(self.clock.now());
        self.state().set_cove(config, now);
    }

    /// Validates a batch and turns it into one delta: every event and the counts of `history`,
    /// or an error naming the first invalid event.
    fn durable_delta(
        &self,
        events: &[(Event, Option<SystemTime>)],
        history: &History,
    ) -> Result<Delta, DurableError> {
        let invalid = |index, error| DurableError::Invalid { index, error };
        let times = events
            .iter()
            .enumerate()
            .map(|(i, (_, t))| self.resolve(*t).map_err(|e| invalid(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.state();
        let room = state
            .check_locks(events.iter().enumerate().filter_map(|(i, (e, _))| match e {
                Event::LockAcquired(l) => Some(((i, l), l, true)),
                Event::LockReleased(l) => Some(((i, l), l, false)),
                _ => None,
            }))
            .map_err(|((i, l), c)| invalid(i, conflict(c, l)))?;
        let mut delta = Delta::default();
        // New table names of this batch, kept like the state's: at most `KEPT_TABLES` in all.
        let mut new_tables = HashSet::new();
        for ((event, _), (at, minute)) in events.iter().zip(times) {
            match event {
                Event::Transcription => delta.totals.transcriptions += 1,
                Event::Digest => delta.totals.digests += 1,
                Event::Fact(_) | Event::UnassessedFact { .. } => {
                    if let Some(fact) = event.fact() {
                        delta.add_facts(minute, &FactBucket::of(&fact));
                        delta.histograms.observe(&fact);
                    }
                }
                Event::Retention(run) => {
                    let label = state.table_label(&run.table, &mut new_tables);
                    delta.add_retention(minute, label, &RetentionBucket::of(run));
                }
                Event::CoveConfig(config) => delta.set_cove(*config, at),
                Event::LockAcquired(l) => {
                    delta.lock(&l.name, &l.holder, Some(HeldLock::new(l, at)));
                }
                Event::LockReleased(l) => delta.lock(&l.name, &l.holder, None),
            }
        }
        // Past events: the totals, histograms and table totals, no window.
        delta.totals.add(&history.totals);
        delta.histograms.add(&history.histograms);
        for (label, runs) in &history.tables {
            let label = match label {
                TableLabel::Table(name) => state.table_label(name, &mut new_tables),
                TableLabel::Overflow => TableLabel::Overflow,
            };
            delta.tables.entry(label).or_default().add(runs);
        }
        // The batch is valid: evict what it needs evicted (their releases are written with it).
        state.make_room(&room);
        Ok(delta)
    }

    /// Records every event of `batch` and the counts of `history` or nothing, with
    /// `checkpoints` moved in the same transaction, and returns once they are committed.
    pub(crate) fn record_durable(
        &self,
        batch: &[(Event, Option<SystemTime>)],
        history: &History,
        checkpoints: Vec<Checkpoint>,
    ) -> Result<(), DurableError> {
        let writer = self.writer.as_ref().ok_or(DurableError::NoStore)?;
        let delta = self.durable_delta(batch, history)?;
        writer.commit(delta, checkpoints)
    }

    /// Records `batch` durably unless its `key` was claimed within the window.
    pub(crate) fn record_durable_keyed(
        &self,
        batch: &[(Event, Option<SystemTime>)],
        key: IdempotencyKey,
    ) -> Result<Keyed, DurableError> {
        let writer = self.writer.as_ref().ok_or(DurableError::NoStore)?;
        let delta = self.durable_delta(batch, &History::default())?;
        writer.commit_keyed(delta, key, batch.len() as u64)
    }

    /// Writes everything recorded so far to the store and waits for the commit.
    pub(crate) fn flush(&self) -> Result<(), DurableError> {
        let writer = self.writer.as_ref().ok_or(DurableError::NoStore)?;
        writer.commit(Delta::default(), Vec::new())
    }

    /// Stops the writer after a final write, and stops keeping changes for it.
    pub(crate) fn stop_persisting(&self) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let result = writer.stop();
        self.state().stop_tracking();
        result
    }

    /// The time now, by the engine's clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The store's health, if the engine has a store.
    pub(crate) fn store_health(&self) -> Option<StoreHealth> {
        self.writer.as_ref().map(Writer::health)
    }

    /// The process locks held now, each with the time it was taken.
    pub(crate) fn held_locks(&self) -> Vec<(LockEvent, SystemTime)> {
        self.state().held_locks()
    }

    /// The value of checkpoint `key` as last read from the store.
    pub(crate) fn checkpoint(&self, key: &str) -> Option<i64> {
        self.state().checkpoint(key)
    }
}

impl SnapshotSource for Engine {
    fn refresh(&self) -> Arc<Snapshot> {
        self.snapshot()
    }

    fn latest(&self) -> Arc<Snapshot> {
        self.latest.load_full()
    }

    fn on_refresh(&self, hook: RefreshHook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }
}

impl Source for Engine {
    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Everything recorded so far, and the minutes at or before which the store can prune facts
    /// and retention runs. With `everything`, the whole state instead: for a fresh store (one
    /// that replaced a damaged file, say) to continue where the state is, so exported counters
    /// never go down.
    fn take_unflushed(&self, now: SystemTime, everything: bool) -> (Delta, Prune) {
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

    fn restore_unflushed(&self, taken: Delta) {
        self.state().restore_unflushed(taken);
    }

    /// Minutes after `now` plus the allowed skew (written by a process whose clock is ahead)
    /// stay out of the windows.
    fn apply_changes(&self, changes: Changes, now: SystemTime) {
        let skew_minutes = self.max_future_skew.as_secs().div_ceil(60);
        let newest = minute_of(now).unwrap_or(0).saturating_add(skew_minutes);
        self.state().apply_changes(changes, newest);
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

fn spawn_upkeep(engine: Weak<Engine>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("reflexio-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(engine) = engine.upgrade() else {
                    break;
                };
                engine.snapshot();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(
            error = %e,
            "cannot start the upkeep thread; windows will move only when snapshots are taken"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::event::Name;
    use crate::model::totals::{KEPT_TABLES, Totals};

    const T0: u64 = 1_700_000_040; // a whole minute

    fn start(clock: &ManualClock) -> Arc<Engine> {
        Engine::start(Settings {
            clock: Arc::new(clock.clone()),
            upkeep_interval: None,
            max_future_skew: Duration::from_secs(300),
            limits: Limits {
                max_tables: 32,
                max_locks: 8,
                stale_lock_after: Duration::from_secs(3600),
                evict_locks_after: Duration::from_secs(24 * 3600),
                tables: Vec::new(),
            },
            store: None,
        })
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn fact() -> Fact {
        Fact::new(0.9).expect("valid")
    }

    #[test]
    fn times_slightly_ahead_count_now_and_further_ahead_are_refused() {
        let clock = ManualClock::new(at(T0));
        let engine = start(&clock);
        engine
            .record(&Event::Fact(fact()), Some(at(T0 + 300)))
            .expect("within the skew");
        assert_eq!(
            engine.record(&Event::Fact(fact()), Some(at(T0 + 301))),
            Err(RecordError::FutureTime {
                ahead: Duration::from_secs(301),
                max: Duration::from_secs(300),
            })
        );
        engine
            .record(&Event::Fact(fact()), Some(at(T0 - 3600)))
            .expect("backfill");
        let snapshot = engine.snapshot();
        assert_eq!(snapshot.totals.facts, 2, "the refused one changed nothing");
        assert_eq!(snapshot.facts_24h.facts, 2);
        assert_eq!(
            engine.resolve(Some(at(T0 + 60))).map(|(_, m)| m),
            Ok(T0 / 60),
            "counted in the current minute"
        );
        assert_eq!(
            engine.record(
                &Event::Digest,
                Some(UNIX_EPOCH - Duration::from_secs(1_000))
            ),
            Err(RecordError::BeforeEpoch)
        );
    }

    #[test]
    fn events_stamped_now_never_count_before_the_latest_time_seen() {
        let clock = ManualClock::new(at(T0 + 600));
        let engine = start(&clock);
        clock.set(at(T0));
        engine.record_fact(&fact());
        let (at_time, minute) = engine.resolve(None).expect("valid");
        assert_eq!((at_time, minute), (at(T0 + 600), (T0 + 600) / 60));
        assert_eq!(engine.snapshot().facts_24h.facts, 1);
        assert_eq!(engine.snapshot().clock_jumps_back, 1);
    }

    #[test]
    fn a_durable_batch_names_its_first_invalid_event() {
        let clock = ManualClock::new(at(T0));
        let engine = start(&clock);
        let lock = LockEvent::new("digest", "w1").expect("valid");
        let batch = [
            (Event::LockAcquired(lock.clone()), None),
            (Event::Transcription, None),
            (Event::LockAcquired(lock.clone()), None),
        ];
        assert_eq!(
            engine.durable_delta(&batch, &History::new()).map(|_| ()),
            Err(DurableError::Invalid {
                index: 2,
                error: RecordError::LockAlreadyHeld {
                    name: lock.name.clone(),
                    holder: lock.holder.clone(),
                },
            })
        );
        let batch = [
            (Event::Transcription, None),
            (Event::Fact(fact()), Some(at(T0 + 3600))),
        ];
        assert!(matches!(
            engine.durable_delta(&batch, &History::new()),
            Err(DurableError::Invalid {
                index: 1,
                error: RecordError::FutureTime { .. }
            })
        ));
        let run = RetentionRun::new("facts", 2).expect("valid");
        let batch = [
            (Event::Transcription, None),
            (Event::Retention(run), Some(at(T0 - 120))),
            (Event::LockAcquired(lock.clone()), None),
            (Event::LockReleased(lock), None),
        ];
        let delta = engine
            .durable_delta(&batch, &History::new())
            .expect("valid");
        assert_eq!(delta.totals.transcriptions, 1);
        assert_eq!(
            delta.retention.keys().copied().collect::<Vec<_>>(),
            [T0 / 60 - 2]
        );
        assert_eq!(delta.locks.values().collect::<Vec<_>>(), [&None]);
        assert_eq!(
            engine.snapshot().totals,
            Totals::default(),
            "nothing recorded"
        );
        assert_eq!(
            engine.record_durable(&[], &History::new(), Vec::new()),
            Err(DurableError::NoStore)
        );
    }

    #[test]
    fn a_history_adds_to_the_totals_and_tables_and_to_no_window() {
        let clock = ManualClock::new(at(T0));
        let engine = start(&clock);
        let mut past = History::new();
        past.add_facts(&fact().hallucinated(true), 3);
        past.add_digests(2);
        past.add_retention_runs(&RetentionRun::new("facts", 4).expect("valid"), 5);
        let batch = [(Event::Fact(fact()), Some(at(T0 - 60)))];
        let delta = engine.durable_delta(&batch, &past).expect("valid");
        assert_eq!(
            delta.facts.keys().copied().collect::<Vec<_>>(),
            [T0 / 60 - 1],
            "only the recent fact has a window minute"
        );
        assert!(delta.retention.is_empty());
        assert_eq!(
            (
                delta.totals.facts,
                delta.totals.hallucinated,
                delta.totals.digests
            ),
            (4, 3, 2)
        );
        assert_eq!(delta.histograms.coverage.count(), 4);
        let name = TableLabel::Table(Name::new("facts").expect("valid"));
        assert_eq!(
            delta
                .tables
                .get(&name)
                .map(|r| (r.operations, r.deleted_records)),
            Some((5, 20))
        );
    }

    #[test]
    fn a_historys_tables_count_against_the_kept_table_cap() {
        let clock = ManualClock::new(at(T0));
        let engine = start(&clock);
        let mut past = History::new();
        for i in 0..KEPT_TABLES {
            past.add_retention_runs(&RetentionRun::new(&format!("p{i}"), 1).expect("valid"), 1);
        }
        // The batch's own new table comes first; the history fills the rest of the cap.
        let run = RetentionRun::new("recent", 1).expect("valid");
        let delta = engine
            .durable_delta(&[(Event::Retention(run), None)], &past)
            .expect("valid");
        assert_eq!(delta.tables.len(), KEPT_TABLES + 1);
        assert_eq!(
            delta
                .tables
                .get(&TableLabel::Overflow)
                .map(|b| b.operations),
            Some(1)
        );
    }

    #[test]
    fn a_durable_batch_of_many_new_tables_keeps_no_more_than_the_state_does() {
        let clock = ManualClock::new(at(T0));
        let engine = start(&clock);
        let batch: Vec<_> = (0..5000)
            .map(|i| {
                let run = RetentionRun::new(&format!("t{i}"), 1).expect("valid");
                (Event::Retention(run), None)
            })
            .collect();
        let delta = engine
            .durable_delta(&batch, &History::new())
            .expect("valid");
        assert_eq!(delta.tables.len(), KEPT_TABLES + 1);
        assert_eq!(
            delta
                .tables
                .get(&TableLabel::Overflow)
                .map(|b| b.operations),
            Some(5000 - KEPT_TABLES as u64)
        );
    }

    #[test]
    fn the_writer_source_prunes_by_this_clock_and_keeps_minutes_ahead_of_it_out() {
        let clock = ManualClock::new(at(T0));
        let engine = start(&clock);
        let (_, prune) = Source::take_unflushed(&*engine, at(T0), false);
        assert_eq!(prune, (T0 / 60 - DAY_MINUTES, T0 / 60 - WEEK_MINUTES));
        let bucket = FactBucket {
            facts: 1,
            ..FactBucket::default()
        };
        let changes = Changes {
            // 5 minutes of skew allowed: the minute 5 ahead counts, the one 6 ahead does not.
            facts: vec![(T0 / 60 + 5, bucket), (T0 / 60 + 6, bucket)],
            ..Changes::default()
        };
        Source::apply_changes(&*engine, changes, at(T0));
        clock.advance(Duration::from_secs(10 * 60));
        assert_eq!(engine.snapshot().facts_24h.facts, 1);
    }

    #[test]
    fn each_refresh_publishes_a_newer_snapshot_and_runs_the_hooks() {
        let clock = ManualClock::new(at(T0));
        let engine = start(&clock);
        let seen = Arc::new(Mutex::new(Vec::new()));
        {
            let seen = Arc::clone(&seen);
            engine.on_refresh(Box::new(move |s| {
                seen.lock()
                    .expect("not poisoned")
                    .push((s.seq, s.totals.digests));
            }));
        }
        engine.record_digest();
        let first = SnapshotSource::refresh(&*engine);
        assert_eq!(SnapshotSource::latest(&*engine), first);
        engine.record_digest();
        let second = engine.snapshot();
        assert!(second.seq > first.seq);
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            [(first.seq, 1), (second.seq, 2)]
        );
        assert!(first.store.is_none(), "no store, no store health");
        let name = Name::new("digest").expect("valid");
        assert!(engine.held_locks().iter().all(|(l, _)| l.name != name));
    }
}
