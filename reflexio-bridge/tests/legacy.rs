//! Following an existing deployment: fixture databases written exactly as the Python app writes
//! them (its timestamp shapes, with and without a fraction of a second, in a zone east and one
//! west of UTC; partial verdicts; retention runs; rows of every age, so that the first poll
//! counts the database's whole past), followed by the real bridge, and the scraped values
//! compared with values counted by hand from the fixture's own record of what it wrote. Also
//! values the app does not write, missing tables and columns, rows deleted by the app, a writer
//! holding its lock, `import`, lock directories and the app's CoVe settings.

mod common;

use common::process::dead_pid;
use common::{BIN, Bridge, eventually};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rusqlite::Connection;
use rusqlite::types::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// UTC+05:00 all year, as the app's own deployment: a local time misread as UTC lies 5 hours
/// in the future.
const EAST: &str = "Asia/Tashkent";
/// UTC-05:00 all year: a local time misread as UTC lies 5 hours in the past.
const WEST: &str = "America/Bogota";
const POLL: &str = "100ms";
const WAIT: Duration = Duration::from_secs(30);

fn hours(h: f64) -> SignedDuration {
    SignedDuration::from_secs_f64(h * 3600.0)
}

/// Ages chosen so that reading a time 5 hours off moves the row across a window edge, and rows
/// older than every window, which count in the totals only.
fn ages() -> Vec<SignedDuration> {
    vec![
        SignedDuration::from_mins(10),
        hours(2.0),
        hours(20.0),
        hours(23.5),
        hours(27.0),
        hours(72.0),
        hours(7.0 * 24.0 - 3.0),
        hours(7.0 * 24.0 + 3.0),
        hours(8.0 * 24.0),
        hours(30.0 * 24.0),
        hours(400.0 * 24.0),
    ]
}

/// How a row's time is written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// `datetime.now(timezone.utc).isoformat()`: `2026-11-30T03:18:43.319067+00:00`, or
    /// `2026-11-30T03:18:43+00:00` when the microsecond is 0 (`transcriptions.created_at`).
    UtcIso { whole: bool },
    /// `datetime.now()` through sqlite3's default adapter, local: `2026-11-30 08:19:18.549622`,
    /// or `2026-11-30 08:19:18` when the microsecond is 0 (`facts.created_at`,
    /// `retention_audit_log.executed_at`).
    LocalStr { whole: bool },
    /// SQLite's `CURRENT_TIMESTAMP`, UTC: `2026-11-30 03:18:43` (`digests.created_at`, which
    /// nothing in the app writes).
    CurrentTimestamp,
    /// With the local offset: `2026-02-06T21:38:15.637037+05:00` (other writers).
    Offset,
    /// ISO 8601 without an offset, local: `2026-02-06T21:38:15.637037` (other writers).
    IsoLocal,
}

/// A row's time as written: a format, or something that is no time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    At(SignedDuration, Format),
    Null,
    Garbage,
    /// Three hours ahead, offset included: no zone makes it valid, and it is counted at the
    /// poll's time.
    Future,
}

impl When {
    fn value(self, now: Timestamp, zone: &TimeZone) -> Value {
        match self {
            When::At(age, format) => {
                let mut at = now - age;
                let whole = matches!(
                    format,
                    Format::UtcIso { whole: true }
                        | Format::LocalStr { whole: true }
                        | Format::CurrentTimestamp
                );
                if whole {
                    // Python's `str()` and `isoformat()` drop a fraction of exactly 0.
                    at = Timestamp::from_second(at.as_second()).expect("range");
                } else if at.subsec_microsecond() == 0 {
                    // ... and print six digits of any other.
                    at += SignedDuration::from_micros(1);
                }
                let (tz, pattern) = match format {
                    Format::UtcIso { whole: false } => {
                        (TimeZone::UTC, "%Y-%m-%dT%H:%M:%S%.6f+00:00")
                    }
                    Format::UtcIso { whole: true } => (TimeZone::UTC, "%Y-%m-%dT%H:%M:%S+00:00"),
                    Format::LocalStr { whole: false } => (zone.clone(), "%Y-%m-%d %H:%M:%S%.6f"),
                    Format::LocalStr { whole: true } => (zone.clone(), "%Y-%m-%d %H:%M:%S"),
                    Format::CurrentTimestamp => (TimeZone::UTC, "%Y-%m-%d %H:%M:%S"),
                    Format::Offset => (zone.clone(), "%Y-%m-%dT%H:%M:%S%.6f%:z"),
                    Format::IsoLocal => (zone.clone(), "%Y-%m-%dT%H:%M:%S%.6f"),
                };
                Value::Text(at.to_zoned_datetime(tz).strftime(pattern).to_string())
            }
            When::Null => Value::Null,
            When::Garbage => Value::Text("last Tuesday".into()),
            When::Future => Value::Text((now + hours(3.0)).to_string()),
        }
    }

    /// In the 24-hour window: within it, or ahead of the clock (counted at the poll).
    fn in_24h(self) -> bool {
        match self {
            When::At(age, _) => age < hours(24.0),
            When::Future => true,
            _ => false,
        }
    }

    /// In the 7-day window, likewise.
    fn in_7d(self) -> bool {
        match self {
            When::At(age, _) => age <= hours(7.0 * 24.0),
            When::Future => true,
            _ => false,
        }
    }

    fn bad(self) -> bool {
        matches!(self, When::Null | When::Garbage)
    }
}

/// A fact row: its time, quality and CoVe columns as written, and what the bridge should make
/// of them. Each quality column is a verdict of its own.
#[derive(Debug, Clone)]
struct FactRow {
    when: When,
    columns: [Value; 5],
    hallucinated: Option<bool>,
    atomic: Option<bool>,
    coverage: Option<f64>,
    /// (confidence, rounds) if verified.
    cove: Option<(f64, u32)>,
    invalid: u64,
}

