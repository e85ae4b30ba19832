//! An open store: opening with checks and migrations, polling for what changed, and the one
//! transaction that writes a delta and reads back everything that changed since the last read.

use crate::error::{StoreError, StoreErrorKind};
use crate::event::IdempotencyKey;
use crate::model::changes::{Changes, Checkpoint, Keyed};
use crate::model::delta::Delta;
use crate::store::files::{FileId, StoreFiles, sqlite_error};
use crate::store::options::{StoreOptions, Synchronous};
use crate::store::rows::{
    claim_key, current_seq, fold_tables, prune_keys, read_changes, to_i64, to_u64, write,
};
use crate::store::schema;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Pages of write-ahead log after which a commit copies the log into the database
/// (`PRAGMA wal_autocheckpoint`): 256 pages of 4 KiB, 1 MiB.
pub(crate) const WAL_CHECKPOINT_PAGES: i64 = 256;

/// The size, in bytes, the write-ahead log is cut back to once it was copied into the database
/// (`PRAGMA journal_size_limit`): it never stays larger than 1 MiB plus one commit.
pub(crate) const WAL_SIZE_LIMIT: i64 = 1 << 20;

/// An open store.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
    /// The last sequence number read; `None` before the first read.
    seen: Option<u64>,
    /// Nothing was ever written to it when it was opened.
    fresh: bool,
    /// The files opened, to notice one deleted or replaced underneath.
    files: StoreFiles,
    busy_timeout: Duration,
    idempotency_window: Duration,
    max_idempotency_keys: u64,
}

/// A durable batch of a group commit, sent with an idempotency key.
#[derive(Debug)]
pub(crate) struct KeyedBatch {
    pub(crate) key: IdempotencyKey,
    /// Its events.
    pub(crate) accepted: u64,
    pub(crate) delta: Delta,
}

/// The error of a store whose files are no longer the ones open.
fn gone(path: &Path, what: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Gone,
        path,
        format!(
            "{what}; nothing more is acknowledged until a store can be written at this path \
             again, and then everything kept in memory is written to it"
        ),
    )
}

impl Db {
    /// Opens (creating if needed) and checks the store: integrity, that it is a Reflexio
    /// metrics store, schema version, histogram layout. Runs pending migrations.
    pub(crate) fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        let path = options.path.as_path();
        let err = |e| sqlite_error(path, e);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(options.busy_timeout).map_err(err)?;

