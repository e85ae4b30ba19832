//! The store's schema: its forward migrations, and the checks a file must pass before it is used
//! (integrity, that it is a Reflexio metrics store, a schema version this program knows, the
//! histogram layout it counts in).

use crate::error::{StoreError, StoreErrorKind};
use crate::model::histogram::{CONFIDENCE, COVERAGE, Layout, ROUNDS};
use crate::store::files::sqlite_error;
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::Path;

/// `PRAGMA application_id` of a Reflexio metrics store ("RFLX").
pub(crate) const APPLICATION_ID: i32 = 0x5246_4c58;

/// Forward migrations; the store's `PRAGMA user_version` is how many have run.
pub(crate) const MIGRATIONS: &[&str] = &[
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
    // 3: each quality verdict counted on its own. Until now a fact was assessed on all three
    // verdicts or on none, so each verdict's count is the facts that were not unassessed.
    "
    ALTER TABLE fact_minutes ADD COLUMN hallucination_assessed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE fact_minutes ADD COLUMN atomicity_assessed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE fact_minutes ADD COLUMN citation_assessed INTEGER NOT NULL DEFAULT 0;
    UPDATE fact_minutes SET
        hallucination_assessed = facts - unassessed,
        atomicity_assessed = facts - unassessed,
        citation_assessed = facts - unassessed;
    ALTER TABLE fact_minutes DROP COLUMN unassessed;

    INSERT INTO counters (name, value, seq)
        SELECT verdict.name, facts.value - unassessed.value, max(facts.seq, unassessed.seq)
        FROM (SELECT 'hallucination_assessed' AS name UNION ALL SELECT 'atomicity_assessed')
            AS verdict,
            counters AS facts, counters AS unassessed
        WHERE facts.name = 'facts' AND unassessed.name = 'unassessed';
    DELETE FROM counters WHERE name = 'unassessed';
    ",
    // 4: the idempotency keys of durable batches, each with its batch's fingerprint and result,
    // kept for a window and bounded in number (their count kept in `meta`).
    "
    CREATE TABLE idempotency_keys (
        key         TEXT PRIMARY KEY,
        fingerprint BLOB NOT NULL,
        accepted    INTEGER NOT NULL,
        at_ns       INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_keys_by_time ON idempotency_keys (at_ns);
    INSERT INTO meta (key, value) VALUES ('idempotency_keys', 0);
    ",
];

/// The histograms and their layouts, as stored in `histogram_buckets`.
pub(crate) const HISTOGRAMS: [(&str, &Layout); 3] = [
    ("coverage", &COVERAGE),
    ("confidence", &CONFIDENCE),
    ("rounds", &ROUNDS),
];

/// The schema version this program writes: how many migrations there are.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Checks a just-opened file before anything is written to it: that it is intact, and either
/// empty or a Reflexio metrics store of a schema version this program knows. Returns its
/// version (0 for an empty file).
pub(crate) fn check(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let err = |e| sqlite_error(path, e);
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
    if version > LATEST {
        return Err(StoreError::new(
            StoreErrorKind::Incompatible,
            path,
            format!("schema version {version} is newer than this program's ({LATEST}); upgrade it"),
        ));
    }
    Ok(version)
}

/// Runs the migrations after version `from` up to version `to`, in one transaction.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    from: i64,
    to: i64,
) -> Result<(), StoreError> {
    let err = |e| sqlite_error(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    // Another process may have migrated while this one waited for the lock.
    let now: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let pending = MIGRATIONS.iter().enumerate().take(to as usize);
    for (i, sql) in pending.skip(now.max(from) as usize) {
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

/// Checks that the stored histogram buckets are the ones this program counts in.
pub(crate) fn check_layout(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |e| sqlite_error(path, e);
    let mut stmt = conn
        .prepare("SELECT histogram, bucket, upper_bound FROM histogram_buckets")
        .map_err(err)?;
    let mut stored: Vec<(String, i64, Option<f64>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
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
            path,
            "the store's histogram buckets differ from this program's",
        ))
    }
}