/// A fact as the app writes one: INTEGER 0/1 flags, REAL coverage and confidence, INTEGER
/// rounds, any of them NULL; `variant` picks one of nine.
fn fact_row(when: When, variant: usize) -> FactRow {
    use Value::{Integer as I, Null as N, Real as R};
    let (columns, (hallucinated, atomic, coverage), cove, invalid) = match variant % 9 {
        0 => (
            [I(0), I(1), R(0.98), R(0.9), I(2)],
            (Some(false), Some(true), Some(0.98)),
            Some((0.9, 2)),
            0,
        ),
        1 => (
            [I(1), I(0), R(0.5), N, N],
            (Some(true), Some(false), Some(0.5)),
            None,
            0,
        ),
        // No quality known, but a CoVe result.
        2 => (
            [N, N, N, R(0.7), I(1)],
            (None, None, None),
            Some((0.7, 1)),
            0,
        ),
        // A coverage of 1.5: that verdict is left out, the other two count.
        3 => (
            [I(0), I(1), R(1.5), R(0.8), I(3)],
            (Some(false), Some(true), None),
            Some((0.8, 3)),
            1,
        ),
        // Zero rounds: no CoVe result.
        4 => (
            [I(0), I(1), R(0.91), R(0.6), I(0)],
            (Some(false), Some(true), Some(0.91)),
            None,
            1,
        ),
        // Nothing known at all: a fact, in no quality figure.
        5 => ([N, N, N, N, N], (None, None, None), None, 0),
        // Known to be hallucinated, citation coverage NULL: a hallucination all the same.
        6 => ([I(1), N, N, N, N], (Some(true), None, None), None, 0),
        // Not atomic, with a coverage, hallucination unknown.
        7 => (
            [N, I(0), R(0.75), N, N],
            (None, Some(false), Some(0.75)),
            None,
            0,
        ),
        // An atomicity flag of 2 is left out; the hallucination verdict counts.
        _ => (
            [I(0), I(2), N, R(0.95), I(1)],
            (Some(false), None, None),
            Some((0.95, 1)),
            1,
        ),
    };
    FactRow {
        when,
        columns,
        hallucinated,
        atomic,
        coverage,
        cove,
        invalid,
    }
}

/// A retention_audit_log row and what it should count as.
#[derive(Debug, Clone)]
struct RetentionRow {
    when: When,
    table: Value,
    record_count: Value,
    dry_run: Value,
    error: Value,
    label: &'static str,
    deleted: u64,
    invalid: u64,
}

/// The application's database, and a record of everything written into it.
struct App {
    path: PathBuf,
    conn: Connection,
    zone_name: &'static str,
    zone: TimeZone,
    now: Timestamp,
    facts: Vec<FactRow>,
    transcriptions: Vec<When>,
    digests: Vec<When>,
    retention: Vec<RetentionRow>,
    ids: u64,
}

/// The app's schema: the time columns' declared defaults are `CURRENT_TIMESTAMP`, though the
/// app writes every time but the digests' itself.
const FULL_SCHEMA: &str = "
    CREATE TABLE transcriptions (
        id TEXT PRIMARY KEY, audio_path TEXT, text TEXT,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
    );
    CREATE TABLE facts (
        id TEXT PRIMARY KEY, transcription_id TEXT, content TEXT,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        is_hallucination INTEGER, is_atomic INTEGER, citation_coverage REAL,
        cove_confidence REAL, cove_verification_rounds INTEGER
    );
    CREATE TABLE digests (
        id TEXT PRIMARY KEY, date TEXT, content TEXT, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
    );
    CREATE TABLE retention_audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, table_name TEXT, operation TEXT,
        record_count INTEGER, executed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        dry_run INTEGER, error_message TEXT
    );
";

impl App {
    fn create(dir: &Path, schema: &str, zone: &'static str) -> App {
        let path = dir.join("reflexio.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(schema).expect("schema");
        App {
            path,
            conn,
            zone_name: zone,
            zone: TimeZone::get(zone).expect("zone"),
            now: Timestamp::now(),
            facts: Vec::new(),
            transcriptions: Vec::new(),
            digests: Vec::new(),
            retention: Vec::new(),
            ids: 0,
        }
    }

    fn value(&self, when: When) -> Value {
        when.value(self.now, &self.zone)
    }

    /// The age of a row written at this very moment (negative: `now` is when the app began).
    fn just_now(&self) -> SignedDuration {
        self.now.duration_since(Timestamp::now())
    }

    fn id(&mut self) -> String {
        self.ids += 1;
        format!("id-{:08}", self.ids)
    }

    fn add_fact(&mut self, row: FactRow) {
        let id = self.id();
        let [h, a, c, conf, rounds] = row.columns.clone();
        self.conn
            .execute(
                "INSERT INTO facts (id, content, created_at, is_hallucination, is_atomic, \
                 citation_coverage, cove_confidence, cove_verification_rounds) \
                 VALUES (?1, 'a fact', ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![id, self.value(row.when), h, a, c, conf, rounds],
            )
            .expect("insert fact");
        self.facts.push(row);
    }

    fn add_transcription(&mut self, when: When) {
        let id = self.id();
        self.conn
            .execute(
                "INSERT INTO transcriptions (id, text, created_at) VALUES (?1, 'hello', ?2)",
                rusqlite::params![id, self.value(when)],
            )
            .expect("insert transcription");
        self.transcriptions.push(when);
    }

    fn add_digest(&mut self, when: When) {
        let id = self.id();
        self.conn
            .execute(
                "INSERT INTO digests (id, date, content, created_at) VALUES (?1, '2026-02-06', 'd', ?2)",
                rusqlite::params![id, self.value(when)],
            )
            .expect("insert digest");
        self.digests.push(when);
    }

    fn add_retention(&mut self, row: RetentionRow) {
        self.conn
            .execute(
                "INSERT INTO retention_audit_log (table_name, operation, record_count, \
                 executed_at, dry_run, error_message) VALUES (?1, 'delete', ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    row.table,
                    row.record_count,
                    self.value(row.when),
                    row.dry_run,
                    row.error
                ],
            )
            .expect("insert retention");
        self.retention.push(row);
    }

    /// What the app writes, at every age, each time with and without a fraction of a second.
    fn fill(&mut self) {
        let mut variant = 0;
        for age in ages() {
            for whole in [false, true] {
                self.add_fact(fact_row(When::At(age, Format::LocalStr { whole }), variant));
                variant += 1;
                self.add_transcription(When::At(age, Format::UtcIso { whole }));
            }
            // Nothing in the app writes digests: SQLite's default does.
            self.add_digest(When::At(age, Format::CurrentTimestamp));
        }
        for (i, bad) in [When::Null, When::Garbage, When::Future]
            .into_iter()
            .enumerate()
        {
            self.add_fact(fact_row(bad, i));
            self.add_transcription(bad);
            self.add_digest(bad);
        }
        // The column default itself: SQLite's CURRENT_TIMESTAMP now.
        self.conn
            .execute(
                "INSERT INTO digests (id, date, content) VALUES ('by-default', 'today', 'x')",
                [],
            )
            .expect("insert");
        self.digests
            .push(When::At(SignedDuration::ZERO, Format::CurrentTimestamp));

        // The retention job: one run per table, dry or not; a table that does not exist.
        use Value::{Integer as I, Null as N, Text as T};
        let at = |h: f64, whole| When::At(hours(h), Format::LocalStr { whole });
        let missing = || T("Table does not exist".into());
        let rows = [
            (at(1.0, false), "facts", 10, 0, N, 10),
            (at(1.0, true), "transcriptions", 4, 0, N, 4),
            // A dry run deletes nothing.
            (at(2.0, false), "facts", 5, 1, N, 0),
            (at(2.0, true), "digests", 6, 1, N, 0),
            (at(21.0, false), "audio", 0, 0, missing(), 0),
            (at(72.0, true), "digests", 3, 0, N, 3),
            // Just inside the 7 days; 5 hours off, outside.
            (at(7.0 * 24.0 - 3.0, true), "facts", 8, 0, N, 8),
            (at(7.0 * 24.0 - 3.0, false), "audio", 0, 0, missing(), 0),
            // Older than the windows: in the totals only.
            (at(7.0 * 24.0 + 3.0, true), "facts", 7, 0, N, 7),
            (at(40.0 * 24.0, false), "transcriptions", 900, 0, N, 900),
            (at(40.0 * 24.0, true), "facts", 2, 1, N, 0),
        ];
        for (when, table, count, dry_run, error, deleted) in rows {
            self.add_retention(RetentionRow {
                when,
                table: T(table.into()),
                record_count: I(count),
                dry_run: I(dry_run),
                error,
                label: table,
                deleted,
                invalid: 0,
            });
        }
    }

