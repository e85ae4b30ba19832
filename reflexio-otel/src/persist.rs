//! Background persistence: the one thread that writes to the store. Every flush interval it
//! writes what was recorded since the last write and reads back what other processes wrote;
//! durable batches that arrive meanwhile are written in the same transaction (group commit).
//! It keeps the store's health, and retries after failures without losing anything.

use crate::delta::Delta;
use crate::recorder::Inner;
use crate::store::{Checkpoint, Db, StoreError, StoreErrorKind, StoreOptions};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};
use thiserror::Error;

/// Why a durable batch was not recorded. Nothing of a refused batch is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DurableError {
    /// An event of the batch is invalid; `index` is its position.
    #[error("event {index}: {error}")]
    Invalid {
        /// The position of the first invalid event.
        index: usize,
        /// What is wrong with it.
        error: crate::RecordError,
    },
    /// The recorder was built without a store.
    #[error("the recorder has no store to make events durable in")]
    NoStore,
    /// The recorder's store was shut down.
    #[error("the recorder's store is shut down")]
    Closed,
    /// A checkpoint did not hold its expected value: another process moved it.
    #[error("checkpoint `{key}` was moved by another process")]
    CheckpointMoved {
        /// The checkpoint.
        key: String,
    },
    /// The batch could not be committed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The state of the store, as of the last attempt to write or read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreHealth {
    /// The store's file.
    pub path: PathBuf,
    /// Why the last attempt failed; `None` if it succeeded.
    pub last_error: Option<StoreError>,
    /// When the current run of failures began.
    pub failing_since: Option<SystemTime>,
    /// When an attempt last succeeded.
    pub last_success: Option<SystemTime>,
    /// Successful flushes (each writes what is new and reads what others wrote).
    pub flushes: u64,
    errors: [u64; StoreErrorKind::ALL.len()],
}

impl StoreHealth {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            last_error: None,
            failing_since: None,
            last_success: None,
            flushes: 0,
            errors: [0; StoreErrorKind::ALL.len()],
        }
    }

    /// The store was read and the last attempt to write it succeeded.
    pub fn is_healthy(&self) -> bool {
        self.last_error.is_none() && self.last_success.is_some()
    }

    /// Failed attempts of `kind` so far.
    pub fn errors(&self, kind: StoreErrorKind) -> u64 {
        StoreErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.errors[i])
    }

    fn succeeded(&mut self, at: SystemTime) {
        if let Some(e) = self.last_error.take() {
            tracing::info!(
                path = %self.path.display(),
                after = %e,
                "metrics store is writable again; nothing recorded meanwhile was lost"
            );
        }
        self.failing_since = None;
        self.last_success = Some(at);
        self.flushes += 1;
    }

    fn failed(&mut self, error: &StoreError, at: SystemTime) {
        let changed = self.last_error.as_ref().map(StoreError::kind) != Some(error.kind());
        if changed {
            tracing::error!(
                error = %error,
                "cannot write the metrics store; recording continues in memory and the write is retried"
            );
        } else {
            tracing::debug!(error = %error, "metrics store write failed again");
        }
        if self.last_error.is_none() {
            self.failing_since = Some(at);
        }
        if let Some(i) = StoreErrorKind::ALL.iter().position(|k| *k == error.kind()) {
            self.errors[i] += 1;
        }
        self.last_error = Some(error.clone());
    }
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
pub(crate) struct Persister {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persister")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Persister {
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

    /// Opens the store and loads it into `inner`'s state (in the calling thread, so that the
    /// recorder never exports less than the store holds), then starts the writer thread. If the
    /// store cannot be opened, the thread keeps trying.
    pub(crate) fn start(&self, inner: &Arc<Inner>) {
        let mut db = None;
        sync(inner, &self.shared, &mut db, false, Vec::new());
        let shared = Arc::clone(&self.shared);
        let inner = Arc::clone(inner);
        let spawned = std::thread::Builder::new()
            .name("reflexio-store".into())
            .spawn(move || run(&shared, &inner, db));
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

fn run(shared: &Shared, inner: &Arc<Inner>, mut db: Option<Db>) {
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
        sync(inner, shared, &mut db, true, requests);
        if stop {
            break;
        }
    }
}

/// One round trip to the store: writes what was recorded since the last one (plus the durable
/// requests' deltas) and reads back what changed. On failure, the recorded changes are kept
/// for the next round and the requests are refused.
fn sync(inner: &Inner, shared: &Shared, db: &mut Option<Db>, write: bool, requests: Vec<Request>) {
    let (checked, requests): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|r| !r.checkpoints.is_empty());
    // The error that refuses the checked requests still waiting, once the store failed.
    let mut failed = sync_group(inner, shared, db, write, requests).err();
    for request in checked {
        let reply = match (&failed, db.as_mut()) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(db)) => commit_checked(inner, shared, db, &request),
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
    inner: &Inner,
    shared: &Shared,
    db: &mut Db,
    request: &Request,
) -> Result<(), DurableError> {
    let now = inner.clock.now();
    match db.commit_checked(&request.delta, &request.checkpoints, (0, 0)) {
        Ok(Ok(changes)) => {
            inner.apply_changes(changes, now);
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
    inner: &Inner,
    shared: &Shared,
    db: &mut Option<Db>,
    write: bool,
    requests: Vec<Request>,
) -> Result<(), DurableError> {
    let now = inner.clock.now();
    let opened = match db {
        Some(_) => Ok(false),
        None => Db::open(&shared.options).map(|opened| db.insert(opened).is_fresh()),
    };
    let (taken, prune) = match &opened {
        // A fresh store (created, or replacing a damaged file) gets everything the state
        // holds, so that it continues where the state is.
        Ok(fresh) if write => inner.take_unflushed(now, *fresh),
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
                inner.apply_changes(changes, now);
            }
            lock(&shared.health).succeeded(now);
            Ok(())
        }
        Err(e) => {
            inner.restore_unflushed(taken);
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
