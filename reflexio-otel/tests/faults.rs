//! Faults of a running store and of what clients send: sums at the limit of a stored integer,
//! a store deleted or replaced underneath, a store unreadable at start, more tables or locks
//! than the recorder keeps, a write-ahead log after a burst, and a file damaged while in use.

use reflexio_otel::{
    Clock, DurableError, Event, Fact, LockEvent, ManualClock, RecordError, Recorder, RetentionRun,
    StoreErrorKind, StoreOptions,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

#[path = "support/damage.rs"]
mod damage;
#[path = "support/disk.rs"]
mod disk;
#[path = "support/exposition.rs"]
mod exposition;
#[path = "support/process.rs"]
mod process;
#[path = "support/store.rs"]
mod store_support;
use damage::scramble_pages;
use process::dead_pid;
use store_support::{START, clock, error_kind, registered, scraped};

const HOUR: Duration = Duration::from_secs(3600);
/// The largest integer SQLite stores: every count and sum stops there.
const MAX: u64 = i64::MAX as u64;

/// A recorder on `path` that writes only when asked (flush, durable batch, shutdown).
fn open(path: &Path, clock: &ManualClock) -> Recorder {
    Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .store(StoreOptions::new(path).flush_interval(HOUR))
        .build()
}

fn fact() -> Fact {
    Fact::new(0.97).expect("valid")
}

fn run(table: &str, deleted: u64) -> (Event, Option<std::time::SystemTime>) {
    (
        Event::Retention(RetentionRun::new(table, deleted).expect("valid")),
        None,
    )
}

fn store_error(result: Result<(), DurableError>) -> Option<StoreErrorKind> {
    match result {
        Err(DurableError::Store(e)) => Some(e.kind()),
        _ => None,
    }
}

fn deleted_in(r: &Recorder, table: &str) -> u64 {
    r.snapshot()
        .retention_by_table
        .iter()
        .find(|(label, _)| format!("{label:?}") == format!("Table(Name({table:?}))"))
        .map_or(0, |(_, b)| b.deleted_records)
}

fn sql_count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open")
        .query_row(sql, [], |r| r.get(0))
        .expect("count")
}

/// The most records one retention run reports (2^53, exact in JSON and in Prometheus).
const MOST_DELETED: u64 = 1 << 53;

/// Retention runs over `table` that delete `runs * 2^53` records together: 1024 of them reach
/// the limit.
fn big_runs(table: &str, runs: usize) -> Vec<(Event, Option<std::time::SystemTime>)> {
    (0..runs).map(|_| run(table, MOST_DELETED)).collect()
}

#[test]
fn sums_stop_at_the_largest_stored_integer_and_every_batch_still_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    a.record_durable(&big_runs("facts", 1024))
        .expect("a batch past the limit stops at it");
    assert_eq!(deleted_in(&a, "facts"), MAX);
    a.record_durable(&[run("facts", 5)])
        .expect("a stored sum past the limit stops at it instead of failing the commit");
    let mut batch = big_runs("facts", 2);
    batch.push(run("audio", 3));
    a.record_durable(&batch).expect("committed");
    assert_eq!(deleted_in(&a, "facts"), MAX);
    assert_eq!(deleted_in(&a, "audio"), 3);
    let s = a.snapshot();
    assert_eq!(s.retention_7d.deleted_records, MAX, "the window stops too");
    assert_eq!(s.retention_7d.operations, 1028);

    // Batches sharing a group commit with ones that pass the limit all commit.
    std::thread::scope(|scope| {
        for t in 0..8 {
            let a = a.clone();
            scope.spawn(move || {
                for _ in 0..10 {
                    let mut batch = big_runs("facts", if t == 0 { 1100 } else { 1 });
                    batch.push((Event::Fact(fact()), None));
                    a.record_durable(&batch).expect("committed");
                }
            });
        }
    });
    assert_eq!(a.snapshot().totals.facts, 80);
    drop(a);
    let b = open(&path, &clock);
    assert!(b.store_health().is_some_and(|h| h.is_healthy()));
    assert_eq!(deleted_in(&b, "facts"), MAX);
    assert_eq!(b.snapshot().retention_7d.deleted_records, MAX);
    assert_eq!(b.snapshot().totals.facts, 80);
}

