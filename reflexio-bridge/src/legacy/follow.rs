//! Moving the application's new rows into the recorder exactly once. Each table has a cursor in
//! the store (the last row id read, and the newest row time counted), moved in the same
//! transaction as the events of the rows read up to it: a crash, a restart or a second reader
//! (an import next to a running bridge) neither loses nor repeats a row.

use super::db::{AppDb, ReadError, Table};
use super::timestamp::BadTimestamp;
use reflexio_otel::{Checkpoint, DurableError, Event, Recorder};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far back rows are recorded: the longest window. Older rows are read once (the cursor
/// passes them) but not recorded.
pub const HISTORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How far ahead of the clock a row's time may be: the recorder's default skew. A row further
/// ahead is a timestamp error (typically a wrong `--legacy-tz`).
pub const MAX_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Rows per committed batch: a read holds the database's shared lock only this long.
const BATCH_ROWS: usize = 10_000;

/// Why a poll stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The application's database could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The events could not be committed to the store.
    #[error("cannot record the rows of {table}: {source}")]
    Store {
        /// The table being read.
        table: Table,
        /// Why.
        source: DurableError,
    },
}

/// What a batch of rows of one table came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Rows read.
    pub rows: u64,
    /// Rows recorded as events.
    pub recorded: u64,
    /// Rows older than [`HISTORY`], not recorded.
    pub too_old: u64,
    /// Rows not recorded because their time is NULL, unparseable or too far ahead.
    pub timestamp_errors: u64,
    /// Values left out of recorded rows because they were invalid.
    pub invalid_values: u64,
    /// How far the cursor moved, in row ids.
    pub advanced: u64,
}

impl Counts {
    /// Adds `other`.
    pub fn add(&mut self, other: &Counts) {
        self.rows += other.rows;
        self.recorded += other.recorded;
        self.too_old += other.too_old;
        self.timestamp_errors += other.timestamp_errors;
        self.invalid_values += other.invalid_values;
        self.advanced += other.advanced;
    }
}

fn cursor_key(table: Table) -> String {
    format!("legacy:{table}")
}

fn newest_key(table: Table) -> String {
    format!("legacy:{table}:newest")
}

