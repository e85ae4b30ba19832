//! The application's database, opened read-only: which of Reflexio's tables and columns it has,
//! and its rows, by row id, turned into events.

use super::timestamp::{BadTimestamp, TimestampColumn};
use jiff::tz::TimeZone;
use reflexio_otel::{CoveResult, Event, Fact, Fraction, Name, RetentionRun};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a read waits for the application to finish a write before the poll gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// One of the application's tables that the bridge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `transcriptions(id, created_at, …)`: one transcription per row.
    Transcriptions,
    /// `facts(id, created_at, is_hallucination, is_atomic, citation_coverage, cove_confidence,
    /// cove_verification_rounds, …)`: one fact per row.
    Facts,
    /// `digests(id, date, created_at, …)`: one digest per row.
    Digests,
    /// `retention_audit_log(id, table_name, operation, record_count, executed_at, dry_run,
    /// error_message, …)`: one retention run per row.
    RetentionAuditLog,
}

impl Table {
    /// Every table, in the order they are read.
    pub const ALL: [Table; 4] = [
        Table::Transcriptions,
        Table::Facts,
        Table::Digests,
        Table::RetentionAuditLog,
    ];

    /// Its name in the database.
    pub fn name(self) -> &'static str {
        match self {
            Table::Transcriptions => "transcriptions",
            Table::Facts => "facts",
            Table::Digests => "digests",
            Table::RetentionAuditLog => "retention_audit_log",
        }
    }

    /// The column holding each row's time.
    pub(crate) fn time_column(self) -> &'static str {
        match self {
            Table::RetentionAuditLog => "executed_at",
            _ => "created_at",
        }
    }

    /// The columns read besides the time; any of them may be missing.
    fn value_columns(self) -> &'static [&'static str] {
        match self {
            Table::Transcriptions | Table::Digests => &[],
            Table::Facts => &[
                "is_hallucination",
                "is_atomic",
                "citation_coverage",
                "cove_confidence",
                "cove_verification_rounds",
            ],
            Table::RetentionAuditLog => &["table_name", "record_count", "dry_run", "error_message"],
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The application held a write lock for longer than the busy timeout.
    #[error(
        "{path} is locked by a writer (waited {}); retrying at the next poll",
        humantime::format_duration(BUSY_TIMEOUT)
    )]
    Busy {
        /// The database.
        path: PathBuf,
    },
    /// Anything else: the file is missing, unreadable or not a database.
    #[error("cannot read {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

impl ReadError {
    fn new(path: &Path, source: rusqlite::Error) -> Self {
        let busy = matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        if busy {
            ReadError::Busy { path: path.into() }
        } else {
            ReadError::Sqlite {
                path: path.into(),
                source,
            }
        }
    }
}

/// What the bridge found of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The table does not exist (yet).
    Missing,
    /// It exists but cannot be followed, and why.
    Unusable(String),
    /// It is followed; these of its value columns are missing (read as NULL).
    Followed {
        /// Missing value columns.
        missing: Vec<&'static str>,
    },
}

/// A followed table: how to read it.
#[derive(Debug)]
struct Reader {
    time: TimestampColumn,
    /// Which of the table's value columns exist.
    present: Vec<bool>,
    /// `SELECT rowid, time, id, values… WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid LIMIT ?3`.
    select: String,
    /// `SELECT time, id WHERE rowid = ?1`.
    identify: String,
}

/// One row, turned into an event (or not).
#[derive(Debug)]
pub(crate) struct Row {
    /// Its row id.
    pub(crate) rowid: i64,
    /// Its time, or why it has none.
    pub(crate) time: Result<SystemTime, BadTimestamp>,
    /// The event it stands for.
    pub(crate) event: Event,
    /// How many of its values were invalid (out of range, of the wrong type) and left out.
    pub(crate) invalid_values: u32,
    /// Its raw time value, kept only when it could not be read, for the log.
    pub(crate) bad_time: Option<String>,
    /// Tells it from another row that later takes its row id.
    pub(crate) fingerprint: i64,
}

/// A fingerprint of a row's time and id (FNV-1a over their types and bytes), stable across
/// processes and versions.
fn fingerprint(values: [ValueRef<'_>; 2]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for v in values {
        match v {
            ValueRef::Null => eat(&[0]),
            ValueRef::Integer(i) => {
                eat(&[1]);
                eat(&i.to_le_bytes());
            }
            ValueRef::Real(r) => {
                eat(&[2]);
                eat(&r.to_bits().to_le_bytes());
            }
            ValueRef::Text(t) => {
                eat(&[3]);
                eat(t);
                eat(&[0xff]);
            }
            ValueRef::Blob(b) => {
                eat(&[4]);
                eat(b);
                eat(&[0xff]);
            }
        }
    }
    hash.cast_signed()
}