#[test]
fn counters_near_the_limit_stop_at_it_in_memory_and_in_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    a.record_fact(&fact());
    a.shutdown().expect("written");
    drop(a);
    let conn = rusqlite::Connection::open(&path).expect("open");
    // Sums near the limit, and a value an earlier version let overflow into a float.
    conn.execute_batch(&format!(
        "UPDATE counters SET value = {} WHERE name = 'coverage_sum';
         UPDATE counters SET value = {} WHERE name = 'facts';
         UPDATE histogram_buckets SET count = {} WHERE histogram = 'coverage' AND count > 0;
         INSERT INTO retention_tables (name, operations, deleted_records, errors, seq)
             VALUES ('facts', 1, 9.3e18, 0, 1);",
        MAX - 100,
        MAX - 1,
        MAX - 1,
    ))
    .expect("near the limit");
    drop(conn);

    let b = open(&path, &clock);
    assert!(
        b.store_health().is_some_and(|h| h.is_healthy()),
        "{:?}",
        b.store_health()
    );
    assert_eq!(
        deleted_in(&b, "facts"),
        MAX,
        "a float past it reads as the limit"
    );
    for _ in 0..3 {
        b.record_fact(&fact());
    }
    b.record_durable(&[run("facts", 1)]).expect("committed");
    let s = b.snapshot();
    assert_eq!(s.histograms.coverage.sum, MAX);
    assert_eq!(s.totals.facts, MAX);
    assert_eq!(s.histograms.coverage.count(), MAX);
    drop(b);
    let s = open(&path, &clock).snapshot();
    assert_eq!(
        (s.histograms.coverage.sum, s.totals.facts),
        (MAX, MAX),
        "stored as the limit"
    );
}

#[test]
fn a_deleted_store_directory_stops_acknowledging_until_it_is_back_with_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("store");
    std::fs::create_dir(&sub).expect("mkdir");
    let path = sub.join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let pipeline = registered(&a);
    a.record_durable(&[(Event::Fact(fact()), None)])
        .expect("committed");

    std::fs::remove_dir_all(&sub).expect("rm -rf");
    assert_eq!(
        store_error(a.record_durable(&[(Event::Fact(fact()), None)])),
        Some(StoreErrorKind::Gone),
        "a batch into a deleted file is refused"
    );
    assert_eq!(error_kind(&a), Some(StoreErrorKind::Gone));
    assert_eq!(scraped(&pipeline, "")["reflexio_store_healthy"], 0.0);
    assert!(
        a.store_health()
            .and_then(|h| h.last_error)
            .is_some_and(|e| e.to_string().contains("deleted")),
        "{:?}",
        a.store_health()
    );
    a.record_fact(&fact());
    assert_eq!(
        store_error(a.flush()),
        Some(StoreErrorKind::Gone),
        "still gone while the directory is missing"
    );
    assert!(
        !sub.exists(),
        "the directory is not created behind the operator's back"
    );

    std::fs::create_dir(&sub).expect("the directory is back");
    a.record_durable(&[(Event::Fact(fact()), None)])
        .expect("a fresh store gets everything");
    assert!(a.store_health().is_some_and(|h| h.is_healthy()));
    drop(a);
    assert_eq!(
        open(&path, &clock).snapshot().totals.facts,
        3,
        "the acknowledged batches and the fact recorded meanwhile"
    );
}

#[test]
fn a_deleted_store_file_leaves_no_log_behind_to_damage_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let now = clock.now();
    // Enough for the log to hold pages the next file does not have.
    for m in 0..600u64 {
        a.record_at(fact(), now - Duration::from_secs(60 * m))
            .expect("recorded");
    }
    a.flush().expect("written");
    std::fs::remove_file(&path).expect("rm metrics.db, not its -wal and -shm");
    assert_eq!(
        store_error(a.record_durable(&[(Event::Digest, None)])),
        Some(StoreErrorKind::Gone)
    );
    a.flush()
        .expect("a fresh store, with the directory there, gets everything");
    drop(a);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    drop(conn);
    let s = open(&path, &clock).snapshot();
    assert_eq!(
        (s.totals.facts, s.facts_24h.facts, s.totals.digests),
        (600, 600, 0)
    );
}

