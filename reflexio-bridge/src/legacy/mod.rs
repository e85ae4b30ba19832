//! Following an existing Reflexio deployment without changing it: its SQLite database, opened
//! read-only and read incrementally, and its lock directory.
//!
//! - `timestamp`: the time formats the application writes;
//! - `db`: the database's tables and columns, and rows turned into events;
//! - `follow`: rows moved into the recorder exactly once, by cursors kept in the store;
//! - `lockdir`: lock files turned into held locks;
//! - `dotenv`: the application's `.env` file, read as its settings library reads it;
//! - `cove`: the application's CoVe settings, and where each value came from;
//! - this module: the background poller of `serve` and the metrics it exports.

mod cove;
mod db;
mod dotenv;
mod follow;
mod lockdir;
mod timestamp;

pub use cove::{Cove, CoveSettings, CoveWatch, FileCove, Origin};
pub use db::{AppDb, Found, ReadError, Table};
pub(crate) use dotenv::pydantic_bool;
pub use follow::{Counts, FollowError, Follower, HISTORY, MAX_AHEAD, log_schema};
pub(crate) use lockdir::shared_system_dir;
pub use lockdir::{HOLDER, LockDir, LockDirCounts, LockDirError, LockNames};

use crate::worker::Worker;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use reflexio_otel::Recorder;
use reflexio_otel::contract::{self, SOURCE_LABEL};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What to follow, and how.
#[derive(Debug, Clone)]
pub struct LegacySettings {
    /// The application's database.
    pub db: Option<PathBuf>,
    /// The application's lock directory.
    pub lock_dir: Option<PathBuf>,
    /// Which of its `.pid` files are the application's locks.
    pub lock_names: LockNames,
    /// The zone of times written without an offset.
    pub zone: jiff::tz::TimeZone,
    /// Time between polls.
    pub poll_interval: Duration,
}

/// The source label of the database as a whole, and of the lock directory.
const DATABASE: &str = "database";
const LOCK_DIR: &str = "lock_dir";

/// Counts of one table.
#[derive(Debug, Default)]
struct TableStats {
    rows: AtomicU64,
    timestamp_errors: AtomicU64,
    invalid_values: AtomicU64,
}

/// Counts of one polled source (the database, the lock directory).
#[derive(Debug)]
struct PollStats {
    errors: AtomicU64,
    healthy: AtomicBool,
}

impl Default for PollStats {
    fn default() -> Self {
        Self {
            errors: AtomicU64::new(0),
            // Unhealthy until the first poll succeeds.
            healthy: AtomicBool::new(false),
        }
    }
}

/// What the poller has done, as the `reflexio_legacy_*` metrics export it.
#[derive(Debug, Default)]
pub struct LegacyStats {
    tables: [TableStats; 4],
    lock_invalid: AtomicU64,
    database: PollStats,
    lock_dir: PollStats,
}

impl LegacyStats {
    fn table(&self, table: Table) -> &TableStats {
        &self.tables[table as usize]
    }

    /// Adds a committed batch.
    pub fn add(&self, table: Table, counts: &Counts) {
        let t = self.table(table);
        t.rows.fetch_add(counts.recorded, Ordering::Relaxed);
        t.timestamp_errors
            .fetch_add(counts.timestamp_errors, Ordering::Relaxed);
        t.invalid_values
            .fetch_add(counts.invalid_values, Ordering::Relaxed);
    }

