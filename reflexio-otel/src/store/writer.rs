//! Background persistence: the one thread that writes to the store. Every flush interval it
//! writes what was recorded since the last write and reads back what other processes wrote;
//! durable batches that arrive meanwhile are written in the same transaction (group commit).
//! It keeps the store's health, and retries after failures without losing anything.
//!
//! The writer does not know the engine that owns it: it takes changes from, and hands the
//! store's rows back to, a [`Source`].

use crate::error::{DurableError, StoreError, StoreErrorKind};
use crate::event::IdempotencyKey;
use crate::model::changes::{Changes, Checkpoint, Keyed};
use crate::model::delta::Delta;
use crate::store::db::{Db, KeyedBatch};
use crate::store::files::FileId;
use crate::store::health::StoreHealth;
use crate::store::options::StoreOptions;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

/// Window minutes at or before which the store prunes `(facts, retention runs)`.
pub(crate) type Prune = (u64, u64);

/// What the writer writes from and reads back into: the engine, or a fake in tests. No method
/// waits on I/O.
pub(crate) trait Source: Send + Sync {
    /// The time now, by the source's clock.
    fn now(&self) -> SystemTime;

    /// Takes what is new since the last write — or, with `everything`, all the source holds (for
    /// a fresh store to continue where the source is) — and the minutes the store can prune.
    fn take_unflushed(&self, now: SystemTime, everything: bool) -> (Delta, Prune);

    /// Puts back what [`Source::take_unflushed`] gave, after the write failed: in front of what
    /// was recorded since.
    fn restore_unflushed(&self, taken: Delta);

    /// Takes in what the store returned, read at `now`.
    fn apply_changes(&self, changes: Changes, now: SystemTime);
}

struct Request {
    delta: Delta,
    /// Requests with checkpoints are committed on their own.
    checkpoints: Vec<Checkpoint>,
    /// The batch's idempotency key and how many events it records: written with the group
    /// unless the key was claimed already.
    key: Option<(IdempotencyKey, u64)>,
    reply: mpsc::SyncSender<Result<Keyed, DurableError>>,
}

#[derive(Default)]
struct Queue {
    requests: Vec<Request>,
    /// Asked to write everything once more and stop.
    stop: bool,
    /// Stopped: requests are refused.
    stopped: bool,
}

struct Shared {
    options: StoreOptions,
    queue: Mutex<Queue>,
    wake: Condvar,
    health: Mutex<StoreHealth>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer's connection to the store, and what it knows of the file it had open.
#[derive(Debug, Default)]
struct Conn {
    db: Option<Db>,
    /// The database file last opened: another store found at the path later is not adopted.
    opened: Option<FileId>,
    /// The file was deleted or replaced, and no store has been opened since.
    gone: bool,
}

impl Conn {
    /// The open store, opening it first if needed; with whether it was just opened and nothing
    /// had ever been written to it (a fresh store, which then gets everything the source holds).
    fn open(&mut self, options: &StoreOptions) -> Result<(&mut Db, bool), StoreError> {
        let (db, fresh) = match self.db.take() {
            Some(db) => (db, false),
            None => {
                let db = Db::open(options).map_err(|e| match e.kind() {
                    StoreErrorKind::Io if self.gone => StoreError::new(
                        StoreErrorKind::Gone,
                        e.path(),
                        format!(
                            "the store's file is gone and no store can be created at this path \
                             yet ({}); nothing is acknowledged until one can, and then \
                             everything kept in memory is written to it",
                            e.message()
                        ),
                    ),
                    _ => e,
                })?;
                if let Some(opened) = self.opened
                    && db.file_id() != Some(opened)
                    && !db.is_fresh()
                {
                    return Err(StoreError::new(
                        StoreErrorKind::Gone,
                        &options.path,
                        "another store was put in place of the file while it was in use, and is \
                         not written to: move it away and a fresh store gets everything kept in \
                         memory, or restart to use it instead",
                    ));
                }
                self.opened = db.file_id();
                self.gone = false;
                let fresh = db.is_fresh();
                (db, fresh)
            }
        };
        Ok((self.db.insert(db), fresh))
    }

