//! The SQLite store: schema and migrations, opening with checks, and the one transaction that
//! writes a delta and reads back everything that changed since the last read.
//!
//! Every value is additive (`value = value + excluded.value`), so processes that share a file
//! merge by addition. Each write transaction takes the next number of a global sequence and
//! stamps the rows it touches with it; a reader asks for the rows stamped after the last number
//! it saw and so learns the union of every process's writes without re-reading the window.

use crate::delta::Delta;
use crate::event::{CoveConfig, Fraction, Name};
use crate::histogram::{CONFIDENCE, COVERAGE, HistogramCounts, Layout, ROUNDS};
use crate::locks::HeldLock;
use crate::snapshot::{TableLabel, Totals};
use crate::window::{FactBucket, RetentionBucket};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// `PRAGMA application_id` of a Reflexio metrics store ("RFLX").
const APPLICATION_ID: i32 = 0x5246_4c58;

/// Forward migrations; the store's `PRAGMA user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('seq', 0), ('locks_seq', 0);

    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL DEFAULT 0,
        seq   INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    INSERT INTO counters (name) VALUES
        ('transcriptions'), ('facts'), ('digests'), ('hallucinated'), ('atomicity_violations'),
        ('coverage_sum'), ('confidence_sum'), ('rounds_sum');

    CREATE TABLE histogram_buckets (
        histogram   TEXT NOT NULL,
        bucket      INTEGER NOT NULL,
        upper_bound REAL,
        count       INTEGER NOT NULL DEFAULT 0,
        seq         INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (histogram, bucket)
    ) WITHOUT ROWID;

    CREATE TABLE fact_minutes (
        minute         INTEGER PRIMARY KEY,
        facts          INTEGER NOT NULL,
        hallucinated   INTEGER NOT NULL,
        non_atomic     INTEGER NOT NULL,
        coverage_sum   INTEGER NOT NULL,
        cove_facts     INTEGER NOT NULL,
        confidence_sum INTEGER NOT NULL,
        rounds_sum     INTEGER NOT NULL,
        seq            INTEGER NOT NULL
    );
    CREATE INDEX fact_minutes_by_seq ON fact_minutes (seq);

    CREATE TABLE retention_minutes (
        minute          INTEGER PRIMARY KEY,
        operations      INTEGER NOT NULL,
        deleted_records INTEGER NOT NULL,
        errors          INTEGER NOT NULL,
        seq             INTEGER NOT NULL
    );
    CREATE INDEX retention_minutes_by_seq ON retention_minutes (seq);

    -- name '' is the overflow series; ids give the order tables were first seen in
    CREATE TABLE retention_tables (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        operations      INTEGER NOT NULL,
        deleted_records INTEGER NOT NULL,
        errors          INTEGER NOT NULL,
        seq             INTEGER NOT NULL
    );

    CREATE TABLE cove_config (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        enabled   INTEGER NOT NULL,
        threshold INTEGER NOT NULL,
        at_ns     INTEGER NOT NULL,
        seq       INTEGER NOT NULL
    );

    CREATE TABLE locks (
        name           TEXT NOT NULL,
        holder         TEXT NOT NULL,
        pid            INTEGER,
        host           TEXT,
        acquired_at_ns INTEGER NOT NULL,
        PRIMARY KEY (name, holder)
    ) WITHOUT ROWID;
    ",
    // 2: facts whose quality is not known; checkpoints of sources read exactly once.
    "
    ALTER TABLE fact_minutes ADD COLUMN unassessed INTEGER NOT NULL DEFAULT 0;
    INSERT INTO counters (name) VALUES ('unassessed');

    CREATE TABLE checkpoints (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL,
        seq   INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
];

/// The histograms and their layouts, as stored in `histogram_buckets`.
const HISTOGRAMS: [(&str, &Layout); 3] = [
    ("coverage", &COVERAGE),
    ("confidence", &CONFIDENCE),
    ("rounds", &ROUNDS),
];

