//! An open store: opening with checks and migrations, polling for what changed, and the one
//! transaction that writes a delta and reads back everything that changed since the last read.

use crate::error::StoreError;
use crate::model::changes::{Changes, Checkpoint};
use crate::model::delta::Delta;
use crate::store::options::{StoreOptions, Synchronous};
use crate::store::rows::{current_seq, read_changes, to_i64, to_u64, write};
use crate::store::schema;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use std::path::PathBuf;

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

        let version = schema::check(&conn, path)?;

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
        if version < schema::LATEST {
            schema::migrate(&mut db.conn, path, version)?;
        }
        schema::check_layout(&db.conn, path)?;
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
