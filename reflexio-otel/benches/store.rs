//! Store benchmarks, each beside the alternative in the same run: opening a store holding
//! seven days of minute buckets (against recomputing the figures from raw event rows, as the
//! original collector did), one flush interval (against inserting each event as a row), and
//! durable batches of 1000 events from 8 clients (group commit against one commit per batch).
//! Also prints the store's file size after seven days.
//!
//! Run with `cargo bench -p reflexio-otel --bench store`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry::metrics::MeterProvider;
use reflexio_otel::{
    Clock, Event, Fact, ManualClock, PrometheusPipeline, Recorder, RetentionRun, StoreOptions,
};
use rusqlite::{Connection, params};
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FACTS_PER_MINUTE: u64 = 100;
const WEEK_MINUTES: u64 = 7 * 24 * 60;

fn fact(n: u64) -> Fact {
    let f = Fact::new(0.9 + (n % 10) as f64 / 100.0)
        .expect("valid")
        .hallucinated(n.is_multiple_of(200))
        .atomic(!n.is_multiple_of(40));
    if n.is_multiple_of(2) {
        f.with_cove(0.6 + (n % 40) as f64 / 100.0, 1 + (n % 3) as u32)
            .expect("valid")
    } else {
        f
    }
}

fn size_of(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// A store holding seven days at `FACTS_PER_MINUTE` facts and one retention run a minute.
fn week_store(path: &Path, now: SystemTime) {
    let clock = ManualClock::new(now);
    let r = Recorder::builder()
        .clock(clock)
        .without_upkeep_thread()
        .store(StoreOptions::new(path).flush_interval(Duration::from_secs(3600)))
        .build();
    let mut n = 0;
    for minute in 0..WEEK_MINUTES {
        let at = now - Duration::from_secs(60 * minute);
        for _ in 0..FACTS_PER_MINUTE {
            r.record_at(fact(n), at).expect("recorded");
            n += 1;
        }
        let table = ["transcriptions", "facts", "digests"][(minute % 3) as usize];
        r.record_at(RetentionRun::new(table, minute % 50).expect("valid"), at)
            .expect("recorded");
    }
    r.shutdown().expect("written");
}

/// The same week as raw event rows, indexed by time.
fn week_events(path: &Path, now: SystemTime) {
    let now = now
        .duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_secs() as i64;
    let mut conn = Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE facts (id INTEGER PRIMARY KEY, created_at INTEGER NOT NULL,
             is_hallucination INTEGER, is_atomic INTEGER, citation_coverage REAL,
             cove_confidence REAL, cove_verification_rounds INTEGER);
         CREATE INDEX facts_by_time ON facts (created_at);
         CREATE TABLE retention_audit_log (id INTEGER PRIMARY KEY, table_name TEXT,
             record_count INTEGER, executed_at INTEGER NOT NULL, dry_run INTEGER,
             error_message TEXT);
         CREATE INDEX retention_by_time ON retention_audit_log (executed_at);",
    )
    .expect("schema");
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO facts VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6)")
            .expect("prepare");
        let mut run = tx
            .prepare("INSERT INTO retention_audit_log VALUES (NULL, ?1, ?2, ?3, 0, NULL)")
            .expect("prepare");
        let mut n = 0;
        for minute in 0..WEEK_MINUTES as i64 {
            let at = now - 60 * minute;
            for _ in 0..FACTS_PER_MINUTE {
                let f = fact(n);
                insert
                    .execute(params![
                        at,
                        f.hallucinated,
                        f.atomic,
                        f.citation_coverage.map(|c| c.get()),
                        f.cove.map(|c| c.confidence.get()),
                        f.cove.map(|c| c.rounds.get())
                    ])
                    .expect("insert");
                n += 1;
            }
            run.execute(params!["facts", minute % 50, at])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

/// What the original collector computed by scanning event rows.
fn scan_events(conn: &Connection, now: i64) -> (i64, f64, f64, i64) {
    let day = now - 86_400;
    let week = now - 7 * 86_400;
    let (facts, rate, coverage): (i64, f64, f64) = conn
        .query_row(
            "SELECT count(*), avg(is_hallucination), avg(citation_coverage) \
             FROM facts WHERE created_at > ?1",
            [day],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("scan");
    let confidence: f64 = conn
        .query_row(
            "SELECT avg(cove_confidence) FROM facts WHERE created_at > ?1 \
             AND cove_confidence IS NOT NULL",
            [day],
            |r| r.get(0),
        )
        .expect("scan");
    let runs: i64 = conn
        .query_row(
            "SELECT count(*) FROM retention_audit_log WHERE executed_at > ?1",
            [week],
            |r| r.get(0),
        )
        .expect("scan");
    let total: i64 = conn
        .query_row("SELECT count(*) FROM facts", [], |r| r.get(0))
        .expect("count");
    (facts + total, rate, coverage + confidence, runs)
}

fn open(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let store = dir.path().join("metrics.db");
    let events = dir.path().join("events.db");
    week_store(&store, now);
    week_events(&events, now);
    println!(
        "store after 7 days ({} facts, {} retention runs): {} KiB; the same events as rows: {} KiB",
        WEEK_MINUTES * FACTS_PER_MINUTE,
        WEEK_MINUTES,
        size_of(&store) / 1024,
        size_of(&events) / 1024
    );

    let mut group = c.benchmark_group("open_7_days");
    group.sample_size(20);
    group.bench_function("reflexio_store", |b| {
        b.iter(|| {
            let r = Recorder::builder()
                .without_upkeep_thread()
                .store(StoreOptions::new(&store))
                .build();
            black_box(r.snapshot().facts_24h.facts)
        })
    });
    // What a restarted bridge does before its first scrape completes: open, then one
    // collection, which replays the stored histogram observations into the SDK histograms.
    group.bench_function("reflexio_store_first_collection", |b| {
        b.iter(|| {
            let r = Recorder::builder()
                .without_upkeep_thread()
                .store(StoreOptions::new(&store))
                .build();
            let pipeline = PrometheusPipeline::new().expect("pipeline");
            r.register(&pipeline.provider.meter("bench"));
            black_box(pipeline.encode().expect("encode").len())
        })
    });
    let secs = now
        .duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_secs() as i64;
    group.bench_function("scan_raw_events", |b| {
        b.iter(|| {
            let conn = Connection::open(&events).expect("open");
            black_box(scan_events(&conn, secs))
        })
    });
    group.finish();
}

fn flush(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(SystemTime::now());
    let store = dir.path().join("metrics.db");
    week_store(&store, clock.now());
    let r = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .store(StoreOptions::new(&store).flush_interval(Duration::from_secs(3600)))
        .build();
    let events = dir.path().join("events.db");
    week_events(&events, clock.now());
    let mut conn = Connection::open(&events).expect("open");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("pragma");

    let mut group = c.benchmark_group("flush_1000_facts");
    group.throughput(Throughput::Elements(1000));
    let mut n = 0u64;
    group.bench_function("reflexio_store", |b| {
        b.iter_batched(
            || {
                clock.advance(Duration::from_secs(1));
                for _ in 0..1000 {
                    r.record_fact(&fact(n));
                    n += 1;
                }
            },
            |()| r.flush().expect("flush"),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("insert_event_rows", |b| {
        b.iter(|| {
            let tx = conn.transaction().expect("tx");
            {
                let mut insert = tx
                    .prepare_cached("INSERT INTO facts VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6)")
                    .expect("prepare");
                for _ in 0..1000 {
                    let f = fact(n);
                    insert
                        .execute(params![
                            n as i64,
                            f.hallucinated,
                            f.atomic,
                            f.citation_coverage.map(|c| c.get()),
                            f.cove.map(|c| c.confidence.get()),
                            f.cove.map(|c| c.rounds.get())
                        ])
                        .expect("insert");
                    n += 1;
                }
            }
            tx.commit().expect("commit");
        })
    });
    group.finish();
}

/// Wall time for 8 clients to commit `batches` durable batches of 1000 facts between them.
fn durable_clients(r: &Recorder, batches: u64, serialize: Option<&Arc<Mutex<()>>>) -> Duration {
    let clients = 8u64;
    let batch: Vec<(Event, Option<SystemTime>)> =
        (0..1000).map(|n| (Event::Fact(fact(n)), None)).collect();
    let began = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let (r, batch) = (r.clone(), &batch);
            s.spawn(move || {
                for _ in (c..batches).step_by(clients as usize) {
                    let _one_at_a_time = serialize.map(|m| m.lock().expect("lock"));
                    r.record_durable(batch).expect("committed");
                }
            });
        }
    });
    began.elapsed()
}

fn durable(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Recorder::builder()
        .store(StoreOptions::new(dir.path().join("metrics.db")))
        .build();
    let serialize = Arc::new(Mutex::new(()));
    let mut group = c.benchmark_group("durable_batches_of_1000");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("group_commit_8_clients", |b| {
        b.iter_custom(|iters| durable_clients(&r, iters, None))
    });
    group.bench_function("commit_per_batch_8_clients", |b| {
        b.iter_custom(|iters| durable_clients(&r, iters, Some(&serialize)))
    });
    group.finish();
}

criterion_group!(benches, open, flush, durable);
criterion_main!(benches);