/// How SQLite makes a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is on disk before it returns (`PRAGMA synchronous = FULL`): survives power
    /// loss. The default.
    #[default]
    Full,
    /// Commits survive a crash of the process, not of the machine
    /// (`PRAGMA synchronous = NORMAL`).
    Normal,
}

/// Where the store lives and how it is written.
#[derive(Debug, Clone)]
#[must_use]
pub struct StoreOptions {
    pub(crate) path: PathBuf,
    pub(crate) flush_interval: Duration,
    pub(crate) busy_timeout: Duration,
    pub(crate) synchronous: Synchronous,
}

impl StoreOptions {
    /// A store at `path` (created if missing), flushed every second.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            flush_interval: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
        }
    }

    /// How often recorded events are written. Default: 1 second. A crash loses at most this
    /// much of the events not recorded through the durable path.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a write waits for another process's lock on the file before it fails (and is
    /// retried at the next interval). Default: 5 seconds.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How durable each commit is. Default: [`Synchronous::Full`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What kind of trouble the store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Another process held the file's lock for longer than the busy timeout.
    Busy,
    /// The disk (or the file's size limit) is full.
    Full,
    /// The file or its directory cannot be written.
    ReadOnly,
    /// The file is damaged, or not a database.
    Corrupt,
    /// The file is a database, but not a Reflexio metrics store this version can use.
    Incompatible,
    /// The file cannot be opened or read.
    Io,
    /// Anything else.
    Other,
}

impl StoreErrorKind {
    /// Every kind, in the order of the `kind` label values.
    pub const ALL: [StoreErrorKind; 7] = [
        StoreErrorKind::Busy,
        StoreErrorKind::Full,
        StoreErrorKind::ReadOnly,
        StoreErrorKind::Corrupt,
        StoreErrorKind::Incompatible,
        StoreErrorKind::Io,
        StoreErrorKind::Other,
    ];

    /// The value of the `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Busy => "busy",
            StoreErrorKind::Full => "full",
            StoreErrorKind::ReadOnly => "read_only",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Incompatible => "incompatible",
            StoreErrorKind::Io => "io",
            StoreErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The store could not be opened, read or written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("metrics store {}: {kind}: {message}", path.display())]
pub struct StoreError {
    kind: StoreErrorKind,
    path: PathBuf,
    message: String,
}

impl StoreError {
    pub(crate) fn new(kind: StoreErrorKind, path: &Path, message: impl Into<String>) -> Self {
        Self {
            kind,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreErrorKind::Busy,
            Some(ErrorCode::DiskFull) => StoreErrorKind::Full,
            Some(ErrorCode::ReadOnly) => StoreErrorKind::ReadOnly,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreErrorKind::Corrupt,
            Some(
                ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::PermissionDenied,
            ) => StoreErrorKind::Io,
            _ => StoreErrorKind::Other,
        };
        Self::new(kind, path, e.to_string())
    }

    /// What kind of trouble it is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A position in a source read exactly once (a row id of an application's table, say), moved
/// in the same transaction as the events read up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which source, e.g. `legacy:facts`.
    pub key: String,
    /// The value it holds now, as last read (`None`: it does not exist yet).
    pub expected: Option<i64>,
    /// The value to move it to.
    pub value: i64,
}

/// Everything read back from the store: the window minutes stamped after the last read, and
/// all of the small tables.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) facts: Vec<(u64, FactBucket)>,
    pub(crate) retention: Vec<(u64, RetentionBucket)>,
    pub(crate) totals: Totals,
    pub(crate) histograms: HistogramCounts,
    /// In the order the store first saw each table.
    pub(crate) tables: Vec<(TableLabel, RetentionBucket)>,
    pub(crate) cove: Option<(CoveConfig, SystemTime)>,
    pub(crate) locks: Vec<HeldLock>,
    pub(crate) checkpoints: Vec<(String, i64)>,
}