    /// Takes note of a failure: unless the file was only locked, it is reopened next time (it
    /// may have been fixed or replaced).
    fn failed(&mut self, e: &StoreError) {
        match e.kind() {
            StoreErrorKind::Busy => {}
            StoreErrorKind::Gone => {
                if let Some(db) = self.db.take() {
                    db.close_gone();
                }
                self.gone = true;
            }
            _ => self.db = None,
        }
    }
}

/// The writer thread of one recorder.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(options: StoreOptions) -> Self {
        let health = StoreHealth::new(options.path.clone());
        Self {
            shared: Arc::new(Shared {
                options,
                queue: Mutex::new(Queue::default()),
                wake: Condvar::new(),
                health: Mutex::new(health),
            }),
            thread: Mutex::new(None),
        }
    }

    /// Opens the store and loads it into `source` (in the calling thread, so that the recorder
    /// never exports less than the store holds), then starts the writer thread. If the store
    /// cannot be opened, the thread keeps trying.
    pub(crate) fn start(&self, source: Arc<dyn Source>) {
        let mut conn = Conn::default();
        sync(&*source, &self.shared, &mut conn, false, Vec::new());
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("reflexio-store".into())
            .spawn(move || run(&shared, &*source, conn));
        match spawned {
            Ok(handle) => *lock(&self.thread) = Some(handle),
            Err(e) => {
                lock(&self.shared.queue).stopped = true;
                tracing::error!(error = %e, "cannot start the metrics store writer thread");
            }
        }
    }

    pub(crate) fn health(&self) -> StoreHealth {
        lock(&self.shared.health).clone()
    }

    /// Hands `delta` to the writer and waits until it is committed together with everything
    /// recorded before the call.
    pub(crate) fn commit(
        &self,
        delta: Delta,
        checkpoints: Vec<Checkpoint>,
    ) -> Result<(), DurableError> {
        self.request(delta, checkpoints, None).map(drop)
    }

    /// Like [`Writer::commit`], for a batch of `accepted` events sent with `key`: written, with
    /// its key, only if the key was not claimed within the window (by any process, or by a batch
    /// of the same commit).
    pub(crate) fn commit_keyed(
        &self,
        delta: Delta,
        key: IdempotencyKey,
        accepted: u64,
    ) -> Result<Keyed, DurableError> {
        self.request(delta, Vec::new(), Some((key, accepted)))
    }

    fn request(
        &self,
        delta: Delta,
        checkpoints: Vec<Checkpoint>,
        key: Option<(IdempotencyKey, u64)>,
    ) -> Result<Keyed, DurableError> {
        let (reply, done) = mpsc::sync_channel(1);
        {
            let mut q = lock(&self.shared.queue);
            if q.stop || q.stopped {
                return Err(DurableError::Closed);
            }
            q.requests.push(Request {
                delta,
                checkpoints,
                key,
                reply,
            });
        }
        self.shared.wake.notify_one();
        done.recv().unwrap_or(Err(DurableError::Closed))
    }

    /// Writes everything recorded so far, stops the writer thread and returns the final
    /// write's outcome. Later calls do nothing.
    pub(crate) fn stop(&self) -> Result<(), StoreError> {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_one();
        // Held while joining, so that a concurrent call returns only after the final write.
        let mut thread = lock(&self.thread);
        if let Some(t) = thread.take()
            && t.join().is_err()
        {
            tracing::error!("the metrics store writer thread panicked");
        }
        match lock(&self.shared.health).last_error.clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn run(shared: &Shared, source: &dyn Source, mut conn: Conn) {
    let interval = shared.options.flush_interval;
    let check_interval = shared.options.integrity_check_interval;
    let mut next = Instant::now() + interval;
    let mut next_check = Instant::now() + check_interval;
    loop {
        let (requests, stop) = {
            let mut q = lock(&shared.queue);
            loop {
                let now = Instant::now();
                if q.stop || !q.requests.is_empty() || now >= next || now >= next_check {
                    break;
                }
                q = shared
                    .wake
                    .wait_timeout(q, next.min(next_check) - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if q.stop {
                q.stopped = true;
            }
            (std::mem::take(&mut q.requests), q.stop)
        };
        let now = Instant::now();
        if now >= next_check {
            // Before the round, so that a damaged file refuses this round's batches already.
            check(source, shared, &mut conn);
            next_check = Instant::now() + check_interval;
        }
        if stop || !requests.is_empty() || now >= next {
            next = Instant::now() + interval;
            sync(source, shared, &mut conn, true, requests);
        }
        if stop {
            break;
        }
    }
}

/// The periodic integrity check of an open store: damage found makes the store unhealthy, and
/// the file is reopened (and checked whole) before anything more is written to it.
fn check(source: &dyn Source, shared: &Shared, conn: &mut Conn) {
    let Some(db) = conn.db.as_mut() else {
        return;
    };
    match db.quick_check() {
        Ok(()) => {}
        Err(e) if e.kind() == StoreErrorKind::Busy => {
            tracing::debug!(error = %e, "integrity check skipped: the store is locked");
        }
        Err(e) => {
            lock(&shared.health).failed(&e, source.now());
            conn.failed(&e);
        }
    }
}

/// One round trip to the store: writes what was recorded since the last one (plus the durable
/// requests' deltas) and reads back what changed. On failure, the recorded changes are kept
/// for the next round and the requests are refused.
fn sync(
    source: &dyn Source,
    shared: &Shared,
    conn: &mut Conn,
    write: bool,
    requests: Vec<Request>,
) {
    let (checked, requests): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|r| !r.checkpoints.is_empty());
    // The error that refuses the checked requests still waiting, once the store failed.
    let mut failed = sync_group(source, shared, conn, write, requests).err();
    for request in checked {
        let reply = match (&failed, conn.db.as_mut()) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(db)) => commit_checked(source, shared, db, &request),
            (None, None) => Err(DurableError::Closed),
        };
        if let Err(e @ DurableError::Store(store)) = &reply {
            conn.failed(store);
            if store.kind() != StoreErrorKind::Busy {
                // Reopened (and reloaded) next round, as after a failed group.
                failed = Some(e.clone());
            }
        }
        let _ = request.reply.send(reply.map(|()| Keyed::Recorded));
    }
}

