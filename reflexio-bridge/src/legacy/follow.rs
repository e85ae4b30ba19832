//! Moving the application's new rows into the recorder exactly once. Each table has a cursor in
//! the store, moved in the same transaction as the events of the rows read up to it: a crash, a
//! restart or a second reader (an import next to a running bridge) neither loses nor repeats a
//! row. Rows older than every window are not recorded one by one: a batch adds their counts to
//! the totals as one [`History`], in the same transaction.
//!
//! The cursor is the last row id read, a fingerprint of that row, the newest row time counted,
//! and a version that every commit moves (each commit checks it, so two readers never both
//! commit from the same cursor). When the row at the cursor is gone or is another row (the application deleted the
//! rows read last, so new rows may reuse their ids), the table is read again from the start up
//! to its largest row id at that moment, counting only rows newer than the newest counted then;
//! that reread, too, is kept in the store until it is done.

use super::db::{AppDb, ReadError, Row, Table};
use super::timestamp::BadTimestamp;
use reflexio_otel::{Checkpoint, DurableError, Event, History, Recorder, RecorderBuilder};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far back rows are recorded at their time: the longest window. Older rows count in the
/// totals only (the first poll of a database counts its whole past that way).
pub const HISTORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How far ahead of the clock a row's time may be: the recorder's default skew. A row further
/// ahead (typically a wrong `--legacy-tz`) is counted at the time of the poll, and logged.
pub const MAX_AHEAD: Duration = RecorderBuilder::DEFAULT_MAX_FUTURE_SKEW;

/// Rows per read: a read holds the database's shared lock only this long. A read that gives
/// events is committed with them.
const BATCH_ROWS: usize = 10_000;

/// Reads per commit at most, when their rows are older than the windows: their counts cost the
/// same to commit (one transaction, one sync) however many rows they stand for.
const COMMIT_READS: usize = 10;

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
    /// Rows counted: recorded at their time, or counted in the totals only.
    pub recorded: u64,
    /// Of those, rows older than [`HISTORY`]: counted in the totals only, in no window.
    pub too_old: u64,
    /// Of those, rows more than [`MAX_AHEAD`] ahead of the clock: counted at the poll's time.
    pub ahead: u64,
    /// Of those, rows whose time is NULL or unparseable: counted in the totals only, in no
    /// window.
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
        self.ahead += other.ahead;
        self.timestamp_errors += other.timestamp_errors;
        self.invalid_values += other.invalid_values;
        self.advanced += other.advanced;
    }
}

/// The store's keys of one table's cursor.
struct Keys {
    /// The last row id read.
    cursor: String,
    /// The fingerprint of the row at the cursor.
    last: String,
    /// The newest row time counted (Unix microseconds).
    newest: String,
    /// During a reread: its last row id (0 when none is under way).
    reread_to: String,
    /// During a reread: the rows up to `reread_to` count only if newer than this.
    reread_after: String,
    /// Moved by every commit, so that two readers never both commit from the same cursor.
    version: String,
}

impl Keys {
    fn new(table: Table) -> Self {
        Self {
            cursor: format!("legacy:{table}"),
            last: format!("legacy:{table}:last"),
            newest: format!("legacy:{table}:newest"),
            reread_to: format!("legacy:{table}:reread_to"),
            reread_after: format!("legacy:{table}:reread_after"),
            version: format!("legacy:{table}:version"),
        }
    }
}

/// A table's cursor as the store holds it (`None`: never set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Saved {
    cursor: Option<i64>,
    last: Option<i64>,
    newest: Option<i64>,
    reread_to: Option<i64>,
    reread_after: Option<i64>,
    version: Option<i64>,
}

impl Saved {
    fn load(recorder: &Recorder, keys: &Keys) -> Self {
        Self {
            cursor: recorder.checkpoint(&keys.cursor),
            last: recorder.checkpoint(&keys.last),
            newest: recorder.checkpoint(&keys.newest),
            reread_to: recorder.checkpoint(&keys.reread_to),
            reread_after: recorder.checkpoint(&keys.reread_after),
            version: recorder.checkpoint(&keys.version),
        }
    }

    /// The same cursor, one commit later.
    fn bumped(mut self) -> Self {
        self.version = Some(self.version.unwrap_or(0).wrapping_add(1));
        self
    }