    /// Retention runs and facts with values the app never writes: text flags and numbers,
    /// NULL or missing table names, NULL dry runs, negative counts.
    fn fill_odd_values(&mut self) {
        use Value::{Integer as I, Null as N, Real as R, Text as T};
        let at = |h: f64| When::At(hours(h), Format::LocalStr { whole: false });
        self.add_fact(FactRow {
            when: at(1.0),
            columns: [T("false".into()), T("1".into()), T("0.95".into()), N, N],
            hallucinated: Some(false),
            atomic: Some(true),
            coverage: Some(0.95),
            cove: None,
            invalid: 0,
        });
        self.add_fact(FactRow {
            when: at(50.0 * 24.0),
            columns: [T("yes".into()), R(1.0), R(-0.1), T("0.8".into()), R(2.0)],
            hallucinated: None,
            atomic: Some(true),
            coverage: None,
            cove: Some((0.8, 2)),
            invalid: 2,
        });
        let rows = [
            // No table name: counted under `unknown`.
            (at(5.0), N, I(2), I(0), N, "unknown", 2, 1),
            // dry_run NULL is not 0: its deletions do not count.
            (
                at(6.0 * 24.0),
                T("transcriptions".into()),
                N,
                N,
                N,
                "transcriptions",
                0,
                1,
            ),
            (at(1.0), T("facts".into()), I(-4), I(0), N, "facts", 0, 1),
            (
                at(9.0 * 24.0),
                T("facts".into()),
                I(3),
                T("0".into()),
                T("".into()),
                "facts",
                3,
                0,
            ),
        ];
        for (when, table, record_count, dry_run, error, label, deleted, invalid) in rows {
            self.add_retention(RetentionRow {
                when,
                table,
                record_count,
                dry_run,
                error,
                label,
                deleted,
                invalid,
            });
        }
    }

    /// The values the bridge should export, counted from what was written: every row with a
    /// time in the totals, the last 24 hours and 7 days in the windows.
    fn expected(&self) -> BTreeMap<String, f64> {
        let mut e = BTreeMap::new();
        // Every row counts in the totals; a row without a time in no window.
        let counted: Vec<&FactRow> = self.facts.iter().collect();
        let day: Vec<&FactRow> = counted
            .iter()
            .copied()
            .filter(|f| f.when.in_24h())
            .collect();
        let cove_day: Vec<(f64, u32)> = day.iter().filter_map(|f| f.cove).collect();
        let n = |v: usize| v as f64;
        let mean = |sum: f64, count: usize| if count == 0 { 0.0 } else { sum / count as f64 };
        let count =
            |rows: &[&FactRow], p: fn(&FactRow) -> bool| n(rows.iter().filter(|f| p(f)).count());
        let hallucination: Vec<bool> = day.iter().filter_map(|f| f.hallucinated).collect();
        let atomicity: Vec<bool> = day.iter().filter_map(|f| f.atomic).collect();
        let coverage: Vec<f64> = day.iter().filter_map(|f| f.coverage).collect();
        e.insert("reflexio_facts_total".into(), n(counted.len()));
        e.insert(
            "reflexio_assessed_facts_total".into(),
            count(&counted, |f| f.hallucinated.is_some()),
        );
        e.insert(
            "reflexio_hallucinated_facts_total".into(),
            count(&counted, |f| f.hallucinated == Some(true)),
        );
        e.insert(
            "reflexio_atomicity_assessed_facts_total".into(),
            count(&counted, |f| f.atomic.is_some()),
        );
        e.insert(
            "reflexio_atomicity_violations_total".into(),
            count(&counted, |f| f.atomic == Some(false)),
        );
        e.insert(
            "reflexio_citation_coverage_count".into(),
            count(&counted, |f| f.coverage.is_some()),
        );
        e.insert(
            "reflexio_citation_coverage_sum".into(),
            counted.iter().filter_map(|f| f.coverage).sum(),
        );
        e.insert(
            "reflexio_cove_confidence_count".into(),
            count(&counted, |f| f.cove.is_some()),
        );
        e.insert(
            "reflexio_cove_verification_rounds_sum".into(),
            counted
                .iter()
                .filter_map(|f| f.cove)
                .map(|c| f64::from(c.1))
                .sum(),
        );
        e.insert("reflexio_facts_24h".into(), n(day.len()));
        let hallucinated = n(hallucination.iter().filter(|h| **h).count());
        e.insert("reflexio_assessed_facts_24h".into(), n(hallucination.len()));
        e.insert("reflexio_hallucinated_facts_24h".into(), hallucinated);
        e.insert(
            "reflexio_hallucination_rate_24h".into(),
            mean(hallucinated, hallucination.len()),
        );
        e.insert(
            "reflexio_atomicity_assessed_facts_24h".into(),
            n(atomicity.len()),
        );
        e.insert(
            "reflexio_atomicity_violations_24h".into(),
            n(atomicity.iter().filter(|a| !**a).count()),
        );
        let coverage_sum: f64 = coverage.iter().sum();
        e.insert(
            "reflexio_citation_assessed_facts_24h".into(),
            n(coverage.len()),
        );
        e.insert("reflexio_citation_coverage_sum_24h".into(), coverage_sum);
        e.insert(
            "reflexio_citation_coverage_24h".into(),
            mean(coverage_sum, coverage.len()),
        );
        let confidence_sum: f64 = cove_day.iter().map(|c| c.0).sum();
        let rounds_sum: f64 = cove_day.iter().map(|c| f64::from(c.1)).sum();
        e.insert("reflexio_cove_verified_facts_24h".into(), n(cove_day.len()));
        e.insert("reflexio_cove_confidence_sum_24h".into(), confidence_sum);
        e.insert(
            "reflexio_cove_verification_rounds_sum_24h".into(),
            rounds_sum,
        );
        e.insert(
            "reflexio_cove_avg_confidence_24h".into(),
            mean(confidence_sum, cove_day.len()),
        );
        e.insert(
            "reflexio_cove_avg_verification_rounds_24h".into(),
            mean(rounds_sum, cove_day.len()),
        );
        e.insert(
            "reflexio_transcriptions_total".into(),
            n(self.transcriptions.len()),
        );
        e.insert("reflexio_digests_total".into(), n(self.digests.len()));

        let runs: Vec<&RetentionRow> = self.retention.iter().collect();
        let week: Vec<&RetentionRow> = runs.iter().copied().filter(|r| r.when.in_7d()).collect();
        e.insert("reflexio_retention_operations_7d".into(), n(week.len()));
        e.insert(
            "reflexio_retention_deleted_records_7d".into(),
            week.iter().map(|r| r.deleted as f64).sum(),
        );
        e.insert(
            "reflexio_retention_errors_7d".into(),
            n(week.iter().filter(|r| r.error != Value::Null).count()),
        );
        let mut labels: Vec<&str> = runs.iter().map(|r| r.label).collect();
        labels.sort_unstable();
        labels.dedup();
        for label in labels {
            let of = runs.iter().filter(|r| r.label == label);
            e.insert(
                format!("reflexio_retention_operations_total{{table=\"{label}\"}}"),
                n(of.clone().count()),
            );
            e.insert(
                format!("reflexio_retention_deleted_records_total{{table=\"{label}\"}}"),
                of.clone().map(|r| r.deleted as f64).sum(),
            );
            e.insert(
                format!("reflexio_retention_errors_total{{table=\"{label}\"}}"),
                n(of.filter(|r| r.error != Value::Null).count()),
            );
        }

        let source =
            |s: &str, name: &str| format!("reflexio_legacy_{name}_total{{source=\"{s}\"}}");
        for (s, whens) in [
            (
                "facts",
                self.facts.iter().map(|f| f.when).collect::<Vec<_>>(),
            ),
            ("transcriptions", self.transcriptions.clone()),
            ("digests", self.digests.clone()),
            (
                "retention_audit_log",
                self.retention.iter().map(|r| r.when).collect(),
            ),
        ] {
            e.insert(source(s, "rows"), n(whens.len()));
            e.insert(
                source(s, "timestamp_errors"),
                n(whens.iter().filter(|w| w.bad()).count()),
            );
        }
        e.insert(
            source("facts", "invalid_values"),
            counted.iter().map(|f| f.invalid as f64).sum(),
        );
        e.insert(
            source("retention_audit_log", "invalid_values"),
            runs.iter().map(|r| r.invalid as f64).sum(),
        );
        e
    }
}

