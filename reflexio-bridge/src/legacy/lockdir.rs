//! The application's lock directory: a lock `{name}` is held while the file `{name}.pid`
//! exists, by the process whose id the file holds, since the file's modification time.
//!
//! Each poll compares the files with the locks the recorder holds for them (holder
//! [`HOLDER`]) and records the difference — a new file is a lock taken, a file gone a lock
//! released, a file rewritten (another process id or modification time) a lock taken anew — so
//! a restarted bridge picks up where the last one left off. The recorder counts a lock as stale when it is older than the threshold, or when
//! its process is not alive on this host: the bridge must see the application's processes
//! (same host, or same PID namespace in containers).

use reflexio_otel::{DurableError, Event, LockEvent, Name, Recorder};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The holder name of locks read from lock files.
pub const HOLDER: &str = "pidfile";

/// Why the lock directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LockDirError {
    /// Listing the directory failed (it exists but cannot be read).
    #[error("cannot read the lock directory {path}: {source}")]
    Read {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The locks could not be recorded.
    #[error("cannot record the locks of {path}: {source}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: DurableError,
    },
}

/// A lock file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockFile {
    pid: Option<u32>,
    since: SystemTime,
}

/// What one poll found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LockDirCounts {
    /// Files whose name or contents are not a lock name and a process id, seen for the first
    /// time (a file counts again only after it was fixed or removed).
    pub invalid: u64,
}

/// Follows one lock directory.
#[derive(Debug)]
pub struct LockDir {
    dir: PathBuf,
    holder: Name,
    /// The invalid files seen at the last poll, so that each is logged and counted once.
    reported: std::collections::HashSet<PathBuf>,
    /// The files as of the last poll recorded: one unchanged since whose lock is no longer
    /// held was evicted by the recorder (its process is gone and it is older than the eviction
    /// age), and is recorded again only once the file changes.
    recorded: BTreeMap<Name, LockFile>,
}

impl LockDir {
    /// Follows `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.into(),
            holder: Name::new(HOLDER).unwrap_or_else(|_| unreachable!("a valid name")),
            reported: Default::default(),
            recorded: BTreeMap::new(),
        }
    }

    /// The lock files now, by lock name; `now` stands for a file's unreadable time. A missing
    /// directory holds no locks.
    fn read(
        &mut self,
        counts: &mut LockDirCounts,
        now: SystemTime,
    ) -> Result<BTreeMap<Name, LockFile>, LockDirError> {
        let err = |source| LockDirError::Read {
            path: self.dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(err(e)),
        };
        let mut files = BTreeMap::new();
        let mut invalid = std::collections::HashSet::new();
        for entry in entries {
            let path = entry.map_err(err)?.path();
            if path.extension().is_none_or(|e| e != "pid") {
                continue;
            }
            // Released between the listing and now: not held.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| Name::new(s).ok());
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|pid| *pid > 0);
            if name.is_none() || pid.is_none() {
                invalid.insert(path.clone());
                if !self.reported.contains(&path) {
                    counts.invalid += 1;
                    tracing::warn!(
                        file = %path.display(),
                        "lock file without a valid name or process id; {}",
                        if name.is_some() { "counted as held, never by a dead process" } else { "ignored" }
                    );
                }
            }
            let Some(name) = name else { continue };
            // A time before 1970 (a broken clock) counts as 1970: the lock is old.
            let since = meta.modified().unwrap_or(now).max(UNIX_EPOCH);
            files.insert(name, LockFile { pid, since });
        }
        self.reported = invalid;
        Ok(files)
    }

    /// Reads the directory and records what changed since the recorder last saw it.
    pub fn poll(&mut self, recorder: &Recorder) -> Result<LockDirCounts, LockDirError> {
        let mut counts = LockDirCounts::default();
        // The recorder's clock: the one the locks' times are compared with.
        let now = recorder.now();
        let files = self.read(&mut counts, now)?;
        let held: BTreeMap<Name, (Option<u32>, SystemTime)> = recorder
            .held_locks()
            .into_iter()
            .filter(|(lock, _)| lock.holder == self.holder)
            .map(|(lock, at)| (lock.name, (lock.pid, at)))
            .collect();
        let release = |name: &Name| {
            let lock = LockEvent {
                name: name.clone(),
                holder: self.holder.clone(),
                pid: None,
                host: None,
            };
            (Event::LockReleased(lock), None)
        };
        let mut batch = Vec::new();
        for (name, file) in &files {
            match held.get(name) {
                // Unchanged (a time ahead of the clock was recorded as now: the pid decides).
                Some((pid, at)) if *pid == file.pid && (*at == file.since || file.since > now) => {
                    continue;
                }
                // Taken again, by the same process or another: released, then acquired anew.
                Some(_) => batch.push(release(name)),
                // Evicted since it was recorded, and unchanged.
                None if self.recorded.get(name) == Some(file) => continue,
                None => {}
            }
            let mut lock = LockEvent::for_this_process(name.as_str(), HOLDER)
                .unwrap_or_else(|_| unreachable!("valid names"));
            lock.pid = file.pid;
            batch.push((Event::LockAcquired(lock), Some(file.since.min(now))));
        }
        for name in held.keys().filter(|name| !files.contains_key(*name)) {
            batch.push(release(name));
        }
        if !batch.is_empty() {
            recorder
                .record_durable(&batch)
                .map_err(|source| LockDirError::Store {
                    path: self.dir.clone(),
                    source,
                })?;
        }
        self.recorded = files;
        Ok(counts)
    }
}