    /// The checkpoints that move the store from `self` to `next`.
    fn moves_to(&self, next: &Saved, keys: &Keys) -> Vec<Checkpoint> {
        [
            (&keys.cursor, self.cursor, next.cursor),
            (&keys.last, self.last, next.last),
            (&keys.newest, self.newest, next.newest),
            (&keys.reread_to, self.reread_to, next.reread_to),
            (&keys.reread_after, self.reread_after, next.reread_after),
            (&keys.version, self.version, next.version),
        ]
        .into_iter()
        .filter_map(|(key, expected, value)| {
            let value = value.filter(|v| Some(*v) != expected)?;
            Some(Checkpoint {
                key: key.clone(),
                expected,
                value,
            })
        })
        .collect()
    }
}

/// The times a poll places rows by.
struct Frame {
    now: SystemTime,
    /// Rows older than this count in the totals only.
    earliest: SystemTime,
    /// Rows newer than this are ahead of the clock: counted at `now`.
    latest: SystemTime,
}

/// What the rows read until a commit add up to.
#[derive(Default)]
struct Commit {
    /// The rows within the windows (or ahead of the clock, at the poll's time), as events.
    events: Vec<(Event, Option<SystemTime>)>,
    /// The rows older than the windows, or without a usable time: in the totals only.
    history: History,
    counts: Counts,
    /// Rows without a usable time, or ahead of the clock, by what is wrong: how many, and the
    /// first's row id and value.
    bad: BadTimes,
}

impl Commit {
    /// Counts `row`, read after the cursor `next`, which it moves past the row. `reread` is
    /// `(to, newer_than)` while the table is read again after a deletion: rows up to `to` count
    /// only when newer than `newer_than`.
    fn add(&mut self, mut row: Row, frame: &Frame, reread: Option<(i64, i64)>, next: &mut Saved) {
        next.cursor = Some(row.rowid);
        self.counts.rows += 1;
        let suspect = reread.filter(|(to, _)| row.rowid <= *to);
        let t = match (row.time, suspect) {
            (Ok(t), Some((_, newer_than))) if micros(t) <= newer_than => return,
            // Ahead of the clock, it was counted at the time of a poll: whether before cannot
            // be told. Without a time, neither can it.
            (Ok(t), Some(_)) if t > frame.latest => {
                return self.bad.unknown.add(row.rowid, || "-".into());
            }
            (Err(_), Some(_)) => return self.bad.unknown.add(row.rowid, || "-".into()),
            (Ok(t), _) => t,
            (Err(error), None) => {
                // Without a time: in the totals, in no window.
                self.counts.timestamp_errors += 1;
                match error {
                    BadTimestamp::Null => self.bad.null.add(row.rowid, || "NULL".into()),
                    BadTimestamp::Unparseable => {
                        let raw = row.bad_time.take().unwrap_or_default();
                        self.bad.unparseable.add(row.rowid, || raw);
                    }
                }
                return self.count_in_totals(row);
            }
        };
        // The time it counts at: its own, or now if it is too far ahead.
        let us = micros(if t > frame.latest { frame.now } else { t });
        next.newest = Some(next.newest.map_or(us, |n| n.max(us)));
        if t < frame.earliest {
            self.counts.too_old += 1;
            self.count_in_totals(row);
        } else if t > frame.latest {
            // Never dropped for its time: counted now, and logged.
            self.counts.ahead += 1;
            self.bad.ahead.add(row.rowid, || {
                let ahead = t.duration_since(frame.now).unwrap_or_default();
                let ahead = Duration::from_secs(ahead.as_secs());
                format!("{} ahead", humantime::format_duration(ahead))
            });
            self.record(row, None);
        } else {
            self.record(row, Some(t));
        }
    }

    /// Counts `row` in the totals only.
    fn count_in_totals(&mut self, row: Row) {
        self.counts.recorded += 1;
        self.counts.invalid_values += u64::from(row.invalid_values);
        self.history
            .add(&row.event, 1)
            .unwrap_or_else(|_| unreachable!("rows are counts"));
    }