/// The samples of `scraped` that `expected` names, side by side with the expected values.
fn compare(scraped: &BTreeMap<String, f64>, expected: &BTreeMap<String, f64>) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(name, want)| {
            let got = scraped.get(name).copied();
            let same = got.is_some_and(|g| (g - want).abs() < 1e-9 * want.abs().max(1.0));
            (!same).then(|| format!("{name}: expected {want}, got {got:?}"))
        })
        .collect()
}

fn follow(app: &App, store: &Path, extra: &[&str]) -> Bridge {
    let mut args = vec![
        "--store",
        store.to_str().expect("utf-8"),
        "--legacy-db",
        app.path.to_str().expect("utf-8"),
        "--legacy-tz",
        app.zone_name,
        "--legacy-poll-interval",
        POLL,
    ];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

fn rows(b: &Bridge, source: &str) -> f64 {
    b.scrape()
        .get(&format!(
            "reflexio_legacy_rows_total{{source=\"{source}\"}}"
        ))
        .copied()
        .unwrap_or(-1.0)
}

/// Waits until the scraped values equal `expected`; panics with the differences if they never do.
fn wait_for(b: &Bridge, expected: &BTreeMap<String, f64>) {
    let mut diff = Vec::new();
    let ok = eventually(WAIT, || {
        diff = compare(&b.scrape(), expected);
        diff.is_empty()
    });
    assert!(ok, "{}\n--- log:\n{}", diff.join("\n"), b.log_text());
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Rows of `table` in the app's database, by SQL: what the totals at adoption must equal.
fn rows_in(app: &App, table: &str) -> f64 {
    app.conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count") as f64
}

#[test]
fn the_apps_own_writes_are_counted_exactly_east_and_west_of_utc() {
    let east_dir = tempfile::tempdir().expect("tempdir");
    let west_dir = tempfile::tempdir().expect("tempdir");
    let mut east = App::create(east_dir.path(), FULL_SCHEMA, EAST);
    let mut west = App::create(west_dir.path(), FULL_SCHEMA, WEST);
    east.fill();
    west.fill();
    let before = std::fs::read(&east.path).expect("read");
    let east_store = tempfile::tempdir().expect("tempdir");
    let west_store = tempfile::tempdir().expect("tempdir");
    let store = east_store.path().join("metrics.db");
    // Both bridges at once: the first poll of each counts its database's whole past.
    let east_bridge = follow(&east, &store, &[]);
    let west_bridge = follow(&west, &west_store.path().join("metrics.db"), &[]);
    for (app, bridge) in [(&east, &east_bridge), (&west, &west_bridge)] {
        let expected = app.expected();
        wait_for(bridge, &expected);
        // Totals at adoption: every row the database holds, those without a time too.
        let s = bridge.scrape();
        assert_eq!(s["reflexio_facts_total"], rows_in(app, "facts"));
        assert_eq!(
            s["reflexio_transcriptions_total"],
            rows_in(app, "transcriptions")
        );
        assert_eq!(s["reflexio_digests_total"], rows_in(app, "digests"));
        let runs: f64 = s
            .iter()
            .filter(|(k, _)| k.starts_with("reflexio_retention_operations_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(runs, rows_in(app, "retention_audit_log"));
        assert_eq!(s["reflexio_legacy_healthy{source=\"database\"}"], 1.0);
        assert_eq!(
            s["reflexio_legacy_read_errors_total{source=\"database\"}"],
            0.0
        );
        let log = bridge.log_text();
        for table in ["transcriptions", "facts", "digests", "retention_audit_log"] {
            assert!(log.contains(&format!("following table={table}")), "{log}");
        }
        assert!(log.contains("first_value=\"last Tuesday\""), "{log}");
        assert!(log.contains("first_value=NULL"), "{log}");
        // The row ahead of the clock is counted now, and said so.
        assert!(log.contains("counted now, at the poll"), "{log}");
        // The app's own local times told from SQLite's UTC default, per column.
        for table in ["facts", "retention_audit_log"] {
            assert!(
                log.contains(&format!(
                    "its times without one are local time too, not SQLite's UTC default \
                     table={table}"
                )),
                "{log}"
            );
        }
        assert!(
            !log.contains("not SQLite's UTC default table=digests"),
            "{log}"
        );
    }
    drop(west_bridge);

    // Read-only: the application's file is untouched and nothing was created beside it.
    assert_eq!(std::fs::read(&east.path).expect("read"), before);
    assert_eq!(files_in(east_dir.path()), ["reflexio.db"]);

    // The app's retention deletes old rows: no counter goes down, nothing is read twice.
    let bridge = east_bridge;
    let app = &mut east;
    app.conn
        .execute("DELETE FROM facts WHERE rowid <= 20", [])
        .expect("delete");
    app.conn
        .execute("DELETE FROM transcriptions WHERE rowid <= 20", [])
        .expect("delete");
    // New rows, after the deletion; one written at a whole second.
    for whole in [false, true, false] {
        let age = app.just_now();
        app.add_fact(fact_row(When::At(age, Format::LocalStr { whole }), 0));
    }
    let expected = app.expected();
    wait_for(&bridge, &expected);

    // The app empties a table and writes again: the new rows reuse the row ids read before.
    // (Read again, rows are told apart by time: a whole-second time in the very second of the
    // newest counted would be taken as counted, a documented limit; these have a fraction.)
    app.conn
        .execute("DELETE FROM transcriptions", [])
        .expect("delete");
    for _ in 0..2 {
        let age = app.just_now();
        app.add_transcription(When::At(age, Format::UtcIso { whole: false }));
    }
    // The app deletes its newest fact, and the next one takes its row id.
    app.conn
        .execute(
            "DELETE FROM facts WHERE rowid = (SELECT max(rowid) FROM facts)",
            [],
        )
        .expect("delete");
    let age = app.just_now();
    app.add_fact(fact_row(
        When::At(age, Format::LocalStr { whole: false }),
        1,
    ));
    let expected = app.expected();
    wait_for(&bridge, &expected);
    // And stays there: polls that find nothing new change nothing.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(compare(&bridge.scrape(), &expected), Vec::<String>::new());

    // A restarted bridge continues from its cursors: nothing is counted twice.
    assert!(bridge.terminate().success());
    let bridge = follow(app, &store, &[]);
    std::thread::sleep(Duration::from_millis(500));
    wait_for(&bridge, &{
        let mut e = expected.clone();
        // Counted by the previous process: the new one has read nothing.
        for (k, v) in e.iter_mut() {
            if k.starts_with("reflexio_legacy_") {
                *v = 0.0;
            }
        }
        e
    });
}

#[test]
fn values_the_app_does_not_write_are_left_out_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = App::create(dir.path(), FULL_SCHEMA, EAST);
    app.fill_odd_values();
    let store_dir = tempfile::tempdir().expect("tempdir");
    let bridge = follow(&app, &store_dir.path().join("metrics.db"), &[]);
    wait_for(&bridge, &app.expected());
}

#[test]
fn missing_tables_and_columns_leave_the_rest_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Facts without any quality column; transcriptions without a time; no digests, no
    // retention log.
    let app = App::create(
        dir.path(),
        "CREATE TABLE facts (id TEXT PRIMARY KEY, content TEXT, created_at TEXT);
         CREATE TABLE transcriptions (id TEXT PRIMARY KEY, text TEXT);",
        EAST,
    );
    for i in 0..6 {
        let when = When::At(hours(f64::from(i) * 10.0), Format::Offset);
        app.conn
            .execute(
                "INSERT INTO facts (id, content, created_at) VALUES (?1, 'f', ?2)",
                rusqlite::params![format!("f{i}"), app.value(when)],
            )
            .expect("insert");
    }
    app.conn
        .execute("INSERT INTO transcriptions VALUES ('t1', 'hello')", [])
        .expect("insert");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let bridge = follow(&app, &store_dir.path().join("metrics.db"), &[]);
    let expected: BTreeMap<String, f64> = [
        ("reflexio_facts_total", 6.0),
        ("reflexio_assessed_facts_total", 0.0),
        // 0, 10 and 20 hours old.
        ("reflexio_facts_24h", 3.0),
        ("reflexio_assessed_facts_24h", 0.0),
        ("reflexio_atomicity_assessed_facts_24h", 0.0),
        ("reflexio_citation_assessed_facts_24h", 0.0),
        ("reflexio_hallucination_rate_24h", 0.0),
        ("reflexio_citation_coverage_24h", 0.0),
        ("reflexio_transcriptions_total", 0.0),
        ("reflexio_digests_total", 0.0),
        ("reflexio_retention_operations_7d", 0.0),
        ("reflexio_legacy_rows_total{source=\"facts\"}", 6.0),
        (
            "reflexio_legacy_invalid_values_total{source=\"facts\"}",
            0.0,
        ),
        ("reflexio_legacy_healthy{source=\"database\"}", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    wait_for(&bridge, &expected);
    let log = bridge.log_text();
    assert!(
        log.contains("missing=\"is_hallucination, is_atomic, citation_coverage, cove_confidence, cove_verification_rounds\""),
        "{log}"
    );
    assert!(
        log.contains("not followed: it has no `created_at` column"),
        "{log}"
    );
    assert!(
        log.contains("no such table; its metrics stay at zero table=digests"),
        "{log}"
    );

    // The app creates a table later: the bridge notices and follows it.
    app.conn
        .execute_batch(
            "CREATE TABLE digests (id TEXT PRIMARY KEY, date TEXT, created_at TEXT);
             INSERT INTO digests VALUES ('d1', '2026-02-06', '2026-02-06T08:00:00Z');",
        )
        .expect("create");
    app.conn
        .execute(
            "INSERT INTO digests VALUES ('d2', 'today', ?1)",
            [app.value(When::At(hours(1.0), Format::IsoLocal))],
        )
        .expect("insert");
    let mut more = expected.clone();
    // Both count in the total; the old one in no window.
    more.insert("reflexio_digests_total".into(), 2.0);
    more.insert("reflexio_legacy_rows_total{source=\"digests\"}".into(), 2.0);
    wait_for(&bridge, &more);
}

#[test]
fn a_writer_holding_its_lock_delays_reads_without_losing_rows() {
    for journal in ["DELETE", "WAL"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut app = App::create(dir.path(), FULL_SCHEMA, EAST);
        app.conn
            .query_row(&format!("PRAGMA journal_mode = {journal}"), [], |_| Ok(()))
            .expect("journal mode");
        app.add_transcription(When::At(hours(1.0), Format::Offset));
        let store_dir = tempfile::tempdir().expect("tempdir");
        let bridge = follow(&app, &store_dir.path().join("metrics.db"), &[]);
        assert!(eventually(WAIT, || rows(&bridge, "transcriptions") == 1.0));

        // The app writes in a transaction it holds exclusively.
        app.conn.execute_batch("BEGIN EXCLUSIVE").expect("begin");
        app.add_transcription(When::At(hours(0.5), Format::Offset));
        app.add_transcription(When::At(hours(0.2), Format::Offset));
        if journal == "DELETE" {
            // Readers wait, give up after the busy timeout, and say so; serving goes on.
            let errors = "reflexio_legacy_read_errors_total{source=\"database\"}";
            assert!(
                eventually(WAIT, || bridge.scrape()[errors] >= 1.0),
                "{}",
                bridge.log_text()
            );
            let s = bridge.scrape();
            assert_eq!(s["reflexio_legacy_healthy{source=\"database\"}"], 0.0);
            assert_eq!(s["reflexio_transcriptions_total"], 1.0);
            assert!(bridge.log_text().contains("is locked by a writer"));
        } else {
            // In WAL mode, readers are never blocked and see only committed rows.
            std::thread::sleep(Duration::from_millis(500));
            let s = bridge.scrape();
            assert_eq!(s["reflexio_transcriptions_total"], 1.0);
            assert_eq!(
                s["reflexio_legacy_read_errors_total{source=\"database\"}"],
                0.0
            );
        }
        app.conn.execute_batch("COMMIT").expect("commit");
        assert!(
            eventually(WAIT, || {
                let s = bridge.scrape();
                s["reflexio_transcriptions_total"] == 3.0
                    && s["reflexio_legacy_healthy{source=\"database\"}"] == 1.0
            }),
            "{journal}: {}",
            bridge.log_text()
        );
    }
}

fn import(db: &Path, store: &Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["import", "--legacy-tz", EAST, "--legacy-db"])
        .arg(db)
        .arg("--store")
        .arg(store)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run import");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `count` facts, one a minute back from now, written in one transaction.
fn many_facts(app: &App, count: usize) {
    let tx = app.conn.unchecked_transaction().expect("tx");
    for i in 0..count {
        let when = When::At(
            SignedDuration::from_secs(i as i64 % (6 * 24 * 3600)),
            Format::Offset,
        );
        tx.execute(
            "INSERT INTO facts (id, created_at, is_hallucination, is_atomic, citation_coverage) \
             VALUES (?1, ?2, ?3, 1, 0.97)",
            rusqlite::params![format!("m{i}"), app.value(when), i64::from(i % 100 == 0)],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

#[test]
fn import_backfills_once_however_often_it_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = App::create(dir.path(), FULL_SCHEMA, EAST);
    app.fill();
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir.path().join("metrics.db");

    let (ok, stdout, stderr) = import(&app.path, &store);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("import: "),
        "plain progress lines: {stderr}"
    );
    assert!(stdout.contains("rows read in"), "{stdout}");
    let (ok, again, stderr) = import(&app.path, &store);
    assert!(ok, "{again}\n{stderr}");
    assert!(
        again.contains("nothing new since the last import"),
        "{again}"
    );

    // A bridge on the store, following nothing, exports exactly the fixture's values.
    let bridge = Bridge::start(&["--store", store.to_str().expect("utf-8")]);
    let expected: BTreeMap<String, f64> = app
        .expected()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("reflexio_legacy_"))
        .collect();
    wait_for(&bridge, &expected);
}

#[test]
fn import_next_to_a_following_bridge_counts_each_row_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::create(dir.path(), FULL_SCHEMA, EAST);
    let total = 60_000;
    many_facts(&app, total);
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir.path().join("metrics.db");
    let bridge = follow(&app, &store, &[]);
    let imports: Vec<_> = (0..2)
        .map(|_| {
            let (db, store) = (app.path.clone(), store.clone());
            std::thread::spawn(move || import(&db, &store))
        })
        .collect();
    let mut imported = 0.0;
    for handle in imports {
        let (ok, stdout, stderr) = handle.join().expect("import thread");
        assert!(ok, "{stdout}\n{stderr}");
        imported += stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("facts"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .map_or(0.0, |n| n.parse::<f64>().expect("number"));
    }
    assert!(eventually(WAIT, || {
        bridge.scrape()["reflexio_facts_total"] == total as f64
    }));
    std::thread::sleep(Duration::from_millis(500));
    let s = bridge.scrape();
    assert_eq!(s["reflexio_facts_total"], total as f64);
    assert_eq!(s["reflexio_hallucinated_facts_total"], (total / 100) as f64);
    // Every row was recorded by exactly one of the three readers.
    assert_eq!(
        s["reflexio_legacy_rows_total{source=\"facts\"}"] + imported,
        total as f64
    );
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(std::time::SystemTime::now() - age)
        .expect("set mtime");
}

#[test]
fn lock_files_are_held_locks_and_dead_or_old_ones_are_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = dir.path().join("locks");
    std::fs::create_dir(&locks).expect("mkdir");
    let write =
        |name: &str, content: &str| std::fs::write(locks.join(name), content).expect("write");
    // A live process (this test), a dead one, an old one, and one whose file holds no pid.
    let dead = dead_pid();
    write("daily_digest.pid", &format!("{}\n", std::process::id()));
    write("retention.pid", &dead.to_string());
    write("transcribe.pid", &std::process::id().to_string());
    set_age(&locks.join("transcribe.pid"), Duration::from_secs(2 * 3600));
    write("broken.pid", "not a pid");
    write("notes.txt", "ignored");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir.path().join("metrics.db");
    let args = [
        "--store",
        store.to_str().expect("utf-8"),
        "--lock-dir",
        locks.to_str().expect("utf-8"),
        "--legacy-poll-interval",
        POLL,
    ];
    let bridge = Bridge::start(&args);
    let expect = |active: f64, stale: f64| {
        let mut got = (0.0, 0.0);
        let ok = eventually(WAIT, || {
            let s = bridge.scrape();
            got = (s["reflexio_active_locks"], s["reflexio_stale_locks"]);
            got == (active, stale)
        });
        assert!(
            ok,
            "expected ({active}, {stale}), got {got:?}\n{}",
            bridge.log_text()
        );
    };
    expect(4.0, 2.0);
    // The poll records the locks before it adds its invalid files to the count: a scrape in
    // between sees the one without the other.
    let invalid = "reflexio_legacy_invalid_values_total{source=\"lock_dir\"}";
    assert!(
        eventually(WAIT, || bridge.scrape()[invalid] == 1.0),
        "the invalid lock file is counted once: {}",
        bridge.scrape()[invalid]
    );
    let s = bridge.scrape();
    assert_eq!(s["reflexio_legacy_healthy{source=\"lock_dir\"}"], 1.0);

    // Released: the file is gone. Taken again: the file rewritten. Taken over: another pid.
    std::fs::remove_file(locks.join("retention.pid")).expect("rm");
    std::fs::remove_file(locks.join("broken.pid")).expect("rm");
    expect(2.0, 1.0);
    write("transcribe.pid", &std::process::id().to_string());
    expect(2.0, 0.0);
    write("retention.pid", &dead.to_string());
    expect(3.0, 1.0);
    write("retention.pid", &std::process::id().to_string());
    expect(3.0, 0.0);

    // A restarted bridge finds the locks where it left them, minus those released meanwhile.
    assert!(bridge.terminate().success());
    std::fs::remove_file(locks.join("daily_digest.pid")).expect("rm");
    let bridge = Bridge::start(&args);
    let mut got = (0.0, 0.0);
    let ok = eventually(WAIT, || {
        let s = bridge.scrape();
        got = (s["reflexio_active_locks"], s["reflexio_stale_locks"]);
        got == (2.0, 0.0)
    });
    assert!(ok, "after a restart: {got:?}\n{}", bridge.log_text());
    // The directory is removed: no lock is held.
    std::fs::remove_dir_all(&locks).expect("rm -r");
    assert!(eventually(
        WAIT,
        || bridge.scrape()["reflexio_active_locks"] == 0.0
    ));
}

/// A `/tmp`-like directory: the app's own lock, and three other programs' pid files (a live
/// one, a dead one, an old one), with `--lock-names` naming the app's.
#[test]
fn only_the_named_lock_files_of_a_shared_directory_are_locks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let write = |name: &str, content: &str| std::fs::write(tmp.join(name), content).expect("write");
    let dead = dead_pid();
    let me = std::process::id().to_string();
    // `ProcessLock("daily_digest")`, held by a live process.
    write("daily_digest.pid", &me);
    write("sshd.pid", &me);
    write("nginx.pid", &dead.to_string());
    write("crond.pid", &me);
    set_age(&tmp.join("crond.pid"), Duration::from_secs(3 * 3600));
    write("x11-display.lock", "ignored");
    let stores = tempfile::tempdir().expect("tempdir");
    let locks = |names: &[&str]| {
        let store = stores.path().join(format!("{}.db", names.join("+")));
        let mut args = vec![
            "--store".to_owned(),
            store.to_str().expect("utf-8").to_owned(),
            "--lock-dir".to_owned(),
            tmp.to_str().expect("utf-8").to_owned(),
            "--legacy-poll-interval".to_owned(),
            POLL.to_owned(),
        ];
        for name in names {
            args.extend(["--lock-names".to_owned(), (*name).to_owned()]);
        }
        Bridge::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let held = |bridge: &Bridge, active: f64, stale: f64| {
        let mut got = (-1.0, -1.0);
        let ok = eventually(WAIT, || {
            let s = bridge.scrape();
            got = (s["reflexio_active_locks"], s["reflexio_stale_locks"]);
            got == (active, stale)
        });
        assert!(
            ok,
            "expected ({active}, {stale}), got {got:?}\n{}",
            bridge.log_text()
        );
    };
    // Without names every pid file is a lock: what the shared directories refuse.
    let everything = locks(&[]);
    held(&everything, 4.0, 2.0);
    drop(everything);
    // Named: exactly the app's lock. A glob matching nothing else changes nothing.
    let bridge = locks(&["daily_digest", "retention_*"]);
    held(&bridge, 1.0, 0.0);
    std::thread::sleep(Duration::from_millis(300));
    held(&bridge, 1.0, 0.0);
    assert_eq!(
        bridge.scrape()["reflexio_legacy_invalid_values_total{source=\"lock_dir\"}"],
        0.0,
        "other programs' files are not looked at"
    );
    assert!(
        bridge.log_text().contains("names=daily_digest,retention_*"),
        "{}",
        bridge.log_text()
    );
    // The app takes another lock the glob names; another program writes a pid file.
    write("retention_facts.pid", &me);
    write("cupsd.pid", &dead.to_string());
    held(&bridge, 2.0, 0.0);
    std::fs::remove_file(tmp.join("daily_digest.pid")).expect("rm");
    held(&bridge, 1.0, 0.0);
}

#[test]
fn a_shared_system_lock_directory_without_lock_names_exits_with_code_2() {
    for dir in ["/tmp", "/var/tmp/", "/dev/shm"] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--lock-dir", dir])
            .env_remove("REFLEXIO_BRIDGE_LOCK_NAMES")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dir}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid --lock-dir {dir}"))
                && stderr.contains("--lock-names daily_digest"),
            "{stderr}"
        );
    }
    // Named, /tmp is fine; names come from the environment too, comma-separated.
    let store = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start_with_env(
        &[
            "--store",
            store.path().join("m.db").to_str().expect("utf-8"),
            "--lock-dir",
            "/tmp",
        ],
        &[("REFLEXIO_BRIDGE_LOCK_NAMES", "daily_digest,reflexio_*")],
    );
    assert!(
        bridge
            .log_text()
            .contains("following a lock directory dir=/tmp names=daily_digest,reflexio_*"),
        "{}",
        bridge.log_text()
    );
}