#[test]
fn a_store_file_replaced_underneath_is_not_written_behind_the_replacement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    for _ in 0..5 {
        a.record_fact(&fact());
    }
    a.flush().expect("written");

    // Another store (a backup, say) is moved over the file while it is open.
    let other = dir.path().join("other.db");
    let b = open(&other, &clock);
    b.record_fact(&fact());
    b.shutdown().expect("written");
    drop(b);
    std::fs::rename(&other, &path).expect("replace");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", other.display()));
    }
    assert_eq!(
        store_error(a.record_durable(&[(Event::Digest, None)])),
        Some(StoreErrorKind::Gone)
    );
    assert_eq!(
        store_error(a.flush()),
        Some(StoreErrorKind::Gone),
        "another store at the path is not adopted behind the operator's back"
    );
    assert_eq!(
        a.snapshot().totals.facts,
        5,
        "exported values never go back"
    );
    assert_eq!(
        sql_count(&path, "SELECT value FROM counters WHERE name = 'facts'"),
        1
    );

    // The operator moves the replacement away: a fresh store gets everything.
    std::fs::rename(&path, dir.path().join("moved.db")).expect("move");
    a.flush().expect("a fresh store");
    drop(a);
    assert_eq!(open(&path, &clock).snapshot().totals.facts, 5);
}

#[test]
fn a_store_unreadable_at_start_exports_no_domain_series_until_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    for _ in 0..7 {
        a.record_fact(&fact());
    }
    a.shutdown().expect("written");
    drop(a);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    conn.pragma_update(None, "user_version", version + 1)
        .expect("a newer schema");

    let b = open(&path, &clock);
    assert_eq!(error_kind(&b), Some(StoreErrorKind::Incompatible));
    let pipeline = registered(&b);
    b.record_fact(&fact());
    let samples = scraped(&pipeline, "");
    assert_eq!(samples["reflexio_store_healthy"], 0.0);
    assert_eq!(
        samples["reflexio_store_flush_errors_total{kind=\"incompatible\"}"],
        1.0
    );
    let domain: Vec<_> = samples
        .keys()
        .filter(|k| !k.starts_with("reflexio_store_"))
        .collect();
    assert!(
        domain.is_empty(),
        "nothing exported as zeros or as a partial count: {domain:?}"
    );

    conn.pragma_update(None, "user_version", version)
        .expect("the right binary again");
    drop(conn);
    b.flush().expect("read and written");
    let samples = scraped(&pipeline, "");
    assert_eq!(samples["reflexio_store_healthy"], 1.0);
    assert_eq!(
        samples["reflexio_facts_total"], 8.0,
        "stored plus recorded meanwhile"
    );
    assert_eq!(samples["reflexio_citation_coverage_count"], 8.0);
}

#[test]
fn a_corrupt_store_at_start_exports_no_domain_series_either() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    std::fs::write(&path, vec![0x5a; 8192]).expect("garbage");
    let a = open(&path, &clock());
    assert_eq!(error_kind(&a), Some(StoreErrorKind::Corrupt));
    let pipeline = registered(&a);
    a.record_fact(&fact());
    let samples = scraped(&pipeline, "");
    assert_eq!(samples["reflexio_store_healthy"], 0.0);
    assert!(!samples.contains_key("reflexio_facts_total"), "{samples:?}");
    std::fs::remove_file(&path).expect("moved aside");
    a.flush().expect("a fresh store");
    assert_eq!(scraped(&pipeline, "")["reflexio_facts_total"], 1.0);
}

#[test]
fn one_batch_of_many_tables_stores_no_more_tables_than_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let a = open(&path, &clock());
    let batch: Vec<_> = (0..10_000).map(|i| run(&format!("t{i}"), 1)).collect();
    a.record_durable(&batch).expect("committed");
    let rows = sql_count(&path, "SELECT count(*) FROM retention_tables");
    assert!(rows <= 1025, "{rows} table rows stored");
    assert_eq!(
        sql_count(&path, "SELECT sum(operations) FROM retention_tables"),
        10_000,
        "the tables past the limit count in the overflow row"
    );
    let s = a.snapshot();
    assert!(s.retention_by_table.len() <= 33);
    assert_eq!(
        s.retention_by_table
            .iter()
            .map(|(_, b)| b.operations)
            .sum::<u64>(),
        10_000
    );
}

#[test]
fn concurrent_batches_of_new_tables_store_no_more_tables_than_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let a = open(&path, &clock());
    let b = open(&path, &clock());
    std::thread::scope(|scope| {
        for t in 0..8 {
            let r = if t % 2 == 0 { a.clone() } else { b.clone() };
            scope.spawn(move || {
                for chunk in 0..4 {
                    let batch: Vec<_> = (0..500)
                        .map(|i| run(&format!("t{t}-{chunk}-{i}"), 1))
                        .collect();
                    r.record_durable(&batch).expect("committed");
                }
            });
        }
    });
    let rows = sql_count(&path, "SELECT count(*) FROM retention_tables");
    assert!(rows <= 1025, "{rows} table rows stored");
    assert_eq!(
        sql_count(&path, "SELECT sum(operations) FROM retention_tables"),
        16_000
    );
}

