//! Background persistence: the one thread that writes to the store. Every flush interval it
//! writes what was recorded since the last write and reads back what other processes wrote;
//! durable batches that arrive meanwhile are written in the same transaction (group commit).
//! It keeps the store's health, and retries after failures without losing anything.
//!
//! The writer does not know the engine that owns it: it takes changes from, and hands the
//! store's rows back to, a [`Source`].

use crate::error::{DurableError, StoreError, StoreErrorKind};
use crate::model::changes::{Changes, Checkpoint};
use crate::model::delta::Delta;
use crate::store::db::Db;
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
    reply: mpsc::SyncSender<Result<(), DurableError>>,
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
        let mut db = None;
        sync(&*source, &self.shared, &mut db, false, Vec::new());
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("reflexio-store".into())
            .spawn(move || run(&shared, &*source, db));
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
        let (reply, done) = mpsc::sync_channel(1);
        {
            let mut q = lock(&self.shared.queue);
            if q.stop || q.stopped {
                return Err(DurableError::Closed);
            }
            q.requests.push(Request {
                delta,
                checkpoints,
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

fn run(shared: &Shared, source: &dyn Source, mut db: Option<Db>) {
    let interval = shared.options.flush_interval;
    let mut next = Instant::now() + interval;
    loop {
        let (requests, stop) = {
            let mut q = lock(&shared.queue);
            loop {
                let now = Instant::now();
                if q.stop || !q.requests.is_empty() || now >= next {
                    break;
                }
                q = shared
                    .wake
                    .wait_timeout(q, next - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if q.stop {
                q.stopped = true;
            }
            (std::mem::take(&mut q.requests), q.stop)
        };
        next = Instant::now() + interval;
        sync(source, shared, &mut db, true, requests);
        if stop {
            break;
        }
    }
}

/// One round trip to the store: writes what was recorded since the last one (plus the durable
/// requests' deltas) and reads back what changed. On failure, the recorded changes are kept
/// for the next round and the requests are refused.
fn sync(
    source: &dyn Source,
    shared: &Shared,
    db: &mut Option<Db>,
    write: bool,
    requests: Vec<Request>,
) {
    let (checked, requests): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|r| !r.checkpoints.is_empty());
    // The error that refuses the checked requests still waiting, once the store failed.
    let mut failed = sync_group(source, shared, db, write, requests).err();
    for request in checked {
        let reply = match (&failed, db.as_mut()) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(db)) => commit_checked(source, shared, db, &request),
            (None, None) => Err(DurableError::Closed),
        };
        if let Err(e @ DurableError::Store(store)) = &reply
            && store.kind() != StoreErrorKind::Busy
        {
            // Reopen (and reload) next round, as after a failed group.
            *db = None;
            failed = Some(e.clone());
        }
        let _ = request.reply.send(reply);
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
    db: &mut Option<Db>,
    write: bool,
    requests: Vec<Request>,
) -> Result<(), DurableError> {
    let now = source.now();
    let opened = match db {
        Some(_) => Ok(false),
        None => Db::open(&shared.options).map(|opened| db.insert(opened).is_fresh()),
    };
    let (taken, prune) = match &opened {
        // A fresh store (created, or replacing a damaged file) gets everything the state
        // holds, so that it continues where the state is.
        Ok(fresh) if write => source.take_unflushed(now, *fresh),
        _ => (Delta::default(), (0, 0)),
    };
    let mut delta = taken.clone();
    let mut replies = Vec::with_capacity(requests.len());
    for r in requests {
        delta.merge(r.delta);
        replies.push(r.reply);
    }

    let result = opened.and_then(|_| {
        let Some(db) = db.as_mut() else {
            unreachable!("opened above");
        };
        if delta.is_empty() {
            db.poll()
        } else {
            // Without checkpoints to move, the commit is never refused.
            db.commit_checked(&delta, &[], prune).map(Result::ok)
        }
    });

    let reply = match result {
        Ok(changes) => {
            if let Some(changes) = changes {
                source.apply_changes(changes, now);
            }
            lock(&shared.health).succeeded(now);
            Ok(())
        }
        Err(e) => {
            source.restore_unflushed(taken);
            lock(&shared.health).failed(&e, now);
            if e.kind() != StoreErrorKind::Busy {
                // Reopen (and reload) next time: the file may have been fixed or replaced.
                *db = None;
            }
            Err(DurableError::Store(e))
        }
    };
    for r in replies {
        let _ = r.send(reply.clone());
    }
    reply
}