/// The app's CoVe settings: from its `.env` file (read again while the bridge runs), and from
/// the bridge's own flag, environment and configuration file, which win over it.
#[test]
fn cove_settings_come_from_the_apps_env_file_and_the_bridges_own_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join(".env");
    let env_arg = env_file.to_str().expect("utf-8").to_owned();
    std::fs::write(
        &env_file,
        "# Reflexio\nDATABASE_PATH=reflexio.db\nexport ENABLE_COVE=True\nCOVE_CONFIDENCE_THRESHOLD=\"0.85\" # tuned\n",
    )
    .expect("write");
    let app = App::create(dir.path(), FULL_SCHEMA, EAST);
    let store_dir = tempfile::tempdir().expect("tempdir");
    let cove = |b: &Bridge, enabled: f64, threshold: f64| {
        let mut got = (-1.0, -1.0);
        let ok = eventually(WAIT, || {
            let s = b.scrape();
            got = (
                s["reflexio_cove_enabled"],
                s["reflexio_cove_confidence_threshold"],
            );
            got == (enabled, threshold)
        });
        assert!(
            ok,
            "expected ({enabled}, {threshold}), got {got:?}\n{}",
            b.log_text()
        );
    };
    let followed = follow(
        &app,
        &store_dir.path().join("metrics.db"),
        &["--legacy-env-file", &env_arg],
    );
    cove(&followed, 1.0, 0.85);
    let log = followed.log_text();
    assert!(
        log.contains(&format!(
            "CoVe configuration enabled=true enabled_from=ENABLE_COVE in {env_arg} \
             threshold=0.85 threshold_from=COVE_CONFIDENCE_THRESHOLD in {env_arg}"
        )),
        "{log}"
    );
    // The app's operator edits the file: read again, and recorded.
    std::fs::write(
        &env_file,
        "ENABLE_COVE=true\nCOVE_CONFIDENCE_THRESHOLD=0.6\n",
    )
    .expect("write");
    cove(&followed, 1.0, 0.6);
    // An invalid value: logged once, the last good values kept.
    std::fs::write(
        &env_file,
        "ENABLE_COVE=perhaps\nCOVE_CONFIDENCE_THRESHOLD=0.5\n",
    )
    .expect("write");
    assert!(eventually(WAIT, || followed
        .log_text()
        .contains("ENABLE_COVE=\"perhaps\" in")));
    std::thread::sleep(Duration::from_millis(400));
    cove(&followed, 1.0, 0.6);
    assert_eq!(followed.log_text().matches("perhaps").count(), 1);
    // Fixed, and CoVe turned off; then the keys removed: the app's defaults.
    std::fs::write(
        &env_file,
        "ENABLE_COVE=off\nCOVE_CONFIDENCE_THRESHOLD=0.5\n",
    )
    .expect("write");
    cove(&followed, 0.0, 0.5);
    std::fs::write(&env_file, "DATABASE_PATH=reflexio.db\n").expect("write");
    cove(&followed, 0.0, 0.7);
    assert!(
        followed.log_text().contains(
            "CoVe configuration changed enabled=false enabled_from=the application's default"
        ),
        "{}",
        followed.log_text()
    );
    drop(followed);

    // The bridge's own settings win: the flag for the threshold, the environment for
    // `enabled`; the configuration file's value of `enabled` loses to the environment.
    std::fs::write(
        &env_file,
        "ENABLE_COVE=false\nCOVE_CONFIDENCE_THRESHOLD=0.9\n",
    )
    .expect("write");
    let toml = dir.path().join("bridge.toml");
    std::fs::write(&toml, "cove_enabled = false\ncove_threshold = 0.55\n").expect("write");
    let own_store = tempfile::tempdir().expect("tempdir");
    let own = Bridge::start_with_env(
        &[
            "--store",
            own_store.path().join("m.db").to_str().expect("utf-8"),
            "--config",
            toml.to_str().expect("utf-8"),
            "--legacy-env-file",
            &env_arg,
            "--cove-threshold",
            "0.65",
        ],
        &[("REFLEXIO_BRIDGE_COVE_ENABLED", "yes")],
    );
    cove(&own, 1.0, 0.65);
    assert!(
        own.log_text().contains(
            "enabled_from=REFLEXIO_BRIDGE_COVE_ENABLED threshold=0.65 threshold_from=--cove-threshold"
        ),
        "{}",
        own.log_text()
    );
    drop(own);
    // The configuration file alone, not following a deployment: its value, and the app's
    // default for the other.
    let file_store = tempfile::tempdir().expect("tempdir");
    let from_file = Bridge::start(&[
        "--store",
        file_store.path().join("m.db").to_str().expect("utf-8"),
        "--config",
        toml.to_str().expect("utf-8"),
    ]);
    cove(&from_file, 0.0, 0.55);
    drop(from_file);
    // Following a database with nothing given: the app's defaults, not 0.
    let defaults_store = tempfile::tempdir().expect("tempdir");
    let defaults = follow(&app, &defaults_store.path().join("m.db"), &[]);
    cove(&defaults, 0.0, 0.7);
    assert!(
        defaults
            .log_text()
            .contains("enabled_from=the application's default threshold=0.7"),
        "{}",
        defaults.log_text()
    );

    // A value the app could not use stops the bridge at start.
    std::fs::write(&env_file, "COVE_CONFIDENCE_THRESHOLD=high\n").expect("write");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--legacy-env-file",
            &env_arg,
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "invalid --legacy-env-file (on the command line): COVE_CONFIDENCE_THRESHOLD=\"high\""
        ),
        "{stderr}"
    );
}

