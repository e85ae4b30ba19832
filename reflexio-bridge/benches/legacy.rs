//! Reading an existing deployment's database, each beside the alternative in the same run:
//!
//! - importing 1,000,000 fact rows (read, parse, convert, commit with cursors to a fresh
//!   store), against the floor: a bare `SELECT` of the same columns that only steps through
//!   the rows;
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

/// An application database with `rows` facts spread over the last six days, as the Python app
/// writes them (ISO 8601 with an offset, all quality columns).
fn app_db(dir: &Path, rows: u64) -> PathBuf {
    let path = dir.join(format!("reflexio-{rows}.db"));
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
    let span = 6 * 24 * 3600 * 1_000_000i64;
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO facts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .expect("prepare");
        let tz = jiff::tz::TimeZone::UTC;
        for n in 0..rows {
            let back = span - (n as i64 * span / rows as i64);
            let at = now - jiff::SignedDuration::from_micros(back);
            let created = at
                .to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%.6f%:z");
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
    let app = AppDb::open(db, jiff::tz::TimeZone::UTC).expect("open");
    Follower::new(app, recorder(store))
}

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