        let version = schema::check(&conn, path)?;

        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
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
            files: StoreFiles::capture(path),
            busy_timeout: options.busy_timeout,
            idempotency_window: options.idempotency_window,
            max_idempotency_keys: options.max_idempotency_keys,
        };
        if version < schema::LATEST {
            schema::migrate(&mut db.conn, path, version, schema::LATEST)?;
        }
        schema::check_layout(&db.conn, path)?;
        let folded = fold_tables(&mut db.conn).map_err(err)?;
        if folded > 0 {
            tracing::warn!(
                path = %path.display(),
                tables = folded,
                "the store held more tables than are kept; their counts were moved to the overflow row"
            );
        }
        let seq: i64 = db
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))
            .map_err(db.err())?;
        db.fresh = seq == 0;
        // The log and its index exist once the store was read.
        db.files = StoreFiles::capture(path);
        Ok(db)
    }

    /// Closes a store whose files were deleted or replaced (see
    /// [`StoreFiles::remove_orphans`]).
    pub(crate) fn close_gone(self) {
        let Self { conn, files, .. } = self;
        drop(conn);
        files.remove_orphans();
    }

    /// The identity of the database file opened.
    pub(crate) fn file_id(&self) -> Option<FileId> {
        self.files.main()
    }

    /// Checks that the files open are still the store's files at its path.
    fn check_files(files: &mut StoreFiles, path: &Path) -> Result<(), StoreError> {
        files.check().map_err(|what| gone(path, &what))
    }

    /// Checks the whole file for damage (`PRAGMA quick_check`), through a connection of its
    /// own: this one's page cache may hold intact copies of pages damaged on disk.
    pub(crate) fn quick_check(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        Self::check_files(&mut self.files, &path)?;
        let err = |e| sqlite_error(&path, e);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(self.busy_timeout).map_err(err)?;
        let mut stmt = conn.prepare("PRAGMA quick_check(5)").map_err(err)?;
        let found: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if found == ["ok"] {
            Ok(())
        } else {
            Err(StoreError::new(
                StoreErrorKind::Corrupt,
                &path,
                format!(
                    "the periodic integrity check found damage: {}; nothing more is \
                     acknowledged: move the file aside and a fresh store gets everything kept in \
                     memory",
                    found.join("; ")
                ),
            ))
        }
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |e| sqlite_error(&self.path, e)
    }

    /// The connection, for tests that look at or tamper with the file.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Whether nothing had ever been written to the store when it was opened.
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Reads everything that changed since the last read, or `None` if nothing did.
    pub(crate) fn poll(&mut self) -> Result<Option<Changes>, StoreError> {
        let path = self.path.clone();
        Self::check_files(&mut self.files, &path)?;
        let err = |e| sqlite_error(&path, e);
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
        self.commit(Cow::Borrowed(delta), checkpoints, Vec::new(), None, prune)
            .map(|r| r.map(|(changes, _)| changes))
    }

    /// Writes `delta` and each keyed batch whose key is new (or forgotten) in one transaction,
    /// keeping their keys; a batch whose key was claimed within the window is not written, and
    /// its outcome says what the key holds. Keys past the window, then past the bound, are
    /// forgotten at `now`. Returns what changed and each keyed batch's outcome, in order.
    pub(crate) fn commit_keyed(
        &mut self,
        delta: Delta,
        keyed: Vec<KeyedBatch>,
        now: SystemTime,
        prune: (u64, u64),
    ) -> Result<(Changes, Vec<Keyed>), StoreError> {
        match self.commit(Cow::Owned(delta), &[], keyed, Some(now), prune)? {
            Ok(done) => Ok(done),
            Err(_) => unreachable!("no checkpoint to move"),
        }
    }

    fn commit(
        &mut self,
        mut delta: Cow<'_, Delta>,
        checkpoints: &[Checkpoint],
        keyed: Vec<KeyedBatch>,
        now: Option<SystemTime>,
        prune: (u64, u64),
    ) -> Result<Result<(Changes, Vec<Keyed>), Checkpoint>, StoreError> {
        let path = self.path.clone();
        let err = |e| sqlite_error(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
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
        let mut outcomes = Vec::with_capacity(keyed.len());
        if let Some(now) = now {
            for batch in keyed {
                let outcome = claim_key(
                    &tx,
                    &batch.key,
                    batch.accepted,
                    now,
                    self.idempotency_window,
                )
                .map_err(err)?;
                if outcome == Keyed::Recorded {
                    delta.to_mut().merge(batch.delta);
                }
                outcomes.push(outcome);
            }
            let dropped = prune_keys(&tx, now, self.idempotency_window, self.max_idempotency_keys)
                .map_err(err)?;
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    max = self.max_idempotency_keys,
                    "idempotency keys dropped before their window ended to stay within the \
                     bound: a batch sent again with one of them would be recorded again"
                );
            }
        }
        write(&tx, &delta, seq).map_err(err)?;
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
        // Not into a file deleted or replaced meanwhile: rolled back, the batch is refused.
        Self::check_files(&mut self.files, &path)?;
        tx.commit().map_err(err)?;
        self.seen = Some(to_u64(seq));
        Ok(Ok((changes, outcomes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreErrorKind;
    use crate::model::bucket::FactBucket;
    use std::path::Path;
    use std::time::Duration;

    fn options(dir: &Path) -> StoreOptions {
        StoreOptions::new(dir.join("metrics.db")).busy_timeout(Duration::from_millis(20))
    }

    fn commit(db: &mut Db, delta: &Delta) -> Changes {
        db.commit_checked(delta, &[], (0, 0))
            .expect("committed")
            .expect("no checkpoint to move")
    }

    fn pragma(db: &Db, name: &str) -> String {
        db.conn
            .query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .expect("pragma")
    }

    /// Asserts that opening is refused with `kind`, saying `says`.
    fn refused(options: &StoreOptions, kind: StoreErrorKind, says: &str) {
        let err = Db::open(options).expect_err("refused");
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }

    #[test]
    fn a_new_file_opens_fresh_at_the_latest_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&options(dir.path())).expect("opened");
        assert!(db.is_fresh());
        assert_eq!(
            pragma(&db, "user_version"),
            format!("Integer({})", schema::LATEST)
        );
        assert_eq!(
            pragma(&db, "application_id"),
            format!("Integer({})", schema::APPLICATION_ID)
        );
        assert_eq!(pragma(&db, "journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma(&db, "synchronous"), "Integer(2)", "FULL by default");
        drop(db);
        let normal = options(dir.path()).synchronous(Synchronous::Normal);
        assert_eq!(
            pragma(&Db::open(&normal).expect("reopened"), "synchronous"),
            "Integer(1)"
        );
    }

    #[test]
    fn a_store_written_to_is_not_fresh_when_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&options(dir.path())).expect("opened");
        commit(&mut db, &Delta::default());
        drop(db);
        assert!(!Db::open(&options(dir.path())).expect("reopened").is_fresh());
    }

    #[test]
    fn a_version_1_store_is_migrated_keeping_its_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(dir.path());
        let mut conn = Connection::open(options.path()).expect("open");
        schema::migrate(&mut conn, options.path(), 0, 1).expect("version 1");
        conn.execute_batch(
            "INSERT INTO fact_minutes (minute, facts, hallucinated, non_atomic, coverage_sum, \
             cove_facts, confidence_sum, rounds_sum, seq) VALUES (100, 7, 1, 0, 0, 0, 0, 0, 1);
             UPDATE counters SET value = 7, seq = 1 WHERE name = 'facts';
             UPDATE meta SET value = 1 WHERE key = 'seq';",
        )
        .expect("version 1 rows");
        drop(conn);

        let mut db = Db::open(&options).expect("migrated");
        assert_eq!(
            pragma(&db, "user_version"),
            format!("Integer({})", schema::LATEST)
        );
        assert!(!db.is_fresh());
        let changes = db.poll().expect("read").expect("first read");
        // Schema 1 knew only facts with every verdict.
        assert_eq!(
            changes.facts,
            vec![(
                100,
                FactBucket {
                    facts: 7,
                    hallucination_assessed: 7,
                    atomicity_assessed: 7,
                    citation_assessed: 7,
                    hallucinated: 1,
                    ..FactBucket::default()
                }
            )]
        );
        assert_eq!(
            (
                changes.totals.facts,
                changes.totals.hallucination_assessed,
                changes.totals.atomicity_assessed
            ),
            (7, 7, 7)
        );
        let moved = Checkpoint {
            key: "legacy:facts".into(),
            expected: None,
            value: 3,
        };
        let changes = db
            .commit_checked(&Delta::default(), &[moved], (0, 0))
            .expect("committed")
            .expect("moved");
        assert_eq!(changes.checkpoints, vec![("legacy:facts".into(), 3)]);
    }

    #[test]
    fn a_version_2_store_counts_each_verdict_of_the_facts_it_held_as_assessed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(dir.path());
        let mut conn = Connection::open(options.path()).expect("open");
        schema::migrate(&mut conn, options.path(), 0, 2).expect("version 2");
        conn.execute_batch(
            "INSERT INTO fact_minutes (minute, facts, unassessed, hallucinated, non_atomic, \
             coverage_sum, cove_facts, confidence_sum, rounds_sum, seq) \
             VALUES (100, 7, 3, 1, 2, 3500000000, 5, 4000000000, 6, 1), \
             (101, 2, 2, 0, 0, 0, 0, 0, 0, 1);
             UPDATE counters SET value = 10, seq = 1 WHERE name = 'facts';
             UPDATE counters SET value = 6, seq = 1 WHERE name = 'unassessed';
             UPDATE meta SET value = 1 WHERE key = 'seq';",
        )
        .expect("version 2 rows");
        drop(conn);

        let mut db = Db::open(&options).expect("migrated");
        let mut changes = db.poll().expect("read").expect("first read");
        changes.facts.sort_by_key(|(m, _)| *m);
        let assessed = |n| FactBucket {
            hallucination_assessed: n,
            atomicity_assessed: n,
            citation_assessed: n,
            ..FactBucket::default()
        };
        assert_eq!(
            changes.facts,
            vec![
                (
                    100,
                    FactBucket {
                        facts: 7,
                        cove_facts: 5,
                        hallucinated: 1,
                        non_atomic: 2,
                        coverage_sum: 3_500_000_000,
                        confidence_sum: 4_000_000_000,
                        rounds_sum: 6,
                        ..assessed(4)
                    }
                ),
                (
                    101,
                    FactBucket {
                        facts: 2,
                        ..assessed(0)
                    }
                ),
            ]
        );
        assert_eq!(
            (
                changes.totals.facts,
                changes.totals.hallucination_assessed,
                changes.totals.atomicity_assessed
            ),
            (10, 4, 4)
        );
        let leftovers: i64 = db
            .conn()
            .query_row(
                "SELECT (SELECT count(*) FROM counters WHERE name = 'unassessed') + \
                 (SELECT count(*) FROM pragma_table_info('fact_minutes') \
                  WHERE name = 'unassessed')",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(
            leftovers, 0,
            "nothing of schema 2's unassessed count is left"
        );
    }

    #[test]
    fn files_this_program_cannot_use_are_refused_with_their_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(dir.path());

        drop(Db::open(&options).expect("created"));
        let conn = Connection::open(options.path()).expect("open");
        conn.pragma_update(None, "user_version", schema::LATEST + 1)
            .expect("newer version");
        refused(
            &options,
            StoreErrorKind::Incompatible,
            "is newer than this program's",
        );

        conn.pragma_update(None, "user_version", schema::LATEST)
            .expect("version back");
        conn.execute(
            "UPDATE histogram_buckets SET upper_bound = 0.42 WHERE histogram = 'coverage' \
             AND bucket = 0",
            [],
        )
        .expect("another layout");
        refused(
            &options,
            StoreErrorKind::Incompatible,
            "histogram buckets differ",
        );
        drop(conn);

        let other = options.path().with_file_name("app.db");
        Connection::open(&other)
            .and_then(|c| c.execute_batch("CREATE TABLE facts (id INTEGER PRIMARY KEY);"))
            .expect("another application's database");
        refused(
            &StoreOptions::new(&other),
            StoreErrorKind::Incompatible,
            "not a Reflexio metrics store",
        );

        let garbage = options.path().with_file_name("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192]).expect("garbage");
        refused(
            &StoreOptions::new(&garbage),
            StoreErrorKind::Corrupt,
            "not a database",
        );

        let nowhere = StoreOptions::new(dir.path().join("missing").join("metrics.db"));
        refused(&nowhere, StoreErrorKind::Io, "unable to open");
    }

    #[test]
    fn a_write_lock_held_elsewhere_is_busy_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(dir.path());
        let mut db = Db::open(&options).expect("opened");
        let other = Connection::open(options.path()).expect("open");
        other.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        let err = db
            .commit_checked(&Delta::of_facts(10, 1), &[], (0, 0))
            .expect_err("busy");
        assert_eq!(err.kind(), StoreErrorKind::Busy);
        other.execute_batch("COMMIT").expect("released");
        let changes = commit(&mut db, &Delta::of_facts(10, 1));
        assert_eq!(
            changes.totals.facts, 1,
            "the failed write left nothing behind"
        );
    }

    #[test]
    fn a_full_or_read_only_store_refuses_writes_with_their_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&options(dir.path())).expect("opened");
        let pages: i64 = db
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("pages");
        db.conn
            .pragma_update(None, "max_page_count", pages)
            .expect("cap the file");
        let mut big = Delta::default();
        for minute in 0..5_000 {
            big.merge(Delta::of_facts(minute, 1));
        }
        let err = db.commit_checked(&big, &[], (0, 0)).expect_err("full");
        assert_eq!(err.kind(), StoreErrorKind::Full);

        db.conn
            .pragma_update(None, "query_only", true)
            .expect("read-only");
        let err = db
            .commit_checked(&Delta::of_facts(1, 1), &[], (0, 0))
            .expect_err("read-only");
        assert_eq!(err.kind(), StoreErrorKind::ReadOnly);
    }

    #[test]
    fn polls_read_only_what_changed_since_the_last_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(dir.path());
        let mut a = Db::open(&options).expect("a");
        let mut b = Db::open(&options).expect("b");
        commit(&mut a, &Delta::of_facts(10, 2));
        assert!(b.poll().expect("read").is_some(), "first read");
        assert!(b.poll().expect("read").is_none(), "nothing new");
        let changes = commit(&mut b, &Delta::of_facts(11, 3));
        assert_eq!(changes.facts.len(), 1, "b saw minute 10 before");
        let changes = a.poll().expect("read").expect("b wrote");
        assert_eq!(changes.facts.iter().map(|f| f.0).collect::<Vec<_>>(), [11]);
        assert_eq!(changes.totals.facts, 5, "counters are read whole");
    }

    #[test]
    fn checkpoints_move_only_from_their_expected_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&options(dir.path())).expect("opened");
        let cp = |expected, value| Checkpoint {
            key: "legacy:facts".into(),
            expected,
            value,
        };
        let mut commit_with = |checkpoint: Checkpoint| {
            db.commit_checked(&Delta::of_facts(10, 1), &[checkpoint], (0, 0))
                .expect("no store error")
                .map(|c| (c.totals.facts, c.checkpoints))
        };
        assert_eq!(
            commit_with(cp(None, 5)),
            Ok((1, vec![("legacy:facts".into(), 5)]))
        );
        assert_eq!(commit_with(cp(None, 6)), Err(cp(None, 6)), "it exists");
        assert_eq!(commit_with(cp(Some(4), 6)), Err(cp(Some(4), 6)));
        assert_eq!(
            commit_with(cp(Some(5), 9)),
            Ok((2, vec![("legacy:facts".into(), 9)])),
            "the refused commits wrote nothing"
        );
    }

    fn keyed(key: &str, fingerprint: u8, facts: u64) -> KeyedBatch {
        KeyedBatch {
            key: IdempotencyKey::new(key)
                .expect("valid")
                .with_fingerprint([fingerprint; 4]),
            accepted: facts,
            delta: Delta::of_facts(10, facts),
        }
    }

    fn at(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + secs)
    }

    fn stored_keys(db: &Db) -> (i64, i64) {
        let rows = db
            .conn
            .query_row("SELECT count(*) FROM idempotency_keys", [], |r| r.get(0))
            .expect("rows");
        let counted = db
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'idempotency_keys'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        (rows, counted)
    }

    #[test]
    fn a_key_records_its_batch_once_and_answers_what_it_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&options(dir.path())).expect("opened");
        let (changes, outcomes) = db
            .commit_keyed(Delta::default(), vec![keyed("a", 1, 3)], at(0), (0, 0))
            .expect("committed");
        assert_eq!(outcomes, [Keyed::Recorded]);
        assert_eq!(changes.totals.facts, 3);
        // Again: the same batch is a replay, another batch under the key a conflict; neither
        // is written, while the rest of the commit is.
        let (changes, outcomes) = db
            .commit_keyed(
                Delta::of_facts(11, 1),
                vec![keyed("a", 1, 3), keyed("a", 2, 5), keyed("b", 1, 2)],
                at(60),
                (0, 0),
            )
            .expect("committed");
        assert_eq!(
            outcomes,
            [
                Keyed::Replayed {
                    accepted: 3,
                    at: at(0)
                },
                Keyed::Conflict { at: at(0) },
                Keyed::Recorded
            ]
        );
        assert_eq!(changes.totals.facts, 3 + 1 + 2);
        assert_eq!(stored_keys(&db), (2, 2));
    }

    #[test]
    fn the_same_key_twice_in_one_commit_records_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&options(dir.path())).expect("opened");
        let (changes, outcomes) = db
            .commit_keyed(
                Delta::default(),
                vec![keyed("k", 1, 4), keyed("k", 1, 4)],
                at(0),
                (0, 0),
            )
            .expect("committed");
        assert_eq!(
            outcomes,
            [
                Keyed::Recorded,
                Keyed::Replayed {
                    accepted: 4,
                    at: at(0)
                }
            ]
        );
        assert_eq!(changes.totals.facts, 4);
    }

    #[test]
    fn keys_are_forgotten_after_the_window_and_past_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(dir.path())
            .idempotency_window(Duration::from_secs(3600))
            .max_idempotency_keys(3);
        let mut db = Db::open(&options).expect("opened");
        for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            db.commit_keyed(
                Delta::default(),
                vec![keyed(key, 1, 1)],
                at(i as u64),
                (0, 0),
            )
            .expect("committed");
            assert!(stored_keys(&db).0 <= 3, "bounded");
        }
        assert_eq!(stored_keys(&db), (3, 3));
        // The oldest went first: `a` is new again, `e` is known.
        let (_, outcomes) = db
            .commit_keyed(
                Delta::default(),
                vec![keyed("a", 1, 1), keyed("e", 1, 1)],
                at(10),
                (0, 0),
            )
            .expect("committed");
        assert_eq!(outcomes[0], Keyed::Recorded);
        assert!(matches!(outcomes[1], Keyed::Replayed { .. }));
        // An hour later every key is forgotten, and `e` records again.
        let (changes, outcomes) = db
            .commit_keyed(Delta::default(), vec![keyed("e", 1, 1)], at(3611), (0, 0))
            .expect("committed");
        assert_eq!(outcomes, [Keyed::Recorded]);
        assert_eq!(changes.totals.facts, 7);
        assert_eq!(stored_keys(&db), (1, 1));
    }

    #[test]
    fn a_version_3_store_gets_the_key_table_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(dir.path());
        let mut conn = Connection::open(options.path()).expect("open");
        schema::migrate(&mut conn, options.path(), 0, 3).expect("version 3");
        conn.execute_batch(
            "UPDATE counters SET value = 9, seq = 1 WHERE name = 'facts';
             UPDATE meta SET value = 1 WHERE key = 'seq';",
        )
        .expect("version 3 rows");
        drop(conn);
        let mut db = Db::open(&options).expect("migrated");
        assert_eq!(pragma(&db, "user_version"), "Integer(4)");
        assert_eq!(stored_keys(&db), (0, 0));
        let (changes, outcomes) = db
            .commit_keyed(Delta::default(), vec![keyed("k", 1, 1)], at(0), (0, 0))
            .expect("committed");
        assert_eq!(
            (changes.totals.facts, outcomes),
            (10, vec![Keyed::Recorded])
        );
    }

    #[test]
    fn commits_prune_minutes_at_or_before_the_given_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&options(dir.path())).expect("opened");
        let mut d = Delta::of_facts(10, 1);
        d.merge(Delta::of_facts(20, 1));
        d.add_retention(
            10,
            crate::model::totals::TableLabel::Overflow,
            &crate::model::bucket::RetentionBucket::default(),
        );
        commit(&mut db, &d);
        db.commit_checked(&Delta::default(), &[], (10, 10))
            .expect("committed")
            .expect("no checkpoint");
        let count = |table: &str| -> i64 {
            db.conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!((count("fact_minutes"), count("retention_minutes")), (1, 0));
    }
}