fn to_i64(v: u64) -> i64 {
    v as i64
}

fn to_u64(v: i64) -> u64 {
    v as u64
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn time(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// An open store.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
    /// The last sequence number read; `None` before the first read.
    seen: Option<u64>,
    /// Nothing was ever written to it when it was opened.
    fresh: bool,
}

impl Db {
    /// Opens (creating if needed) and checks the store: integrity, that it is a Reflexio
    /// metrics store, schema version, histogram layout. Runs pending migrations.
    pub(crate) fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        let path = options.path.as_path();
        let err = |e| StoreError::sqlite(path, e);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(options.busy_timeout).map_err(err)?;

        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                path,
                format!("integrity check failed: {check}"),
            ));
        }
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(err)?;
        let fresh = app_id == 0 && version == 0 && objects == 0;
        if !fresh && app_id != APPLICATION_ID {
            return Err(StoreError::new(
                StoreErrorKind::Incompatible,
                path,
                "the file is a database but not a Reflexio metrics store; refusing to write into it",
            ));
        }
        let latest = MIGRATIONS.len() as i64;
        if version > latest {
            return Err(StoreError::new(
                StoreErrorKind::Incompatible,
                path,
                format!(
                    "schema version {version} is newer than this program's ({latest}); upgrade it"
                ),
            ));
        }

        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(err)?;

        let mut db = Self {
            conn,
            path: path.to_owned(),
            seen: None,
            fresh: false,
        };
        if version < latest {
            db.migrate(version)?;
        }
        db.check_layout()?;
        let seq: i64 = db
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))
            .map_err(db.err())?;
        db.fresh = seq == 0;
        Ok(db)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |e| StoreError::sqlite(&self.path, e)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        // Another process may have migrated while this one waited for the lock.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(now.max(from) as usize) {
            tx.execute_batch(sql).map_err(err)?;
            if i == 0 {
                let mut insert = tx
                    .prepare(
                        "INSERT INTO histogram_buckets (histogram, bucket, upper_bound) \
                         VALUES (?1, ?2, ?3)",
                    )
                    .map_err(err)?;
                for (name, layout) in HISTOGRAMS {
                    for bucket in 0..=layout.bounds.len() {
                        insert
                            .execute(params![name, bucket as i64, layout.bounds.get(bucket)])
                            .map_err(err)?;
                    }
                }
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The stored histogram buckets must be the ones this program counts in.
    fn check_layout(&self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT histogram, bucket, upper_bound FROM histogram_buckets")
            .map_err(self.err())?;
        let mut stored: Vec<(String, i64, Option<f64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        stored.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut expected: Vec<(String, i64, Option<f64>)> = HISTOGRAMS
            .iter()
            .flat_map(|(name, layout)| {
                (0..=layout.bounds.len())
                    .map(move |b| (name.to_string(), b as i64, layout.bounds.get(b).copied()))
            })
            .collect();
        expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        if stored == expected {
            Ok(())
        } else {
            Err(StoreError::new(
                StoreErrorKind::Incompatible,
                &self.path,
                "the store's histogram buckets differ from this program's",
            ))
        }
    }

    /// Whether nothing had ever been written to the store when it was opened.
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Reads everything that changed since the last read, or `None` if nothing did.
    pub(crate) fn poll(&mut self) -> Result<Option<Changes>, StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let seq = current_seq(&tx).map_err(err)?;
        if self.seen == Some(seq) {
            return Ok(None);
        }
        let changes = read_changes(&tx, self.seen.unwrap_or(0)).map_err(err)?;
        tx.finish().map_err(err)?;
        self.seen = Some(seq);
        Ok(Some(changes))
    }

    /// Moves each checkpoint from the value it is expected to hold to its new one, writes
    /// `delta`, prunes window minutes at or before `prune`, and reads back what changed, all in
    /// one transaction. If a checkpoint holds another value (another process moved it),
    /// nothing is written and that checkpoint is returned.
    pub(crate) fn commit_checked(
        &mut self,
        delta: &Delta,
        checkpoints: &[Checkpoint],
        prune: (u64, u64),
    ) -> Result<Result<Changes, Checkpoint>, StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        for cp in checkpoints {
            let moved = match cp.expected {
                None => tx.execute(
                    "INSERT INTO checkpoints (key, value, seq) VALUES (?1, ?2, 0) \
                     ON CONFLICT (key) DO NOTHING",
                    params![cp.key, cp.value],
                ),
                Some(expected) => tx.execute(
                    "UPDATE checkpoints SET value = ?2 WHERE key = ?1 AND value = ?3",
                    params![cp.key, cp.value, expected],
                ),
            }
            .map_err(err)?;
            if moved != 1 {
                return Ok(Err(cp.clone()));
            }
        }
        let seq: i64 = tx
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        write(&tx, delta, seq).map_err(err)?;
        tx.execute(
            "DELETE FROM fact_minutes WHERE minute <= ?1",
            [to_i64(prune.0)],
        )
        .map_err(err)?;
        tx.execute(
            "DELETE FROM retention_minutes WHERE minute <= ?1",
            [to_i64(prune.1)],
        )
        .map_err(err)?;
        let changes = read_changes(&tx, self.seen.unwrap_or(0)).map_err(err)?;
        tx.commit().map_err(err)?;
        self.seen = Some(to_u64(seq));
        Ok(Ok(changes))
    }
}

