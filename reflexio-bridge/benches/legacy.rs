//! Reading an existing deployment's database, each beside the alternative in the same run:
//!
//! - importing 1,000,000 fact rows of the last six days (read, parse, convert, commit each as an
//!   event with the cursors to a fresh store), against the floor: a bare `SELECT` of the same
//!   columns that only steps through the rows;
//! - adopting a database of 1,000,000 fact rows over a year, as the app writes them (local times
//!   without an offset): the first poll, which counts the rows older than the windows into the
//!   totals without an event each, against the per-row path (the same number of rows, each an
//!   event) and against aggregating the same counts (histogram buckets and sums included) in SQL;
//! - one poll when no rows are new, on tables of 10,000 and 1,000,000 rows, against what the
//!   original collector did per scrape: aggregate the last 24 hours with SQL.
//!
//! Run with `cargo bench -p reflexio-bridge --bench legacy`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use reflexio_bridge::legacy::{AppDb, Follower};
use reflexio_otel::{Recorder, StoreOptions};
use rusqlite::{Connection, params};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const SMALL: u64 = 10_000;

/// The large database: a million rows under `cargo bench`; under `cargo test`, which runs each
/// benchmark once to check it works, a smaller one.
fn big() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        50_000
    }
}

/// The zone of the app's local times: UTC+05:00, as the deployment it was measured beside.
const ZONE: &str = "Asia/Tashkent";

/// How the rows' times are written.
#[derive(Clone, Copy)]
enum Shape {
    /// ISO 8601 with an offset.
    Offset,
    /// `str(datetime.now())`: local time without an offset, as the app writes `facts.created_at`.
    Local,
}

/// An application database with `rows` facts spread over the last six days, as the Python app
/// writes them (ISO 8601 with an offset, all quality columns).
fn app_db(dir: &Path, rows: u64) -> PathBuf {
    app_db_over(dir, rows, 6, Shape::Offset)
}