    /// Records `row` as an event at `at` (`None`: now).
    fn record(&mut self, row: Row, at: Option<SystemTime>) {
        self.counts.recorded += 1;
        self.counts.invalid_values += u64::from(row.invalid_values);
        self.events.push((row.event, at));
    }
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
    /// Read again after a deletion: maybe counted before, maybe new.
    unknown: BadTime,
}

impl BadTimes {
    fn log(&self, table: Table) {
        for (bad, problem) in [
            (
                &self.null,
                "rows without a time counted in the totals only, in no window",
            ),
            (
                &self.unparseable,
                "rows whose time is in no known format counted in the totals only, in no window",
            ),
            (
                &self.ahead,
                "rows more than 5 minutes in the future counted now, at the poll: is --legacy-tz \
                 right?",
            ),
            (
                &self.unknown,
                "rows without a usable time, or ahead of the clock, read again after a \
                 deletion: not counted (they may have been counted before)",
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
                let cursor = self
                    .recorder
                    .checkpoint(&Keys::new(table).cursor)
                    .unwrap_or(0);
                let left = if max >= cursor { max - cursor } else { max };
                backlog.push((table, left.unsigned_abs()));
            }
        }
        Ok(backlog)
    }

    /// Reads every table's rows added since the last poll, committing them batch by batch;
    /// `on_batch` sees each committed batch's counts. Rows older than [`HISTORY`] before `now`
    /// count in the totals only: the first poll of a database counts every row it holds, and
    /// fills the windows with its last 7 days.
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
        let keys = Keys::new(table);
        let frame = Frame {
            now,
            earliest: now.checked_sub(HISTORY).unwrap_or(UNIX_EPOCH),
            latest: now + MAX_AHEAD,
        };
        'reload: loop {
            let mut saved = Saved::load(&self.recorder, &keys);
            let mut next = saved.bumped();
            // Row ids at or below 0 are never assigned by SQLite: such a table counts as empty.
            let max = self.db.max_rowid(table)?.filter(|m| *m > 0);
            let cursor = saved.cursor.unwrap_or(0);
            let moved = cursor > 0 && self.db.fingerprint_at(table, cursor)? != saved.last;
            if moved {
                tracing::warn!(
                    %table,
                    cursor,
                    largest_row_id = max.unwrap_or(0),
                    "the last row read was deleted or replaced; reading the table again from the \
                     start, counting only rows newer than those counted before"
                );
                next.cursor = Some(0);
                next.reread_to = Some(max.unwrap_or(0));
                next.reread_after = Some(saved.newest.unwrap_or(i64::MIN));
            }
            // Rows up to `to` are counted only if newer than `after`.
            let reread = match (next.reread_to, next.reread_after) {
                (Some(to), Some(after)) if to > next.cursor.unwrap_or(0) => Some((to, after)),
                _ => None,
            };
            let Some(max) = max else {
                // Empty: start again from the first row the application writes.
                if moved {
                    let checkpoints = saved.moves_to(&next, &keys);
                    match self.recorder.record_durable_checked(&[], checkpoints) {
                        Ok(()) => {}
                        Err(DurableError::CheckpointMoved { .. }) => {
                            self.recorder.flush().map_err(store_err)?;
                            continue 'reload;
                        }
                        Err(e) => return Err(store_err(e)),
                    }
                }
                return Ok(());
            };
            let mut after = next.cursor.unwrap_or(0);
            loop {
                // What the rows read until the next commit add up to.
                let mut commit = Commit::default();
                // Reads of `batch_rows` until a commit is due: after a read that gave events,
                // or after `COMMIT_READS` reads of rows older than the windows, whose counts
                // cost the same to commit however many they are.
                let mut finished = false;
                let mut read_to = after;
                for _ in 0..COMMIT_READS {
                    let (read, fingerprint) =
                        self.db.read(table, read_to, max, self.batch_rows, |row| {
                            commit.add(row, &frame, reread, &mut next);
                        })?;
                    if read > 0 {
                        next.last = Some(fingerprint);
                        read_to = next.cursor.unwrap_or(read_to);
                    }
                    if read < self.batch_rows {
                        finished = true;
                        break;
                    }
                    if !commit.events.is_empty() {
                        break;
                    }
                }
                let Commit {
                    events,
                    history,
                    mut counts,
                    bad,
                } = commit;
                if counts.rows == 0 {
                    return Ok(());
                }
                counts.advanced = read_to.saturating_sub(after).unsigned_abs();
                let checkpoints = saved.moves_to(&next, &keys);
                let committed =
                    self.recorder
                        .record_durable_with_history(&events, &history, checkpoints);
                match committed {
                    Ok(()) => {}
                    // Another reader (an import, another bridge) moved the cursor: continue
                    // from where it is now.
                    Err(DurableError::CheckpointMoved { .. }) => {
                        self.recorder.flush().map_err(store_err)?;
                        continue 'reload;
                    }
                    Err(e) => return Err(store_err(e)),
                }
                bad.log(table);
                on_batch(table, &counts);
                saved = next;
                next = next.bumped();
                after = read_to;
                if finished {
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

#[cfg(test)]
mod tests {
    use super::*;
    use reflexio_otel::StoreOptions;
    use rusqlite::Connection;
    use std::path::Path;

    fn iso(t: SystemTime) -> String {
        jiff::Timestamp::try_from(t).expect("range").to_string()
    }

    /// An application database with a `transcriptions` table, and a recorder with a store.
    fn setup(dir: &Path) -> (Connection, Recorder) {
        let app = Connection::open(dir.join("app.db")).expect("open");
        app.execute_batch("CREATE TABLE transcriptions (id INTEGER PRIMARY KEY, created_at TEXT);")
            .expect("schema");
        let recorder = Recorder::builder()
            .without_upkeep_thread()
            .store(StoreOptions::new(dir.join("store.db")))
            .build();
        (app, recorder)
    }

    /// A follower reading two rows per batch, so that polls span several batches.
    fn follower(dir: &Path, recorder: &Recorder) -> Follower {
        let db = AppDb::open(&dir.join("app.db"), jiff::tz::TimeZone::UTC).expect("open");
        let mut f = Follower::new(db, recorder.clone());
        f.batch_rows = 2;
        f
    }

    fn insert(app: &Connection, t: SystemTime) {
        app.execute(
            "INSERT INTO transcriptions (created_at) VALUES (?1)",
            [iso(t)],
        )
        .expect("insert");
    }

    fn poll(dir: &Path, recorder: &Recorder, now: SystemTime) -> u64 {
        let mut recorded = 0;
        follower(dir, recorder)
            .poll(now, &mut |_, c| recorded += c.recorded)
            .expect("poll");
        recorded
    }

    #[test]
    fn old_rows_count_once_in_the_totals_and_in_no_window_whatever_the_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (app, recorder) = setup(dir.path());
        app.execute_batch(
            "CREATE TABLE facts (id INTEGER PRIMARY KEY, created_at TEXT, is_hallucination INTEGER);",
        )
        .expect("schema");
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        // 45 facts a month old (a third hallucinated), then 3 of the last hour.
        for i in 0..48u64 {
            let age = if i < 45 {
                30 * day
            } else {
                Duration::from_secs(3600)
            };
            app.execute(
                "INSERT INTO facts (created_at, is_hallucination) VALUES (?1, ?2)",
                (
                    iso(now - age + Duration::from_secs(i)),
                    i64::from(i % 3 == 0),
                ),
            )
            .expect("insert");
        }
        // Cut short after its first commit (a crash, say): ten reads of two old rows.
        let mut f = follower(dir.path(), &recorder);
        let mut first = Counts::default();
        let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f.poll(now, &mut |table, c| {
                if table == Table::Facts {
                    first = *c;
                    panic!("cut short after a committed batch");
                }
            })
        }));
        assert!(cut.is_err());
        assert_eq!(
            (first.rows, first.recorded, first.too_old),
            (20, 20, 20),
            "one commit for ten reads of old rows"
        );
        assert_eq!(recorder.snapshot().totals.facts, 20);
        // The next poll goes on from the cursor committed with those counts.
        let mut counts = Counts::default();
        follower(dir.path(), &recorder)
            .poll(now, &mut |table, c| {
                if table == Table::Facts {
                    counts.add(c);
                }
            })
            .expect("poll");
        assert_eq!((counts.rows, counts.too_old), (28, 25));
        let s = recorder.snapshot();
        assert_eq!((s.totals.facts, s.totals.hallucination_assessed), (48, 48));
        assert_eq!(s.totals.hallucinated, 16);
        assert_eq!((s.facts_24h.facts, s.facts_24h.hallucinated), (3, 1));
        // Read once: nothing more.
        assert_eq!(poll(dir.path(), &recorder, now), 0);
        assert_eq!(recorder.snapshot().totals.facts, 48);
    }

    #[test]
    fn a_reread_cut_short_continues_where_it_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (app, recorder) = setup(dir.path());
        let now = SystemTime::now();
        for i in 0..5u64 {
            insert(&app, now - Duration::from_secs(600 - i * 10));
        }
        assert_eq!(poll(dir.path(), &recorder, now), 5);
        // The app deletes its newest row: the table is read again.
        app.execute("DELETE FROM transcriptions WHERE rowid = 5", [])
            .expect("delete");
        // The reread stops after its first batch (a crash, say).
        let mut f = follower(dir.path(), &recorder);
        let mut batches = 0;
        let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f.poll(now, &mut |_, _| {
                batches += 1;
                panic!("cut short after a committed batch");
            })
        }));
        assert!(cut.is_err());
        assert_eq!(batches, 1);
        // The next poll goes on with the reread: the rows left were counted before.
        assert_eq!(poll(dir.path(), &recorder, now), 0);
        insert(&app, now);
        assert_eq!(poll(dir.path(), &recorder, now), 1);
        assert_eq!(recorder.snapshot().totals.transcriptions, 6);
    }

    #[test]
    fn a_reread_counts_every_new_row_whatever_the_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (app, recorder) = setup(dir.path());
        let now = SystemTime::now();
        let base = now - Duration::from_secs(600);
        for i in 0..3u64 {
            insert(&app, base + Duration::from_secs(i));
        }
        assert_eq!(poll(dir.path(), &recorder, now), 3);
        app.execute("DELETE FROM transcriptions WHERE rowid = 3", [])
            .expect("delete");
        // Three new rows, newer than any counted; the last two share a second and fall into
        // different batches.
        for s in [100u64, 200, 200] {
            insert(&app, base + Duration::from_secs(s));
        }
        assert_eq!(poll(dir.path(), &recorder, now), 3);
        assert_eq!(poll(dir.path(), &recorder, now), 0);
        assert_eq!(recorder.snapshot().totals.transcriptions, 6);
    }

    #[test]
    fn two_readers_of_one_store_count_each_row_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (app, a) = setup(dir.path());
        // Another process on the same store: its view of the cursors lags behind `a`'s.
        let b = Recorder::builder()
            .without_upkeep_thread()
            .store(StoreOptions::new(dir.path().join("store.db")))
            .build();
        let now = SystemTime::now();
        for i in 0..3u64 {
            insert(&app, now - Duration::from_secs(60 - i));
        }
        assert_eq!(poll(dir.path(), &a, now), 3);
        assert_eq!(poll(dir.path(), &b, now), 0);
        // The app replaces its newest row; both readers see the row at the cursor changed.
        app.execute("DELETE FROM transcriptions WHERE rowid = 3", [])
            .expect("delete");
        insert(&app, now);
        let (mut fa, mut fb) = (follower(dir.path(), &a), follower(dir.path(), &b));
        let mut counted = 0;
        fa.poll(now, &mut |_, c| counted += c.recorded)
            .expect("poll");
        fb.poll(now, &mut |_, c| counted += c.recorded)
            .expect("poll");
        assert_eq!(counted, 1);
        a.flush().expect("flush");
        assert_eq!(a.snapshot().totals.transcriptions, 4);
    }

    #[test]
    fn an_emptied_table_is_read_from_its_first_new_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (app, recorder) = setup(dir.path());
        let now = SystemTime::now();
        for i in 0..4u64 {
            insert(&app, now - Duration::from_secs(100 - i));
        }
        assert_eq!(poll(dir.path(), &recorder, now), 4);
        app.execute("DELETE FROM transcriptions", [])
            .expect("delete");
        assert_eq!(poll(dir.path(), &recorder, now), 0);
        // Row ids start again at 1.
        insert(&app, now);
        insert(&app, now);
        assert_eq!(poll(dir.path(), &recorder, now), 2);
        assert_eq!(poll(dir.path(), &recorder, now), 0);
    }
}