fn current_seq(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    tx.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(to_u64)
}

fn write(tx: &Transaction<'_>, d: &Delta, seq: i64) -> rusqlite::Result<()> {
    let mut facts = tx.prepare_cached(
        "INSERT INTO fact_minutes (minute, facts, hallucinated, non_atomic, coverage_sum, \
         cove_facts, confidence_sum, rounds_sum, seq, unassessed) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (minute) DO UPDATE SET facts = facts + excluded.facts, \
         unassessed = unassessed + excluded.unassessed, \
         hallucinated = hallucinated + excluded.hallucinated, \
         non_atomic = non_atomic + excluded.non_atomic, \
         coverage_sum = coverage_sum + excluded.coverage_sum, \
         cove_facts = cove_facts + excluded.cove_facts, \
         confidence_sum = confidence_sum + excluded.confidence_sum, \
         rounds_sum = rounds_sum + excluded.rounds_sum, seq = excluded.seq",
    )?;
    for (minute, b) in &d.facts {
        facts.execute(params![
            to_i64(*minute),
            to_i64(b.facts),
            to_i64(b.hallucinated),
            to_i64(b.non_atomic),
            to_i64(b.coverage_sum),
            to_i64(b.cove_facts),
            to_i64(b.confidence_sum),
            to_i64(b.rounds_sum),
            seq,
            to_i64(b.unassessed)
        ])?;
    }
    let mut retention = tx.prepare_cached(
        "INSERT INTO retention_minutes (minute, operations, deleted_records, errors, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (minute) DO UPDATE SET \
         operations = operations + excluded.operations, \
         deleted_records = deleted_records + excluded.deleted_records, \
         errors = errors + excluded.errors, seq = excluded.seq",
    )?;
    for (minute, b) in &d.retention {
        retention.execute(params![
            to_i64(*minute),
            to_i64(b.operations),
            to_i64(b.deleted_records),
            to_i64(b.errors),
            seq
        ])?;
    }

    // Cumulative sums of fractions (in billionths) can outgrow SQLite's signed 64-bit integers,
    // where SQL addition would turn them into floats; add them here, wrapping like the
    // in-memory counters do, under the write lock this transaction holds.
    let mut read_counter = tx.prepare_cached("SELECT value FROM counters WHERE name = ?1")?;
    let mut write_counter =
        tx.prepare_cached("UPDATE counters SET value = ?2, seq = ?3 WHERE name = ?1")?;
    let h = &d.histograms;
    for (name, delta) in [
        ("transcriptions", d.totals.transcriptions),
        ("facts", d.totals.facts),
        ("unassessed", d.totals.unassessed),
        ("digests", d.totals.digests),
        ("hallucinated", d.totals.hallucinated),
        ("atomicity_violations", d.totals.atomicity_violations),
        ("coverage_sum", h.coverage.sum),
        ("confidence_sum", h.confidence.sum),
        ("rounds_sum", h.rounds.sum),
    ] {
        if delta == 0 {
            continue;
        }
        let current: i64 = read_counter.query_row([name], |r| r.get(0))?;
        let updated = to_u64(current).wrapping_add(delta);
        write_counter.execute(params![name, to_i64(updated), seq])?;
    }
    let mut bucket = tx.prepare_cached(
        "UPDATE histogram_buckets SET count = count + ?3, seq = ?4 \
         WHERE histogram = ?1 AND bucket = ?2 AND ?3 != 0",
    )?;
    let counts: [(&str, &[u64]); 3] = [
        ("coverage", &h.coverage.buckets),
        ("confidence", &h.confidence.buckets),
        ("rounds", &h.rounds.buckets),
    ];
    for (name, buckets) in counts {
        for (i, c) in buckets.iter().enumerate() {
            bucket.execute(params![name, i as i64, to_i64(*c), seq])?;
        }
    }

    let mut table = tx.prepare_cached(
        "INSERT INTO retention_tables (name, operations, deleted_records, errors, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET \
         operations = operations + excluded.operations, \
         deleted_records = deleted_records + excluded.deleted_records, \
         errors = errors + excluded.errors, seq = excluded.seq",
    )?;
    for (label, b) in &d.tables {
        let name = match label {
            TableLabel::Table(n) => n.as_str(),
            TableLabel::Overflow => "",
        };
        table.execute(params![
            name,
            to_i64(b.operations),
            to_i64(b.deleted_records),
            to_i64(b.errors),
            seq
        ])?;
    }

    if let Some((config, at)) = d.cove {
        tx.execute(
            "INSERT INTO cove_config (id, enabled, threshold, at_ns, seq) VALUES (1, ?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled, \
             threshold = excluded.threshold, at_ns = excluded.at_ns, seq = excluded.seq \
             WHERE excluded.at_ns >= cove_config.at_ns",
            params![config.enabled, to_i64(config.threshold.nanos()), nanos(at), seq],
        )?;
    }

    if !d.locks.is_empty() {
        let mut hold = tx.prepare_cached(
            "INSERT OR REPLACE INTO locks (name, holder, pid, host, acquired_at_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut release = tx.prepare_cached("DELETE FROM locks WHERE name = ?1 AND holder = ?2")?;
        for ((name, holder), change) in &d.locks {
            match change {
                Some(l) => hold.execute(params![
                    name.as_str(),
                    holder.as_str(),
                    l.pid,
                    l.host.as_ref().map(Name::as_str),
                    nanos(l.acquired_at)
                ])?,
                None => release.execute(params![name.as_str(), holder.as_str()])?,
            };
        }
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'locks_seq'",
            [],
        )?;
    }
    Ok(())
}