/// The fingerprint of the row at the cursor.
fn last_key(table: Table) -> String {
    format!("legacy:{table}:last")
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Rows of one kind of bad time in a batch.
#[derive(Debug, Default)]
struct BadTime {
    rows: u64,
    first: Option<(i64, String)>,
}

impl BadTime {
    fn add(&mut self, rowid: i64, value: impl FnOnce() -> String) {
        self.rows += 1;
        if self.first.is_none() {
            self.first = Some((rowid, value()));
        }
    }
}

/// Rows without a usable time in a batch, by what is wrong with it.
#[derive(Debug, Default)]
struct BadTimes {
    null: BadTime,
    unparseable: BadTime,
    ahead: BadTime,
}

impl BadTimes {
    fn log(&self, table: Table) {
        for (bad, problem) in [
            (&self.null, "rows without a time skipped"),
            (
                &self.unparseable,
                "rows whose time is in no known format skipped",
            ),
            (
                &self.ahead,
                "rows more than 5 minutes in the future skipped: is --legacy-tz right?",
            ),
        ] {
            if let Some((rowid, value)) = &bad.first {
                tracing::warn!(
                    %table,
                    column = table.time_column(),
                    rows = bad.rows,
                    first_rowid = rowid,
                    first_value = %value,
                    "{problem}"
                );
            }
        }
    }
}

/// Follows the application's database into a recorder with a store.
#[derive(Debug)]
pub struct Follower {
    db: AppDb,
    recorder: Recorder,
    batch_rows: usize,
}

impl Follower {
    /// Follows `db` into `recorder`, which needs a store (the cursors live there).
    pub fn new(db: AppDb, recorder: Recorder) -> Self {
        Self {
            db,
            recorder,
            batch_rows: BATCH_ROWS,
        }
    }

    /// The database followed.
    pub fn db(&self) -> &AppDb {
        &self.db
    }

    /// Row ids left to read in each followed table: what a progress bar counts down.
    pub fn backlog(&self) -> Result<Vec<(Table, u64)>, ReadError> {
        let mut backlog = Vec::new();
        for table in Table::ALL {
            if let Some(max) = self.db.max_rowid(table)? {
                let cursor = self.recorder.checkpoint(&cursor_key(table)).unwrap_or(0);
                let left = if max >= cursor { max - cursor } else { max };
                backlog.push((table, left.unsigned_abs()));
            }
        }
        Ok(backlog)
    }

    /// Reads every table's rows added since the last poll, committing them batch by batch;
    /// `on_batch` sees each committed batch's counts. Rows older than [`HISTORY`] before `now`
    /// are passed over: the first poll of a database backfills its last 7 days.
    pub fn poll(
        &mut self,
        now: SystemTime,
        on_batch: &mut dyn FnMut(Table, &Counts),
    ) -> Result<(), FollowError> {
        if self.db.refresh_schema()? {
            log_schema(&self.db);
        }
        for table in Table::ALL {
            if self.db.follows(table) {
                self.follow(table, now, on_batch)?;
            }
        }
        Ok(())
    }

    fn follow(
        &mut self,
        table: Table,
        now: SystemTime,
        on_batch: &mut dyn FnMut(Table, &Counts),
    ) -> Result<(), FollowError> {
        let store_err = |source| FollowError::Store { table, source };
        let (cursor_key, newest_key, last_key) =
            (cursor_key(table), newest_key(table), last_key(table));
        'reread: loop {
            let mut cursor = self.recorder.checkpoint(&cursor_key);
            let mut newest = self.recorder.checkpoint(&newest_key);
            let max = self.db.max_rowid(table)?;
            // The row at the cursor is gone, or is another row than the one read: the
            // application deleted the rows read last (emptied the table, say), so new rows may
            // reuse row ids at or below the cursor. Read from the start, counting only the rows
            // newer than the newest counted.
            let mut last_seen = self.recorder.checkpoint(&last_key);
            let rereading = match cursor {
                Some(c) if c > 0 => self.db.fingerprint_at(table, c)? != last_seen,
                _ => false,
            };
            if rereading {
                tracing::warn!(
                    %table,
                    cursor = cursor.unwrap_or(0),
                    largest_row_id = max.unwrap_or(0),
                    "the last row read was deleted; reading the table again from the start, \
                     counting only rows newer than those counted before"
                );
            }
            let Some(max) = max else {
                if rereading {
                    let moved = vec![Checkpoint {
                        key: cursor_key.clone(),
                        expected: cursor,
                        value: 0,
                    }];
                    match self.recorder.record_durable_checked(&[], moved) {
                        Ok(()) => {}
                        Err(DurableError::CheckpointMoved { .. }) => {
                            self.recorder.flush().map_err(store_err)?;
                            continue 'reread;
                        }
                        Err(e) => return Err(store_err(e)),
                    }
                }
                return Ok(());
            };
            let mut after = if rereading { 0 } else { cursor.unwrap_or(0) };
            let earliest = now.checked_sub(HISTORY).unwrap_or(UNIX_EPOCH);
            let latest = now + MAX_AHEAD;
            loop {
                let mut batch: Vec<(Event, Option<SystemTime>)> = Vec::new();
                let mut counts = Counts::default();
                let mut last = after;
                let mut last_fingerprint = last_seen;
                let mut batch_newest = newest;
                // Rows without a usable time, by what is wrong: how many, and the first's row id
                // and value.
                let mut bad = BadTimes::default();
                let read = self.db.read(table, after, max, self.batch_rows, |row| {
                    last = row.rowid;
                    last_fingerprint = Some(row.fingerprint);
                    counts.rows += 1;
                    let time = match row.time {
                        Ok(t) if t > latest => {
                            if !rereading {
                                bad.ahead.add(row.rowid, || {
                                    let ahead = t.duration_since(now).unwrap_or_default();
                                    let ahead = Duration::from_secs(ahead.as_secs());
                                    format!("{} ahead", humantime::format_duration(ahead))
                                });
                                counts.timestamp_errors += 1;
                            }
                            return;
                        }
                        other => other,
                    };
                    match time {
                        Ok(t) => {
                            let us = micros(t);
                            if rereading && newest.is_some_and(|n| us <= n) {
                                return;
                            }
                            batch_newest = Some(batch_newest.map_or(us, |n| n.max(us)));
                            if t < earliest {
                                counts.too_old += 1;
                            } else {
                                counts.recorded += 1;
                                counts.invalid_values += u64::from(row.invalid_values);
                                batch.push((row.event, Some(t)));
                            }
                        }
                        // Rows read again cannot be told apart without a time: left out.
                        Err(_) if rereading => {}
                        Err(BadTimestamp::Null) => {
                            counts.timestamp_errors += 1;
                            bad.null.add(row.rowid, || "NULL".into());
                        }
                        Err(BadTimestamp::Unparseable) => {
                            counts.timestamp_errors += 1;
                            let raw = row.bad_time.unwrap_or_default();
                            bad.unparseable.add(row.rowid, || raw);
                        }
                    }
                })?;
                if read == 0 {
                    return Ok(());
                }
                counts.advanced = (last - after).unsigned_abs();
                let mut checkpoints = vec![Checkpoint {
                    key: cursor_key.clone(),
                    expected: cursor,
                    value: last,
                }];
                if let Some(value) = last_fingerprint.filter(|f| Some(*f) != last_seen) {
                    checkpoints.push(Checkpoint {
                        key: last_key.clone(),
                        expected: last_seen,
                        value,
                    });
                }
                if let Some(value) = batch_newest.filter(|n| Some(*n) != newest) {
                    checkpoints.push(Checkpoint {
                        key: newest_key.clone(),
                        expected: newest,
                        value,
                    });
                }
                match self.recorder.record_durable_checked(&batch, checkpoints) {
                    Ok(()) => {}
                    // Another reader (an import, another bridge) moved the cursor: continue
                    // from where it is now.
                    Err(DurableError::CheckpointMoved { .. }) => {
                        self.recorder.flush().map_err(store_err)?;
                        continue 'reread;
                    }
                    Err(e) => return Err(store_err(e)),
                }
                bad.log(table);
                on_batch(table, &counts);
                cursor = Some(last);
                newest = batch_newest;
                last_seen = last_fingerprint;
                after = last;
                if read < self.batch_rows {
                    return Ok(());
                }
            }
        }
    }
}

/// Logs what was found of each table.
pub fn log_schema(db: &AppDb) {
    use super::db::Found;
    for (table, found) in db.found() {
        match found {
            Found::Followed { missing } if missing.is_empty() => {
                tracing::info!(%table, "following");
            }
            Found::Followed { missing } => tracing::info!(
                %table,
                missing = missing.join(", "),
                "following; the missing columns count as unknown"
            ),
            Found::Missing => tracing::warn!(%table, "no such table; its metrics stay at zero"),
            Found::Unusable(why) => {
                tracing::warn!(%table, "not followed: {why}; its metrics stay at zero");
            }
        }
    }
}