#[test]
fn a_store_with_more_tables_than_are_kept_is_folded_when_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let a = open(&path, &clock());
    a.shutdown().expect("written");
    drop(a);
    // What an earlier version stored from one batch of many tables.
    let mut conn = rusqlite::Connection::open(&path).expect("open");
    let tx = conn.transaction().expect("tx");
    for i in 0..3000 {
        tx.execute(
            "INSERT INTO retention_tables (name, operations, deleted_records, errors, seq) \
             VALUES (?1, 1, 2, 0, 1)",
            [format!("t{i}")],
        )
        .expect("row");
    }
    tx.commit().expect("commit");
    drop(conn);
    let b = open(&path, &clock());
    b.flush().expect("flushed");
    assert!(sql_count(&path, "SELECT count(*) FROM retention_tables") <= 1025);
    assert_eq!(
        sql_count(&path, "SELECT sum(deleted_records) FROM retention_tables"),
        6000
    );
    assert_eq!(b.snapshot().retention_7d.operations, 0);
    let total: u64 = b
        .snapshot()
        .retention_by_table
        .iter()
        .map(|(_, r)| r.operations)
        .sum();
    assert_eq!(total, 3000);
}

fn lock(name: &str, holder: &str) -> LockEvent {
    LockEvent::new(name, holder).expect("valid")
}

#[test]
fn locks_past_the_eviction_age_whose_holder_is_not_known_alive_are_evicted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let pipeline = registered(&a);
    let unknown = lock("import", "w1");
    let mut remote = lock("digest", "w2");
    remote.pid = Some(std::process::id());
    remote.host = Some(reflexio_otel::Name::new("another-host.invalid").expect("valid"));
    let alive = LockEvent::for_this_process("retention", "w3").expect("valid");
    let mut dead = LockEvent::for_this_process("retention", "w4").expect("valid");
    dead.pid = Some(dead_pid());
    let batch: Vec<_> = [&unknown, &remote, &alive, &dead]
        .into_iter()
        .map(|l| (Event::LockAcquired(l.clone()), None))
        .collect();
    a.record_durable(&batch).expect("committed");
    let locks = a.snapshot().locks;
    assert_eq!(
        (locks.active, locks.stale),
        (4, 1),
        "only the dead one at once"
    );

    clock.advance(HOUR + Duration::from_secs(1));
    let locks = a.snapshot().locks;
    assert_eq!(
        (locks.active, locks.stale),
        (4, 4),
        "a lock on another host goes stale by age, as every other"
    );

    // The default eviction age: 24 times the stale threshold.
    clock.advance(23 * HOUR);
    let locks = a.snapshot().locks;
    assert_eq!((locks.active, locks.evicted), (1, 3));
    assert_eq!(scraped(&pipeline, "")["reflexio_evicted_locks_total"], 3.0);
    a.flush().expect("written");
    let held: Vec<_> = open(&path, &clock)
        .held_locks()
        .into_iter()
        .map(|(l, _)| l.holder.to_string())
        .collect();
    assert_eq!(
        held,
        ["w3"],
        "the live holder's lock stays, in the store too"
    );

    // The evicted holder's late release is accepted with the rest of its batch.
    let late = [
        (Event::Fact(fact()), None),
        (Event::LockReleased(unknown), None),
    ];
    a.record_durable(&late).expect("committed");
    assert_eq!(a.snapshot().totals.facts, 1);
}