fn read_changes(tx: &Transaction<'_>, since: u64) -> rusqlite::Result<Changes> {
    let since = to_i64(since);
    let mut c = Changes::default();
    let get = |r: &rusqlite::Row<'_>, i: usize| r.get::<_, i64>(i).map(to_u64);

    let mut stmt = tx.prepare_cached(
        "SELECT minute, facts, hallucinated, non_atomic, coverage_sum, cove_facts, \
         confidence_sum, rounds_sum, unassessed FROM fact_minutes WHERE seq > ?1",
    )?;
    c.facts = stmt
        .query_map([since], |r| {
            Ok((
                get(r, 0)?,
                FactBucket {
                    facts: get(r, 1)?,
                    unassessed: get(r, 8)?,
                    hallucinated: get(r, 2)?,
                    non_atomic: get(r, 3)?,
                    coverage_sum: get(r, 4)?,
                    cove_facts: get(r, 5)?,
                    confidence_sum: get(r, 6)?,
                    rounds_sum: get(r, 7)?,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;

    let mut stmt = tx.prepare_cached(
        "SELECT minute, operations, deleted_records, errors FROM retention_minutes WHERE seq > ?1",
    )?;
    c.retention = stmt
        .query_map([since], |r| {
            Ok((
                get(r, 0)?,
                RetentionBucket {
                    operations: get(r, 1)?,
                    deleted_records: get(r, 2)?,
                    errors: get(r, 3)?,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;

    let mut stmt = tx.prepare_cached("SELECT name, value FROM counters")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let value = get(r, 1)?;
        let (t, h) = (&mut c.totals, &mut c.histograms);
        match r.get_ref(0)?.as_str()? {
            "transcriptions" => t.transcriptions = value,
            "facts" => t.facts = value,
            "unassessed" => t.unassessed = value,
            "digests" => t.digests = value,
            "hallucinated" => t.hallucinated = value,
            "atomicity_violations" => t.atomicity_violations = value,
            "coverage_sum" => h.coverage.sum = value,
            "confidence_sum" => h.confidence.sum = value,
            "rounds_sum" => h.rounds.sum = value,
            _ => {}
        }
    }

    let mut stmt = tx.prepare_cached("SELECT histogram, bucket, count FROM histogram_buckets")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (i, count) = (get(r, 1)? as usize, get(r, 2)?);
        let h = &mut c.histograms;
        let buckets: &mut [u64] = match r.get_ref(0)?.as_str()? {
            "coverage" => &mut h.coverage.buckets,
            "confidence" => &mut h.confidence.buckets,
            "rounds" => &mut h.rounds.buckets,
            _ => continue,
        };
        if let Some(b) = buckets.get_mut(i) {
            *b = count;
        }
    }

    let mut stmt = tx.prepare_cached(
        "SELECT name, operations, deleted_records, errors FROM retention_tables ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name = r.get_ref(0)?.as_str()?;
        let label = if name.is_empty() {
            TableLabel::Overflow
        } else {
            match Name::new(name) {
                Ok(n) => TableLabel::Table(n),
                Err(_) => TableLabel::Overflow,
            }
        };
        c.tables.push((
            label,
            RetentionBucket {
                operations: get(r, 1)?,
                deleted_records: get(r, 2)?,
                errors: get(r, 3)?,
            },
        ));
    }

    c.cove = tx
        .query_row(
            "SELECT enabled, threshold, at_ns FROM cove_config WHERE id = 1",
            [],
            |r| {
                let threshold = Fraction::new(get(r, 1)? as f64 / 1e9).unwrap_or(Fraction::ZERO);
                Ok((
                    CoveConfig {
                        enabled: r.get(0)?,
                        threshold,
                    },
                    time(r.get(2)?),
                ))
            },
        )
        .optional()?;

    let mut stmt = tx.prepare_cached("SELECT key, value FROM checkpoints")?;
    c.checkpoints = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;

    let mut stmt =
        tx.prepare_cached("SELECT name, holder, pid, host, acquired_at_ns FROM locks")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (Ok(name), Ok(holder)) = (
            Name::new(r.get_ref(0)?.as_str()?),
            Name::new(r.get_ref(1)?.as_str()?),
        ) else {
            continue;
        };
        let host: Option<String> = r.get(3)?;
        c.locks.push(HeldLock {
            name,
            holder,
            pid: r.get(2)?,
            host: host.and_then(|h| Name::new(&h).ok()),
            acquired_at: time(r.get(4)?),
        });
    }
    Ok(c)
}