#[test]
fn unusable_legacy_settings_exit_with_code_2() {
    for args in [
        vec![
            "serve",
            "--legacy-db",
            "x.db",
            "--legacy-tz",
            "Mars/Olympus_Mons",
        ],
        vec!["import"],
        vec![
            "serve",
            "--legacy-db",
            "x.db",
            "--legacy-poll-interval",
            "0s",
        ],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("REFLEXIO_BRIDGE_LEGACY_DB")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    }
    let out = Command::new(BIN)
        .args([
            "serve",
            "--legacy-db",
            "x.db",
            "--legacy-tz",
            "Mars/Olympus_Mons",
        ])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid --legacy-tz (on the command line)")
    );
    let out = Command::new(BIN).arg("import").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("import needs --legacy-db"));
}

#[test]
fn a_missing_database_is_reported_and_followed_once_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reflexio.db");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(&[
        "--store",
        store_dir.path().join("metrics.db").to_str().expect("utf-8"),
        "--legacy-db",
        path.to_str().expect("utf-8"),
        "--legacy-poll-interval",
        POLL,
    ]);
    let errors = "reflexio_legacy_read_errors_total{source=\"database\"}";
    assert!(eventually(WAIT, || bridge.scrape()[errors] >= 2.0));
    assert_eq!(
        bridge.scrape()["reflexio_legacy_healthy{source=\"database\"}"],
        0.0
    );
    // Logged once, however many polls fail the same way.
    let log = bridge.log_text();
    assert_eq!(
        log.matches("cannot follow the application's database")
            .count(),
        1,
        "{log}"
    );
    // Never created by the bridge.
    assert!(!path.exists());

    let mut app = App::create(dir.path(), FULL_SCHEMA, EAST);
    app.add_fact(fact_row(When::At(hours(1.0), Format::Offset), 0));
    assert!(eventually(WAIT, || bridge.scrape()["reflexio_facts_total"] == 1.0));
    assert_eq!(
        bridge.scrape()["reflexio_legacy_healthy{source=\"database\"}"],
        1.0
    );
}

#[test]
fn import_draws_a_progress_bar_on_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::create(dir.path(), FULL_SCHEMA, EAST);
    many_facts(&app, 20_000);
    let store = dir.path().join("metrics.db");
    // `script` (util-linux) runs the import on a pseudo-terminal and copies what it shows.
    let command = format!(
        "{BIN} import --legacy-db {} --store {}",
        app.path.display(),
        store.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run script");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("20000 rows read in"), "{shown}");
    // A bar drawn with terminal escapes, not the plain lines.
    assert!(shown.contains("\u{1b}["), "{shown}");
    assert!(!shown.contains("import: "), "{shown}");
}