    fn polled(stats: &PollStats, ok: bool) {
        if !ok {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        stats.healthy.store(ok, Ordering::Relaxed);
    }

    /// Registers the `reflexio_legacy_*` metrics of the sources `settings` names.
    pub fn register(self: &Arc<Self>, meter: &Meter, settings: &LegacySettings) {
        let mut polled: Vec<&'static str> = Vec::new();
        if settings.db.is_some() {
            polled.push(DATABASE);
        }
        if settings.lock_dir.is_some() {
            polled.push(LOCK_DIR);
        }
        let per_table = |spec: &contract::MetricSpec, value: fn(&TableStats) -> u64| {
            let stats = Arc::clone(self);
            spec.observe_u64(meter, move |o| {
                for table in Table::ALL {
                    let attrs = [KeyValue::new(SOURCE_LABEL, table.name())];
                    o.observe(value(stats.table(table)), &attrs);
                }
            });
        };
        if settings.db.is_some() {
            per_table(&contract::LEGACY_ROWS, |t| t.rows.load(Ordering::Relaxed));
            per_table(&contract::LEGACY_TIMESTAMP_ERRORS, |t| {
                t.timestamp_errors.load(Ordering::Relaxed)
            });
        }
        let stats = Arc::clone(self);
        let (db, locks) = (settings.db.is_some(), settings.lock_dir.is_some());
        contract::LEGACY_INVALID_VALUES.observe_u64(meter, move |o| {
            if db {
                for table in Table::ALL {
                    let attrs = [KeyValue::new(SOURCE_LABEL, table.name())];
                    o.observe(
                        stats.table(table).invalid_values.load(Ordering::Relaxed),
                        &attrs,
                    );
                }
            }
            if locks {
                let attrs = [KeyValue::new(SOURCE_LABEL, LOCK_DIR)];
                o.observe(stats.lock_invalid.load(Ordering::Relaxed), &attrs);
            }
        });
        let sources = polled.clone();
        let stats = Arc::clone(self);
        contract::LEGACY_READ_ERRORS.observe_u64(meter, move |o| {
            for source in &sources {
                let attrs = [KeyValue::new(SOURCE_LABEL, *source)];
                o.observe(stats.poll(source).errors.load(Ordering::Relaxed), &attrs);
            }
        });
        let stats = Arc::clone(self);
        contract::LEGACY_HEALTHY.observe_u64(meter, move |o| {
            for source in &polled {
                let attrs = [KeyValue::new(SOURCE_LABEL, *source)];
                let healthy = stats.poll(source).healthy.load(Ordering::Relaxed);
                o.observe(u64::from(healthy), &attrs);
            }
        });
    }

    fn poll(&self, source: &str) -> &PollStats {
        if source == DATABASE {
            &self.database
        } else {
            &self.lock_dir
        }
    }
}

/// The poller of `serve`: follows the database and the lock directory in a thread of its own
/// until dropped.
#[derive(Debug)]
pub struct Poller {
    _worker: Worker,
}

struct Polling {
    settings: LegacySettings,
    recorder: Recorder,
    /// The application's `.env` file, read again every poll.
    cove: Option<CoveWatch>,
    stats: Arc<LegacyStats>,
    follower: Option<Follower>,
    lock_dir: Option<LockDir>,
    /// The last database error logged, so that a persisting one is logged once.
    db_failing: Option<String>,
    locks_failing: Option<String>,
}

impl Polling {
    fn poll_db(&mut self) {
        let Some(path) = &self.settings.db else {
            return;
        };
        if self.follower.is_none() {
            match AppDb::open(path, self.settings.zone.clone()) {
                Ok(db) => {
                    tracing::info!(db = %path.display(), "reading the application's database");
                    log_schema(&db);
                    self.follower = Some(Follower::new(db, self.recorder.clone()));
                }
                Err(e) => return self.db_failed(&e),
            }
        }
        let Some(follower) = &mut self.follower else {
            return;
        };
        let stats = &self.stats;
        let mut caught_up = Counts::default();
        let result = follower.poll(self.recorder.now(), &mut |table, counts| {
            stats.add(table, counts);
            caught_up.add(counts);
        });
        match result {
            Ok(()) => {
                if caught_up.rows > 0 {
                    tracing::debug!(
                        rows = caught_up.rows,
                        recorded = caught_up.recorded,
                        "read new rows"
                    );
                }
                if self.db_failing.take().is_some() {
                    tracing::info!("reading the application's database again");
                }
                LegacyStats::polled(&self.stats.database, true);
            }
            Err(e) => {
                // Reopen next time unless the application merely held its write lock.
                if !matches!(e, FollowError::Read(ReadError::Busy { .. })) {
                    self.follower = None;
                }
                self.db_failed(&e);
            }
        }
    }

    fn db_failed(&mut self, e: &dyn std::error::Error) {
        LegacyStats::polled(&self.stats.database, false);
        let message = e.to_string();
        if self.db_failing.as_ref() != Some(&message) {
            tracing::warn!(error = %message, "cannot follow the application's database");
            self.db_failing = Some(message);
        }
    }

    fn poll_locks(&mut self) {
        let Some(lock_dir) = &mut self.lock_dir else {
            return;
        };
        match lock_dir.poll(&self.recorder) {
            Ok(counts) => {
                self.stats
                    .lock_invalid
                    .fetch_add(counts.invalid, Ordering::Relaxed);
                if self.locks_failing.take().is_some() {
                    tracing::info!("reading the lock directory again");
                }
                LegacyStats::polled(&self.stats.lock_dir, true);
            }
            Err(e) => {
                LegacyStats::polled(&self.stats.lock_dir, false);
                let message = e.to_string();
                if self.locks_failing.as_ref() != Some(&message) {
                    tracing::warn!(error = %message, "cannot follow the lock directory");
                    self.locks_failing = Some(message);
                }
            }
        }
    }
}

impl Poller {
    /// Starts polling what `settings` names into `recorder` (which needs a store), counting
    /// into `stats`, and the application's `.env` file that `cove` follows.
    pub fn start(
        settings: LegacySettings,
        recorder: Recorder,
        stats: Arc<LegacyStats>,
        cove: Option<CoveWatch>,
    ) -> std::io::Result<Self> {
        let lock_dir = settings
            .lock_dir
            .as_deref()
            .map(|dir| LockDir::new(dir, settings.lock_names.clone()));
        let mut polling = Polling {
            settings,
            recorder,
            cove: cove.filter(CoveWatch::follows_a_file),
            stats,
            follower: None,
            lock_dir,
            db_failing: None,
            locks_failing: None,
        };
        let worker = Worker::spawn("legacy", move |stop| {
            while !stop.requested() {
                polling.poll_db();
                polling.poll_locks();
                if let Some(cove) = &mut polling.cove {
                    cove.poll(&polling.recorder);
                }
                stop.pause(polling.settings.poll_interval);
            }
        })?;
        Ok(Self { _worker: worker })
    }
}