#[test]
fn a_full_lock_table_never_refuses_the_rest_of_a_batch_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .max_locks(4)
        .store(StoreOptions::new(&path).flush_interval(HOUR))
        .build();
    // Junk fills the table.
    let junk: Vec<_> = (0..4)
        .map(|i| (Event::LockAcquired(lock(&format!("junk{i}"), "x")), None))
        .collect();
    a.record_durable(&junk).expect("committed");
    clock.advance(Duration::from_secs(60));
    let real = LockEvent::for_this_process("daily_digest", "worker-1").expect("valid");
    let batch = [
        (Event::Fact(fact()), None),
        (Event::LockAcquired(real.clone()), None),
    ];
    a.record_durable(&batch)
        .expect("the longest-held lock of an unknown holder makes room");
    let s = a.snapshot();
    assert_eq!((s.totals.facts, s.locks.active, s.locks.evicted), (1, 4, 1));
    assert!(
        a.held_locks()
            .iter()
            .all(|(l, _)| l.name.as_str() != "junk0"),
        "the oldest went"
    );

    // Every slot held by a live process: the longest held of them makes room.
    clock.advance(Duration::from_secs(60));
    let live: Vec<_> = (0..3)
        .map(|i| {
            let l = LockEvent::for_this_process(&format!("live{i}"), "y").expect("valid");
            (Event::LockAcquired(l), None)
        })
        .collect();
    a.record_durable(&live).expect("committed");
    clock.advance(Duration::from_secs(60));
    let batch = [
        (Event::Fact(fact()), None),
        (
            Event::LockAcquired(LockEvent::for_this_process("one_more", "z").expect("valid")),
            None,
        ),
    ];
    a.record_durable(&batch)
        .expect("a table of live holders never blocks a new lock");
    let s = a.snapshot();
    assert_eq!((s.totals.facts, s.locks.active, s.locks.evicted), (2, 4, 5));
    let held: Vec<String> = a
        .held_locks()
        .iter()
        .map(|(l, _)| l.name.as_str().to_owned())
        .collect();
    assert_eq!(
        held,
        ["live0", "live1", "live2", "one_more"],
        "the longest held went"
    );
    // A batch that alone takes more locks than are tracked is the batch's fault.
    let too_many: Vec<_> = (0..5)
        .map(|i| (Event::LockAcquired(lock(&format!("many{i}"), "w")), None))
        .collect();
    assert!(matches!(
        a.record_durable(&too_many),
        Err(DurableError::Invalid {
            index: 4,
            error: RecordError::TooManyLocks { limit: 4 }
        })
    ));
    assert_eq!(a.snapshot().locks.evicted, 5, "nothing of it recorded");
}

#[test]
fn the_write_ahead_log_stays_bounded_after_a_burst_and_fits_a_small_volume() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A volume of 2 MiB: the store, its log and their index fit in it with room to spare.
    let disk = disk::SmallDisk::new(dir.path(), "2m");
    let path = disk.0.join("metrics.db");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let clock = clock();
    let a = open(&path, &clock);
    let now = clock.now();
    // Each batch touches every minute of the day: dozens of pages per commit.
    for i in 0..150 {
        let batch: Vec<_> = (0..1440u64)
            .map(|m| (Event::Fact(fact()), Some(now - Duration::from_secs(60 * m))))
            .collect();
        if let Err(e) = a.record_durable(&batch) {
            let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
            panic!("batch {i}: {e}; the write-ahead log is {size} bytes");
        }
    }
    a.flush().expect("flushed");
    let size = std::fs::metadata(&wal).expect("the log").len();
    assert!(
        size <= 1536 * 1024,
        "the write-ahead log is {size} bytes after the burst"
    );
    drop(a);
    assert_eq!(open(&path, &clock).snapshot().totals.facts, 150 * 1440);
}

#[test]
fn damage_to_a_running_store_is_noticed_by_the_periodic_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .store(
            StoreOptions::new(&path)
                .flush_interval(Duration::from_millis(20))
                .integrity_check_interval(Duration::from_millis(50)),
        )
        .build();
    let pipeline = registered(&a);
    let now = clock.now();
    for m in 0..1440u64 {
        a.record_at(fact(), now - Duration::from_secs(60 * m))
            .expect("recorded");
    }
    a.flush().expect("written");
    // Everything in the main file, then every page overwritten but the first (the schema) and
    // the one a poll with nothing new reads: damage only a full read can see.
    let pages = scramble_pages(&path);
    assert!(pages > 4, "{pages} pages");

    let noticed = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        error_kind(&a) == Some(StoreErrorKind::Corrupt)
    });
    assert!(noticed, "{:?}", a.store_health());
    assert_eq!(scraped(&pipeline, "")["reflexio_store_healthy"], 0.0);
    assert!(
        a.record_durable(&[(Event::Digest, None)]).is_err(),
        "nothing is acknowledged into a damaged file"
    );
    assert_eq!(a.snapshot().totals.facts, 1440, "kept in memory");
}

#[test]
fn the_recorder_tells_the_time_by_its_clock() {
    let clock = clock();
    let r = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .build();
    assert_eq!(r.now(), clock.now());
    clock.advance(HOUR);
    assert_eq!(r.now(), UNIX_EPOCH + Duration::from_secs(START) + HOUR);
}