/// The application's database, opened read-only.
pub struct AppDb {
    conn: Connection,
    path: PathBuf,
    zone: TimeZone,
    schema_version: Option<i64>,
    tables: Vec<(Table, Found, Option<Reader>)>,
    /// Retention table names seen, so that each is validated and allocated once.
    names: std::collections::HashMap<String, Name>,
}

impl fmt::Debug for AppDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppDb")
            .field("path", &self.path)
            .field("tables", &self.found())
            .finish_non_exhaustive()
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl AppDb {
    /// Opens `path` read-only (never creating or writing it), reading times without an offset
    /// in `zone`, and looks at its schema.
    pub fn open(path: &Path, zone: TimeZone) -> Result<Self, ReadError> {
        let err = |e| ReadError::new(path, e);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let mut db = Self {
            conn,
            path: path.into(),
            zone,
            schema_version: None,
            tables: Vec::new(),
            names: std::collections::HashMap::new(),
        };
        db.refresh_schema()?;
        Ok(db)
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was found of each table.
    pub fn found(&self) -> Vec<(Table, Found)> {
        self.tables
            .iter()
            .map(|(t, f, _)| (*t, f.clone()))
            .collect()
    }

    /// Looks at the schema again if the application changed it since; returns whether it did.
    pub fn refresh_schema(&mut self) -> Result<bool, ReadError> {
        let err = |e| ReadError::new(&self.path, e);
        let version: i64 = self
            .conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .map_err(err)?;
        if self.schema_version == Some(version) {
            return Ok(false);
        }
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            let (found, reader) = self.inspect(table).map_err(err)?;
            tables.push((table, found, reader));
        }
        self.tables = tables;
        self.schema_version = Some(version);
        Ok(true)
    }

    fn inspect(&self, table: Table) -> rusqlite::Result<(Found, Option<Reader>)> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, dflt_value FROM pragma_table_info(?1)")?;
        let columns: Vec<(String, Option<String>)> = stmt
            .query_map([table.name()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if columns.is_empty() {
            return Ok((Found::Missing, None));
        }
        let has = |name: &str| columns.iter().find(|(c, _)| c.eq_ignore_ascii_case(name));
        let Some((_, default)) = has(table.time_column()) else {
            let why = format!("it has no `{}` column", table.time_column());
            return Ok((Found::Unusable(why), None));
        };
        let defaults_to_utc = default.as_deref().is_some_and(is_utc_default);
        // The row's `id`, if the table has one, tells a row from another that took its row id.
        let id = if has("id").is_some() {
            quote("id")
        } else {
            "NULL".into()
        };
        let mut select = format!("SELECT rowid, {}, {id}", quote(table.time_column()));
        let mut missing = Vec::new();
        let mut present = Vec::new();
        for column in table.value_columns() {
            present.push(has(column).is_some());
            if has(column).is_some() {
                select.push_str(", ");
                select.push_str(&quote(column));
            } else {
                select.push_str(", NULL");
                missing.push(*column);
            }
        }
        select.push_str(&format!(
            " FROM {} WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid LIMIT ?3",
            quote(table.name())
        ));
        // A table without row ids (WITHOUT ROWID) cannot be followed by them; any other
        // error (the application holding a lock, say) is the poll's.
        if let Err(e) = self.conn.prepare(&select) {
            if e.to_string().contains("rowid") {
                let why = format!("it cannot be read by row id: {e}");
                return Ok((Found::Unusable(why), None));
            }
            return Err(e);
        }
        let identify = format!(
            "SELECT {}, {id} FROM {} WHERE rowid = ?1",
            quote(table.time_column()),
            quote(table.name())
        );
        let reader = Reader {
            time: TimestampColumn::new(self.zone.clone(), defaults_to_utc),
            present,
            select,
            identify,
        };
        Ok((Found::Followed { missing }, Some(reader)))
    }

    fn reader(&self, table: Table) -> Option<&Reader> {
        self.tables
            .iter()
            .find(|(t, _, _)| *t == table)
            .and_then(|(_, _, r)| r.as_ref())
    }

    /// Whether `table` is followed.
    pub fn follows(&self, table: Table) -> bool {
        self.reader(table).is_some()
    }

    /// The largest row id of `table` (`None` if it is empty or not followed).
    pub fn max_rowid(&self, table: Table) -> Result<Option<i64>, ReadError> {
        if !self.follows(table) {
            return Ok(None);
        }
        let sql = format!("SELECT max(rowid) FROM {}", quote(table.name()));
        let err = |e| ReadError::new(&self.path, e);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        stmt.query_row([], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map(Option::flatten)
            .map_err(err)
    }

    /// The fingerprint of `table`'s row `rowid`: `None` if there is no such row.
    pub(crate) fn fingerprint_at(
        &self,
        table: Table,
        rowid: i64,
    ) -> Result<Option<i64>, ReadError> {
        let Some(reader) = self.reader(table) else {
            return Ok(None);
        };
        let err = |e| ReadError::new(&self.path, e);
        let mut stmt = self.conn.prepare_cached(&reader.identify).map_err(err)?;
        stmt.query_row([rowid], |r| Ok(fingerprint([r.get_ref(0)?, r.get_ref(1)?])))
            .optional()
            .map_err(err)
    }

    /// Reads up to `limit` rows of `table` with row ids in `(after, upto]`, in row id order,
    /// and hands each to `f`. Returns how many were read.
    pub(crate) fn read(
        &mut self,
        table: Table,
        after: i64,
        upto: i64,
        limit: usize,
        mut f: impl FnMut(Row),
    ) -> Result<usize, ReadError> {
        let path = self.path.clone();
        let err = |e| ReadError::new(&path, e);
        let Some(reader) = self
            .tables
            .iter()
            .find(|(t, _, _)| *t == table)
            .and_then(|(_, _, r)| r.as_ref())
        else {
            return Ok(0);
        };
        let names = &mut self.names;
        let mut stmt = self.conn.prepare_cached(&reader.select).map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query((after, upto, limit)).map_err(err)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(err)? {
            n += 1;
            let rowid: i64 = r.get(0).map_err(err)?;
            let raw_time = r.get_ref(1).map_err(err)?;
            let fingerprint = fingerprint([raw_time, r.get_ref(2).map_err(err)?]);
            let time = reader.time.read(raw_time);
            let bad_time = match time {
                Err(BadTimestamp::Unparseable) => Some(describe(raw_time)),
                _ => None,
            };
            // `None`: the table has no such column.
            let mut values = [None; 5];
            for (i, v) in values.iter_mut().enumerate().take(reader.present.len()) {
                if reader.present[i] {
                    *v = Some(r.get_ref(i + 3).map_err(err)?);
                }
            }
            let mut invalid = 0;
            let event = to_event(table, &values, &mut invalid, names);
            f(Row {
                rowid,
                time,
                event,
                invalid_values: invalid,
                bad_time,
                fingerprint,
            });
        }
        Ok(n)
    }
}

/// Whether a column default writes SQLite's current UTC time: `CURRENT_TIMESTAMP`, or
/// `datetime('now')` (not `datetime('now', 'localtime')`).
fn is_utc_default(default: &str) -> bool {
    let d: String = default
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| {
            if c == '"' {
                '\''
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let d = d.trim_start_matches('(').trim_end_matches(')');
    d == "current_timestamp" || d == "datetime('now'"
}

/// A value as the log shows it.
fn describe(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("a {}-byte blob", b.len()),
    }
}

/// A value the application could have written for a flag: 0/1, or the words true/false.
fn flag(v: ValueRef<'_>) -> Result<Option<bool>, ()> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(0) => Ok(Some(false)),
        ValueRef::Integer(1) => Ok(Some(true)),
        ValueRef::Real(r) if r == 0.0 || r == 1.0 => Ok(Some(r == 1.0)),
        ValueRef::Text(t) => match t.trim_ascii() {
            b"0" => Ok(Some(false)),
            b"1" => Ok(Some(true)),
            t if t.eq_ignore_ascii_case(b"false") => Ok(Some(false)),
            t if t.eq_ignore_ascii_case(b"true") => Ok(Some(true)),
            _ => Err(()),
        },
        _ => Err(()),
    }
}

fn number(v: ValueRef<'_>) -> Result<Option<f64>, ()> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(i as f64)),
        ValueRef::Real(r) => Ok(Some(r)),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or(()),
        ValueRef::Blob(_) => Err(()),
    }
}

/// A whole number (an integral real counts).
fn whole(v: ValueRef<'_>) -> Result<Option<i64>, ()> {
    match number(v)? {
        None => Ok(None),
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Ok(Some(x as i64)),
        Some(_) => Err(()),
    }
}

/// Counts an invalid value and leaves it out.
fn valid<T>(value: Result<Option<T>, ()>, invalid: &mut u32) -> Option<T> {
    value.unwrap_or_else(|()| {
        *invalid += 1;
        None
    })
}

/// `v` holds the table's value columns, `None` for one the table does not have.
fn to_event(
    table: Table,
    v: &[Option<ValueRef<'_>>; 5],
    invalid: &mut u32,
    names: &mut std::collections::HashMap<String, Name>,
) -> Event {
    let value = |i: usize| v[i].unwrap_or(ValueRef::Null);
    match table {
        Table::Transcriptions => Event::Transcription,
        Table::Digests => Event::Digest,
        Table::Facts => {
            // Each column is a verdict of its own: a NULL or invalid one leaves the others.
            let hallucinated = valid(flag(value(0)), invalid);
            let atomic = valid(flag(value(1)), invalid);
            let coverage = valid(number(value(2)), invalid).and_then(|c| {
                let fraction = Fraction::new(c).ok();
                if fraction.is_none() {
                    *invalid += 1;
                }
                fraction
            });
            let confidence = valid(number(value(3)), invalid);
            let rounds = valid(whole(value(4)), invalid);
            let cove = match (confidence, rounds) {
                (Some(c), Some(r)) => {
                    let result = u32::try_from(r)
                        .ok()
                        .and_then(|r| CoveResult::new(c, r).ok());
                    if result.is_none() {
                        *invalid += 1;
                    }
                    result
                }
                _ => None,
            };
            Event::Fact(Fact {
                hallucinated,
                atomic,
                citation_coverage: coverage,
                cove,
            })
        }
        Table::RetentionAuditLog => {
            let name = match v[0] {
                // Without the column, every run counts under `unknown`.
                None => None,
                Some(ValueRef::Text(t)) => {
                    let name = std::str::from_utf8(t).ok().and_then(|t| {
                        if let Some(name) = names.get(t) {
                            return Some(name.clone());
                        }
                        let name = Name::new(t).ok()?;
                        names.insert(t.to_owned(), name.clone());
                        Some(name)
                    });
                    if name.is_none() {
                        *invalid += 1;
                    }
                    name
                }
                Some(_) => {
                    *invalid += 1;
                    None
                }
            };
            let deleted = match valid(whole(value(1)), invalid) {
                Some(n) if n >= 0 => n.unsigned_abs(),
                Some(_) => {
                    *invalid += 1;
                    0
                }
                None => 0,
            };
            // Deleted records count only for `dry_run = 0`: NULL is not 0. Without the column,
            // no run is a dry run.
            let dry_run = match v[2] {
                None => false,
                Some(ValueRef::Null) => {
                    *invalid += 1;
                    true
                }
                Some(other) => valid(flag(other), invalid).unwrap_or(true),
            };
            let error = match value(3) {
                ValueRef::Null => None,
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                other => Some(describe(other)),
            };
            Event::Retention(RetentionRun {
                table: name.unwrap_or_else(unknown_table),
                deleted_records: deleted,
                dry_run,
                error,
            })
        }
    }
}

/// The table label of retention rows without a usable table name.
fn unknown_table() -> Name {
    static UNKNOWN: std::sync::OnceLock<Name> = std::sync::OnceLock::new();
    UNKNOWN
        .get_or_init(|| Name::new("unknown").unwrap_or_else(|_| unreachable!("a valid name")))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_defaults_are_told_from_local_ones() {
        for utc in [
            "CURRENT_TIMESTAMP",
            " current_timestamp ",
            "(CURRENT_TIMESTAMP)",
            "datetime('now')",
            "(datetime( 'now' ))",
            "DATETIME(\"now\")",
        ] {
            assert!(is_utc_default(utc), "{utc}");
        }
        for local in [
            "datetime('now', 'localtime')",
            "CURRENT_DATE",
            "'2026-01-01'",
            "",
        ] {
            assert!(!is_utc_default(local), "{local}");
        }
    }

    #[test]
    fn values_are_read_as_the_app_writes_them() {
        assert_eq!(flag(ValueRef::Integer(1)), Ok(Some(true)));
        assert_eq!(flag(ValueRef::Text(b" False ")), Ok(Some(false)));
        assert_eq!(flag(ValueRef::Null), Ok(None));
        assert_eq!(flag(ValueRef::Integer(2)), Err(()));
        assert_eq!(flag(ValueRef::Text(b"yes")), Err(()));
        assert_eq!(number(ValueRef::Text(b"0.95")), Ok(Some(0.95)));
        assert_eq!(number(ValueRef::Blob(b"1")), Err(()));
        assert_eq!(whole(ValueRef::Real(3.0)), Ok(Some(3)));
        assert_eq!(whole(ValueRef::Real(2.5)), Err(()));
    }

    #[test]
    fn tables_without_row_ids_are_reported_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.db");
        Connection::open(&path)
            .expect("open")
            .execute_batch(
                "CREATE TABLE facts (id TEXT PRIMARY KEY, created_at TEXT) WITHOUT ROWID;
                 CREATE TABLE digests (id TEXT PRIMARY KEY, created_at TEXT);",
            )
            .expect("schema");
        let db = AppDb::open(&path, TimeZone::UTC).expect("open");
        let found: std::collections::BTreeMap<_, _> = db.found().into_iter().collect();
        assert!(
            matches!(&found[&Table::Facts], Found::Unusable(why) if why.contains("row id")),
            "{found:?}"
        );
        assert_eq!(found[&Table::Digests], Found::Followed { missing: vec![] });
        assert_eq!(found[&Table::Transcriptions], Found::Missing);
        assert!(!db.follows(Table::Facts) && db.follows(Table::Digests));
    }
}