/// An application database with `rows` facts spread over the last `days` days, their times in
/// `shape`, every quality column.
fn app_db_over(dir: &Path, rows: u64, days: i64, shape: Shape) -> PathBuf {
    let path = dir.join(format!("reflexio-{rows}-{days}d.db"));
    let mut conn = Connection::open(&path).expect("open");
    conn.execute_batch(
        "CREATE TABLE facts (
            id TEXT PRIMARY KEY, created_at TEXT, content TEXT, is_hallucination INTEGER,
            is_atomic INTEGER, citation_coverage REAL, cove_confidence REAL,
            cove_verification_rounds INTEGER
        );",
    )
    .expect("schema");
    let now = jiff::Timestamp::now();
    let span = days * 24 * 3600 * 1_000_000i64;
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO facts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .expect("prepare");
        let (tz, pattern) = match shape {
            Shape::Offset => (jiff::tz::TimeZone::UTC, "%Y-%m-%dT%H:%M:%S%.6f%:z"),
            Shape::Local => (
                jiff::tz::TimeZone::get(ZONE).expect("zone"),
                "%Y-%m-%d %H:%M:%S%.6f",
            ),
        };
        for n in 0..rows {
            let back = span - (n as i64 * span / rows as i64);
            let at = now - jiff::SignedDuration::from_micros(back);
            let created = at.to_zoned_datetime(tz.clone()).strftime(pattern);
            insert
                .execute(params![
                    format!("{n:032x}"),
                    created.to_string(),
                    "The meeting moved to Thursday.",
                    i64::from(n % 200 == 0),
                    i64::from(n % 40 != 0),
                    0.9 + (n % 10) as f64 / 100.0,
                    0.6 + (n % 40) as f64 / 100.0,
                    1 + (n % 3) as i64,
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    path
}

fn recorder(store: &Path) -> Recorder {
    Recorder::builder()
        .without_upkeep_thread()
        .store(StoreOptions::new(store).flush_interval(Duration::from_secs(3600)))
        .build()
}

fn follower(db: &Path, store: &Path) -> Follower {
    let app = AppDb::open(db, jiff::tz::TimeZone::get(ZONE).expect("zone")).expect("open");
    Follower::new(app, recorder(store))
}

/// The counts adoption adds for the rows older than `cutoff`, aggregated in SQL instead: the
/// totals, and the histograms' buckets and sums in billionths, rounded as the bridge rounds
/// (the same validation: flags 0/1, fractions in [0, 1], rounds in 1..=1000).
const SQL_AGGREGATE: &str = "
    WITH v AS (
      SELECT is_hallucination AS h, is_atomic AS a,
        CASE WHEN citation_coverage BETWEEN 0 AND 1 THEN CAST(citation_coverage * 1e9 AS INTEGER)
          + (citation_coverage * 1e9 - CAST(citation_coverage * 1e9 AS INTEGER) >= 0.5) END AS c,
        CASE WHEN cove_confidence BETWEEN 0 AND 1 AND cove_verification_rounds BETWEEN 1 AND 1000
          THEN CAST(cove_confidence * 1e9 AS INTEGER)
          + (cove_confidence * 1e9 - CAST(cove_confidence * 1e9 AS INTEGER) >= 0.5) END AS q,
        CASE WHEN cove_confidence BETWEEN 0 AND 1 AND cove_verification_rounds BETWEEN 1 AND 1000
          THEN cove_verification_rounds END AS r
      FROM facts WHERE julianday(created_at) < julianday(?1))
    SELECT count(*), sum(h IN (0, 1)), sum(h = 1), sum(a IN (0, 1)), sum(a = 0),
      count(c), sum(c), sum(c <= 500000000), sum(c <= 700000000), sum(c <= 800000000),
      sum(c <= 900000000), sum(c <= 950000000), sum(c <= 980000000), sum(c <= 990000000),
      count(q), sum(q), sum(q <= 100000000), sum(q <= 200000000), sum(q <= 300000000),
      sum(q <= 400000000), sum(q <= 500000000), sum(q <= 600000000), sum(q <= 700000000),
      sum(q <= 800000000), sum(q <= 900000000), sum(q <= 950000000), sum(q <= 990000000),
      sum(r), sum(r <= 1), sum(r <= 2), sum(r <= 3), sum(r <= 4), sum(r <= 5), sum(r <= 7),
      sum(r <= 10)
    FROM v";

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows_big = big();
    let big = app_db(dir.path(), rows_big);
    let small = app_db(dir.path(), SMALL);

    let mut g = c.benchmark_group("import_1m_rows");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(rows_big));
    let mut run = 0;
    g.bench_function("reflexio_import", |b| {
        b.iter_batched(
            || {
                run += 1;
                follower(&big, &dir.path().join(format!("store-{run}.db")))
            },
            |mut f| {
                let mut rows = 0;
                f.poll(SystemTime::now(), &mut |_, c| rows += c.rows)
                    .expect("import");
                assert_eq!(rows, rows_big);
                f
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("bare_select", |b| {
        let conn = Connection::open(&big).expect("open");
        b.iter(|| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT rowid, created_at, is_hallucination, is_atomic, citation_coverage, \
                     cove_confidence, cove_verification_rounds FROM facts",
                )
                .expect("prepare");
            let mut rows = stmt.query([]).expect("query");
            let mut n = 0u64;
            while let Some(row) = rows.next().expect("step") {
                black_box(row.get_ref(1).expect("time"));
                n += 1;
            }
            assert_eq!(n, rows_big);
        });
    });
    g.finish();

    // A year of history: about 2% of the rows in the 7-day window, the rest in the totals only.
    let year = app_db_over(dir.path(), rows_big, 365, Shape::Local);
    let mut g = c.benchmark_group("adopt_1m_rows");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(rows_big));
    g.bench_function("reflexio_adopt_a_year", |b| {
        b.iter_batched(
            || {
                run += 1;
                follower(&year, &dir.path().join(format!("store-{run}.db")))
            },
            |mut f| {
                let (mut rows, mut counted, mut old) = (0, 0, 0);
                f.poll(SystemTime::now(), &mut |_, c| {
                    rows += c.rows;
                    counted += c.recorded;
                    old += c.too_old;
                })
                .expect("adopt");
                assert_eq!((rows, counted), (rows_big, rows_big), "every row counted");
                assert!(
                    old > rows_big * 9 / 10,
                    "mostly older than the windows: {old}"
                );
                f
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("per_row_events", |b| {
        b.iter_batched(
            || {
                run += 1;
                follower(&big, &dir.path().join(format!("store-{run}.db")))
            },
            |mut f| {
                let mut counted = 0;
                f.poll(SystemTime::now(), &mut |_, c| counted += c.recorded)
                    .expect("import");
                assert_eq!(counted, rows_big);
                f
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("sql_aggregate", |b| {
        let conn = Connection::open(&year).expect("open");
        let cutoff = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(7 * 24))
            .to_zoned_datetime(jiff::tz::TimeZone::get(ZONE).expect("zone"))
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        b.iter(|| {
            let mut stmt = conn.prepare_cached(SQL_AGGREGATE).expect("prepare");
            let counts: Vec<Option<i64>> = stmt
                .query_row([&cutoff], |r| (0..35).map(|i| r.get(i)).collect())
                .expect("aggregate");
            assert!(counts[0].is_some_and(|n| n as u64 > rows_big * 9 / 10));
            black_box(counts)
        });
    });
    g.finish();

    let mut g = c.benchmark_group("poll_no_new_rows");
    for (rows, db) in [(SMALL, &small), (rows_big, &big)] {
        let mut f = follower(db, &dir.path().join(format!("caught-up-{rows}.db")));
        f.poll(SystemTime::now(), &mut |_, _| {}).expect("catch up");
        g.bench_function(format!("reflexio_{rows}"), |b| {
            b.iter(|| {
                let mut new = 0;
                f.poll(SystemTime::now(), &mut |_, c| new += c.rows)
                    .expect("poll");
                assert_eq!(new, 0);
            });
        });
        let conn = Connection::open(db).expect("open");
        g.bench_function(format!("sql_scan_24h_{rows}"), |b| {
            let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24)).to_string();
            b.iter(|| {
                let v: (i64, Option<f64>, Option<f64>) = conn
                    .query_row(
                        "SELECT count(*), avg(is_hallucination), avg(citation_coverage) \
                         FROM facts WHERE created_at > ?1",
                        [&since],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .expect("scan");
                black_box(v)
            });
        });
    }
    g.finish();
}

criterion_group!(legacy, benches);
criterion_main!(legacy);