/// Commits one request with checkpoints in a transaction of its own, so that a checkpoint
/// another process moved refuses only this request.
fn commit_checked(
    source: &dyn Source,
    shared: &Shared,
    db: &mut Db,
    request: &Request,
) -> Result<(), DurableError> {
    let now = source.now();
    match db.commit_checked(&request.delta, &request.checkpoints, (0, 0)) {
        Ok(Ok(changes)) => {
            source.apply_changes(changes, now);
            lock(&shared.health).succeeded(now);
            Ok(())
        }
        Ok(Err(moved)) => Err(DurableError::CheckpointMoved { key: moved.key }),
        Err(e) => {
            lock(&shared.health).failed(&e, now);
            Err(DurableError::Store(e))
        }
    }
}

/// One round trip for the interval's changes and the requests without checkpoints.
fn sync_group(
    source: &dyn Source,
    shared: &Shared,
    conn: &mut Conn,
    write: bool,
    requests: Vec<Request>,
) -> Result<(), DurableError> {
    let now = source.now();
    let opened = conn.open(&shared.options).map(|(_, fresh)| fresh);
    let (taken, prune) = match &opened {
        // A fresh store (created, or replacing a damaged or deleted file) gets everything the
        // state holds, so that it continues where the state is.
        Ok(fresh) if write => source.take_unflushed(now, *fresh),
        _ => (Delta::default(), (0, 0)),
    };
    let mut delta = taken.clone();
    let mut replies = Vec::with_capacity(requests.len());
    let mut keyed = Vec::new();
    let mut keyed_replies = Vec::new();
    for r in requests {
        match r.key {
            None => {
                delta.merge(r.delta);
                replies.push(r.reply);
            }
            Some((key, accepted)) => {
                keyed.push(KeyedBatch {
                    key,
                    accepted,
                    delta: r.delta,
                });
                keyed_replies.push(r.reply);
            }
        }
    }

    let result = opened.and_then(|_| {
        let Some(db) = conn.db.as_mut() else {
            unreachable!("opened above");
        };
        if delta.is_empty() && keyed.is_empty() {
            db.poll().map(|c| (c, Vec::new()))
        } else {
            // Without checkpoints to move, the commit is never refused; a keyed batch whose
            // key was claimed is left out of it.
            db.commit_keyed(delta, keyed, now, prune)
                .map(|(changes, outcomes)| (Some(changes), outcomes))
        }
    });

    let (reply, outcomes) = match result {
        Ok((changes, outcomes)) => {
            if let Some(changes) = changes {
                source.apply_changes(changes, now);
            }
            lock(&shared.health).succeeded(now);
            (Ok(()), outcomes)
        }
        Err(e) => {
            source.restore_unflushed(taken);
            lock(&shared.health).failed(&e, now);
            conn.failed(&e);
            (Err(DurableError::Store(e)), Vec::new())
        }
    };
    for r in replies {
        let _ = r.send(reply.clone().map(|()| Keyed::Recorded));
    }
    for (i, r) in keyed_replies.into_iter().enumerate() {
        let outcome = match (&reply, outcomes.get(i)) {
            (Ok(()), Some(outcome)) => Ok(*outcome),
            (Err(e), _) => Err(e.clone()),
            (Ok(()), None) => Err(DurableError::Closed),
        };
        let _ = r.send(outcome);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    /// What a fake source was asked, and what it hands out.
    #[derive(Default)]
    struct Calls {
        /// Handed out by the next `take_unflushed`.
        pending: Delta,
        /// Handed out instead when asked for everything.
        everything: Delta,
        /// The `everything` argument of each take.
        took: Vec<bool>,
        restored: Vec<Delta>,
        applied: Vec<Changes>,
    }

    #[derive(Default)]
    struct FakeSource(Mutex<Calls>);

    impl FakeSource {
        fn calls(&self) -> MutexGuard<'_, Calls> {
            lock(&self.0)
        }

        /// The facts total of the last changes applied.
        fn applied_facts(&self) -> Option<u64> {
            self.calls().applied.last().map(|c| c.totals.facts)
        }
    }

    impl Source for FakeSource {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        }

        fn take_unflushed(&self, _now: SystemTime, everything: bool) -> (Delta, Prune) {
            let mut calls = self.calls();
            calls.took.push(everything);
            let pending = std::mem::take(&mut calls.pending);
            let taken = if everything {
                calls.everything.clone()
            } else {
                pending
            };
            (taken, (0, 0))
        }

        fn restore_unflushed(&self, mut taken: Delta) {
            let mut calls = self.calls();
            calls.restored.push(taken.clone());
            taken.merge(std::mem::take(&mut calls.pending));
            calls.pending = taken;
        }

        fn apply_changes(&self, changes: Changes, _now: SystemTime) {
            self.calls().applied.push(changes);
        }
    }

    /// The kind of store error `result` failed with.
    fn store_error(result: Result<(), DurableError>) -> Option<StoreErrorKind> {
        match result {
            Err(DurableError::Store(e)) => Some(e.kind()),
            _ => None,
        }
    }

    /// Rounds run only when asked: on a commit, or on stop.
    fn options(path: &Path) -> StoreOptions {
        StoreOptions::new(path)
            .flush_interval(Duration::from_secs(3600))
            .busy_timeout(Duration::from_millis(20))
    }

    /// A writer started on a new store in `dir`, and its source.
    fn started_in(dir: &Path) -> (StoreOptions, Writer, Arc<FakeSource>) {
        let options = options(&dir.join("m.db"));
        let (writer, source) = started(options.clone());
        (options, writer, source)
    }

    fn started(options: StoreOptions) -> (Writer, Arc<FakeSource>) {
        let source = Arc::new(FakeSource::default());
        let writer = Writer::new(options);
        writer.start(Arc::clone(&source) as Arc<dyn Source>);
        (writer, source)
    }

    /// The facts total in the store, and how many commits it has seen.
    fn stored(options: &StoreOptions) -> (u64, u64) {
        let mut db = Db::open(options).expect("opened");
        let seq: i64 = db
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))
            .expect("seq");
        let facts = db.poll().expect("read").map_or(0, |c| c.totals.facts);
        (facts, seq as u64)
    }

    #[test]
    fn starting_loads_the_store_before_it_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(&dir.path().join("m.db"));
        let mut db = Db::open(&options).expect("opened");
        db.commit_checked(&Delta::of_facts(10, 5), &[], (0, 0))
            .expect("written")
            .expect("no checkpoint");
        drop(db);
        let (writer, source) = started(options);
        assert_eq!(source.applied_facts(), Some(5));
        assert!(
            source.calls().took.is_empty(),
            "nothing is written at start"
        );
        let health = writer.health();
        assert!(health.is_healthy());
        assert_eq!(health.flushes, 1);
    }

    #[test]
    fn a_flush_writes_what_is_new_and_applies_what_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (options, writer, source) = started_in(dir.path());
        source.calls().pending = Delta::of_facts(10, 3);
        writer
            .commit(Delta::default(), Vec::new())
            .expect("flushed");
        assert_eq!(source.calls().took, [false]);
        assert_eq!(source.applied_facts(), Some(3));
        writer
            .commit(Delta::of_facts(11, 2), Vec::new())
            .expect("committed");
        assert_eq!(source.applied_facts(), Some(5));
        assert_eq!(stored(&options), (5, 2));
        assert_eq!(writer.health().flushes, 3);
    }

    #[test]
    fn a_failed_write_puts_what_it_took_back_for_the_next_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (options, writer, source) = started_in(dir.path());
        let other = rusqlite::Connection::open(options.path()).expect("open");
        other.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        source.calls().pending = Delta::of_facts(10, 3);
        assert_eq!(
            store_error(writer.commit(Delta::of_facts(11, 1), Vec::new())),
            Some(StoreErrorKind::Busy)
        );
        assert_eq!(
            source.calls().restored,
            [Delta::of_facts(10, 3)],
            "the batch is not kept"
        );
        assert_eq!(source.calls().pending, Delta::of_facts(10, 3));
        let health = writer.health();
        assert_eq!(health.errors(StoreErrorKind::Busy), 1);
        assert!(health.last_error.is_some() && health.failing_since.is_some());

        other.execute_batch("COMMIT").expect("released");
        writer
            .commit(Delta::default(), Vec::new())
            .expect("flushed");
        assert_eq!(
            source.applied_facts(),
            Some(3),
            "written once, the refused batch not at all"
        );
        assert!(writer.health().is_healthy());
    }

    #[test]
    fn batches_waiting_together_share_one_commit_and_checked_ones_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(&dir.path().join("m.db"));
        let writer = Writer::new(options.clone());
        let source = FakeSource::default();
        source.calls().pending = Delta::of_facts(9, 1);
        let mut conn = Conn {
            db: Some(Db::open(&options).expect("opened")),
            ..Conn::default()
        };
        let request = |delta, checkpoints| {
            let (reply, done) = mpsc::sync_channel(1);
            let request = Request {
                delta,
                checkpoints,
                key: None,
                reply,
            };
            (request, done)
        };
        let checkpoint = |expected, value| {
            vec![Checkpoint {
                key: "legacy:facts".into(),
                expected,
                value,
            }]
        };
        let (moved, moved_done) = request(Delta::of_facts(12, 100), checkpoint(Some(7), 8));
        let (a, a_done) = request(Delta::of_facts(10, 1), Vec::new());
        let (checked, checked_done) = request(Delta::of_facts(13, 10), checkpoint(None, 1));
        let (b, b_done) = request(Delta::of_facts(11, 1), Vec::new());
        sync(
            &source,
            &writer.shared,
            &mut conn,
            true,
            vec![moved, a, checked, b],
        );

        assert_eq!(a_done.recv().expect("reply"), Ok(Keyed::Recorded));
        assert_eq!(b_done.recv().expect("reply"), Ok(Keyed::Recorded));
        assert_eq!(checked_done.recv().expect("reply"), Ok(Keyed::Recorded));
        assert_eq!(
            moved_done.recv().expect("reply"),
            Err(DurableError::CheckpointMoved {
                key: "legacy:facts".into()
            })
        );
        drop(conn);
        assert_eq!(
            stored(&options),
            (13, 2),
            "one commit for the group, one for the checked batch, none for the refused one"
        );
    }

    #[test]
    fn keyed_batches_join_the_group_and_a_key_twice_records_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(&dir.path().join("m.db"));
        let writer = Writer::new(options.clone());
        let source = FakeSource::default();
        let mut conn = Conn {
            db: Some(Db::open(&options).expect("opened")),
            ..Conn::default()
        };
        let request = |delta, key: Option<&str>| {
            let (reply, done) = mpsc::sync_channel(1);
            let key = key.map(|k| (IdempotencyKey::new(k).expect("valid"), 2));
            let request = Request {
                delta,
                checkpoints: Vec::new(),
                key,
                reply,
            };
            (request, done)
        };
        let (first, first_done) = request(Delta::of_facts(10, 2), Some("k"));
        let (plain, plain_done) = request(Delta::of_facts(10, 1), None);
        let (twin, twin_done) = request(Delta::of_facts(10, 2), Some("k"));
        sync(
            &source,
            &writer.shared,
            &mut conn,
            true,
            vec![first, plain, twin],
        );
        assert_eq!(first_done.recv().expect("reply"), Ok(Keyed::Recorded));
        assert_eq!(plain_done.recv().expect("reply"), Ok(Keyed::Recorded));
        assert!(matches!(
            twin_done.recv().expect("reply"),
            Ok(Keyed::Replayed { accepted: 2, .. })
        ));
        drop(conn);
        assert_eq!(stored(&options), (3, 1), "one commit, the twin left out");
    }

    #[test]
    fn stopping_writes_once_more_and_then_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (options, writer, source) = started_in(dir.path());
        source.calls().pending = Delta::of_facts(10, 4);
        writer.stop().expect("final write");
        assert_eq!(stored(&options).0, 4);
        assert_eq!(
            writer.commit(Delta::of_facts(11, 1), Vec::new()),
            Err(DurableError::Closed)
        );
        writer.stop().expect("a second stop does nothing");
        assert_eq!(stored(&options).0, 4);
    }

    #[test]
    fn a_store_that_cannot_be_opened_refuses_batches_and_a_fresh_one_gets_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("later");
        let options = options(&missing.join("m.db"));
        let (writer, source) = started(options.clone());
        assert_eq!(
            writer.health().last_error.map(|e| e.kind()),
            Some(StoreErrorKind::Io)
        );
        assert_eq!(
            store_error(writer.commit(Delta::of_facts(1, 1), Vec::new())),
            Some(StoreErrorKind::Io)
        );
        assert!(
            source.calls().took.is_empty(),
            "nothing taken without a store"
        );

        std::fs::create_dir(&missing).expect("directory");
        source.calls().everything = Delta::of_facts(5, 9);
        writer
            .commit(Delta::of_facts(6, 1), Vec::new())
            .expect("committed");
        assert_eq!(
            source.calls().took,
            [true],
            "a fresh store continues from all of it"
        );
        assert_eq!(source.applied_facts(), Some(10));
        assert!(writer.health().is_healthy());
    }
}
