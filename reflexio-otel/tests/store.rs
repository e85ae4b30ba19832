//! The store within one process: restarts, handles sharing a file, the durable path, faults,
//! and bounded size.

use reflexio_otel::{
    Checkpoint, Clock, CoveConfig, CoveResult, DurableError, Event, Fact, History, IdempotencyKey,
    Keyed, LockEvent, ManualClock, RecordError, Recorder, RetentionRun, Snapshot, StoreErrorKind,
    StoreOptions, TableLabel,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

#[path = "support/disk.rs"]
mod disk;
#[path = "support/exposition.rs"]
mod exposition;
#[path = "support/process.rs"]
mod process;
#[path = "support/store.rs"]
mod store_support;
use disk::SmallDisk;
use process::dead_pid;
use store_support::{START, clock, error_kind, registered, scraped};

const HOUR: Duration = Duration::from_secs(3600);

/// A recorder on `path` that writes only when asked (flush, durable batch, shutdown).
fn open(path: &Path, clock: &ManualClock) -> Recorder {
    open_with(StoreOptions::new(path), clock)
}

fn open_with(options: StoreOptions, clock: &ManualClock) -> Recorder {
    Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .store(options.flush_interval(Duration::from_secs(3600)))
        .build()
}

fn fact(h: bool) -> Fact {
    Fact::new(0.97)
        .expect("valid")
        .hallucinated(h)
        .with_cove(0.85, 2)
        .expect("valid")
}

/// Everything a snapshot exports, without its time, sequence and store health.
fn values(s: &Snapshot) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        s.totals, s.facts_24h, s.retention_7d, s.retention_by_table, s.histograms, s.locks, s.cove
    )
}

fn record_mix(r: &Recorder, clock: &ManualClock) {
    let now = clock.now();
    r.record(CoveConfig::new(true, 0.7).expect("valid"))
        .expect("recorded");
    for i in 0..20 {
        r.record_fact(&fact(i % 5 == 0));
    }
    for (i, back) in [HOUR, 30 * HOUR, 200 * HOUR].into_iter().enumerate() {
        r.record_at(fact(i == 0).atomic(false), now - back)
            .expect("recorded");
    }
    r.record_transcription();
    r.record_digest();
    for (table, deleted, back) in [
        ("facts", 10, HOUR),
        ("digests", 2, 100 * HOUR),
        ("audio", 7, 300 * HOUR),
    ] {
        r.record_at(
            RetentionRun::new(table, deleted).expect("valid"),
            now - back,
        )
        .expect("recorded");
    }
    r.record(
        RetentionRun::new("facts", 0)
            .expect("valid")
            .failed("disk I/O error"),
    )
    .expect("recorded");
    r.record_at(
        Event::LockAcquired(LockEvent::new("retention", "worker-7").expect("valid")),
        now - 2 * HOUR,
    )
    .expect("recorded");
    r.record(Event::LockAcquired(
        LockEvent::new("daily_digest", "worker-1").expect("valid"),
    ))
    .expect("recorded");
}

#[test]
fn a_restart_continues_exactly_where_a_graceful_shutdown_left_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    record_mix(&a, &clock);
    a.shutdown().expect("final write");
    let before = a.snapshot();
    drop(a);

    let b = open(&path, &clock);
    let after = b.snapshot();
    assert_eq!(values(&after), values(&before));
    assert_eq!(after.totals.facts, 23);
    assert_eq!(
        after.facts_24h.facts, 21,
        "the 30h and 200h old facts are outside"
    );
    assert_eq!(
        after.retention_7d.operations, 3,
        "the 300h old run is outside"
    );
    assert_eq!(after.locks.stale, 1);
    assert!(b.store_health().is_some_and(|h| h.is_healthy()));

    // Counters continue from the stored totals, and windows keep sliding.
    b.record_fact(&fact(false));
    clock.advance(2 * HOUR);
    let later = b.snapshot();
    assert_eq!(later.totals.facts, 24);
    assert_eq!(
        later.facts_24h.facts, 22,
        "the 1h old fact is now 3h old, still inside"
    );
    assert_eq!(later.locks.stale, 2);
}

#[test]
fn the_exposition_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let scrape = |r: &Recorder| {
        let mut samples = scraped(&registered(r), "");
        samples.retain(|series, _| !series.starts_with("reflexio_store_"));
        samples
    };
    let a = open(&path, &clock);
    record_mix(&a, &clock);
    let before = scrape(&a);
    a.shutdown().expect("final write");
    drop(a);
    let after = scrape(&open(&path, &clock));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, v) in &before {
        let w = after[k];
        assert!(
            (v - w).abs() <= 1e-9 * v.abs().max(1.0),
            "{k}: {v} before, {w} after"
        );
    }
    assert_eq!(after["reflexio_facts_total"], 23.0);
    assert_eq!(after["reflexio_cove_confidence_count"], 23.0);
}

#[test]
fn handles_sharing_a_file_see_the_union() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let b = open(&path, &clock);
    for _ in 0..3 {
        a.record_fact(&fact(true));
    }
    for _ in 0..5 {
        b.record_fact(&fact(false));
    }
    b.record(RetentionRun::new("facts", 4).expect("valid"))
        .expect("recorded");
    a.flush().expect("flush a");
    b.flush().expect("flush b");
    a.flush().expect("flush a again, reading b");
    for r in [&a, &b] {
        let s = r.snapshot();
        assert_eq!(s.totals.facts, 8);
        assert_eq!(s.facts_24h.facts, 8);
        assert_eq!(s.facts_24h.hallucinated, 3);
        assert_eq!(s.histograms.confidence.count(), 8);
        assert_eq!(s.retention_7d.deleted_records, 4);
    }
    // Neither counts the other's events twice when flushing again.
    a.flush().expect("flush");
    b.flush().expect("flush");
    assert_eq!(a.snapshot().totals.facts, 8);
    assert_eq!(open(&path, &clock).snapshot().totals.facts, 8);
}

#[test]
fn durable_batches_are_committed_before_they_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let batch = [
        (Event::Fact(fact(true)), None),
        (Event::Fact(fact(false)), Some(clock.now() - HOUR)),
        (Event::Transcription, None),
        (
            Event::LockAcquired(LockEvent::new("import", "w1").expect("valid")),
            None,
        ),
    ];
    a.record_durable(&batch).expect("committed");
    a.record_fact(&fact(false)); // not durable, and not flushed

    // Another handle (another process, say) sees the batch without `a` flushing again.
    let b = open(&path, &clock);
    let s = b.snapshot();
    assert_eq!(s.totals.facts, 2);
    assert_eq!(s.totals.transcriptions, 1);
    assert_eq!(s.facts_24h.hallucinated, 1);
    assert_eq!(s.locks.active, 1);
    assert_eq!(
        a.snapshot().totals.facts,
        3,
        "a counts its own unflushed fact too"
    );
}

#[test]
fn a_batch_with_an_invalid_event_records_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let future = clock.now() + HOUR;
    let batch = [
        (Event::Fact(fact(true)), None),
        (Event::Transcription, None),
        (Event::Fact(fact(false)), Some(future)),
        (Event::Digest, None),
    ];
    match a.record_durable(&batch) {
        Err(DurableError::Invalid {
            index: 2,
            error: RecordError::FutureTime { .. },
        }) => {}
        other => panic!("expected the third event to be refused, got {other:?}"),
    }
    let release = [(
        Event::LockReleased(LockEvent::new("import", "w1").expect("valid")),
        None,
    )];
    assert!(matches!(
        a.record_durable(&release),
        Err(DurableError::Invalid {
            index: 0,
            error: RecordError::LockNotHeld { .. }
        })
    ));
    let acquire_twice = [
        (
            Event::LockAcquired(LockEvent::new("import", "w1").expect("valid")),
            None,
        ),
        (
            Event::LockAcquired(LockEvent::new("import", "w1").expect("valid")),
            None,
        ),
    ];
    assert!(matches!(
        a.record_durable(&acquire_twice),
        Err(DurableError::Invalid { index: 1, .. })
    ));
    let empty = values(
        &Recorder::builder()
            .without_upkeep_thread()
            .build()
            .snapshot(),
    );
    assert_eq!(values(&a.snapshot()), empty);
    a.flush().expect("flush");
    assert_eq!(values(&open(&path, &clock).snapshot()), empty);
}

#[test]
fn concurrent_durable_batches_all_land_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let (threads, batches, size) = (8, 25, 100);
    std::thread::scope(|s| {
        for t in 0..threads {
            let a = a.clone();
            s.spawn(move || {
                for _ in 0..batches {
                    let batch: Vec<_> = (0..size)
                        .map(|i| (Event::Fact(fact((i + t) % 10 == 0)), None))
                        .collect();
                    a.record_durable(&batch).expect("committed");
                }
            });
        }
    });
    let total = (threads * batches * size) as u64;
    assert_eq!(a.snapshot().totals.facts, total);
    assert_eq!(a.snapshot().facts_24h.hallucinated, total / 10);
    let health = a.store_health().expect("store");
    assert!(health.flushes <= (threads * batches) as u64 + 1);
    assert_eq!(open(&path, &clock).snapshot().totals.facts, total);
}

#[test]
fn the_durable_path_needs_an_open_store() {
    let memory = Recorder::builder().without_upkeep_thread().build();
    let batch = [(Event::Transcription, None)];
    assert_eq!(memory.record_durable(&batch), Err(DurableError::NoStore));
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(&dir.path().join("metrics.db"), &clock());
    a.shutdown().expect("shutdown");
    assert_eq!(a.record_durable(&batch), Err(DurableError::Closed));
    a.record_transcription();
    assert_eq!(
        a.snapshot().totals.transcriptions,
        1,
        "recording goes on in memory"
    );
}

#[test]
fn a_corrupt_file_is_reported_left_alone_and_replaced_by_a_fresh_store_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).expect("write garbage");
    let clock = clock();
    let a = open(&path, &clock);
    assert_eq!(error_kind(&a), Some(StoreErrorKind::Corrupt));
    let pipeline = registered(&a);

    for _ in 0..4 {
        a.record_fact(&fact(false));
    }
    assert_eq!(a.snapshot().totals.facts, 4, "recording goes on in memory");
    match a.flush() {
        Err(DurableError::Store(e)) => assert_eq!(e.kind(), StoreErrorKind::Corrupt),
        other => panic!("expected a corrupt store, got {other:?}"),
    }
    let health = scraped(&pipeline, "reflexio_store_");
    assert_eq!(health["reflexio_store_healthy"], 0.0);
    assert!(health["reflexio_store_flush_errors_total{kind=\"corrupt\"}"] >= 2.0);
    assert_eq!(
        health["reflexio_store_flush_errors_total{kind=\"busy\"}"],
        0.0
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "never overwritten"
    );

    // The operator moves the damaged file aside: the next flush creates a fresh store and
    // writes everything recorded meanwhile.
    std::fs::rename(&path, dir.path().join("metrics.db.damaged")).expect("rename");
    a.flush().expect("a fresh store");
    assert_eq!(error_kind(&a), None);
    assert_eq!(
        scraped(&pipeline, "reflexio_store_healthy")["reflexio_store_healthy"],
        1.0
    );
    assert_eq!(open(&path, &clock).snapshot().totals.facts, 4);
}

#[test]
fn another_applications_database_is_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reflexio.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE facts (id TEXT PRIMARY KEY, created_at TEXT)")
            .expect("create");
    }
    let a = open(&path, &clock());
    assert_eq!(error_kind(&a), Some(StoreErrorKind::Incompatible));
    a.record_fact(&fact(false));
    assert!(a.flush().is_err());
    let conn = rusqlite::Connection::open(&path).expect("open");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(tables, vec!["facts", "sqlite_autoindex_facts_1"]);
}

#[test]
fn a_locked_database_delays_writes_without_losing_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open_with(
        StoreOptions::new(&path).busy_timeout(Duration::from_millis(100)),
        &clock,
    );
    let pipeline = registered(&a);
    let blocker = rusqlite::Connection::open(&path).expect("open");
    blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    for _ in 0..5 {
        a.record_fact(&fact(true));
    }
    match a.flush() {
        Err(DurableError::Store(e)) => assert_eq!(e.kind(), StoreErrorKind::Busy),
        other => panic!("expected a busy store, got {other:?}"),
    }
    let refused = [(Event::Digest, None)];
    assert!(matches!(
        a.record_durable(&refused),
        Err(DurableError::Store(_))
    ));
    assert_eq!(
        scraped(
            &pipeline,
            "reflexio_store_flush_errors_total{kind=\"busy\"}"
        )
        .values()
        .sum::<f64>(),
        2.0
    );
    assert_eq!(a.snapshot().totals.facts, 5);

    blocker.execute_batch("COMMIT").expect("unlock");
    a.flush().expect("written once the lock is gone");
    let s = open(&path, &clock).snapshot();
    assert_eq!(s.totals.facts, 5, "nothing lost");
    assert_eq!(
        s.totals.digests, 0,
        "the refused durable batch was not recorded"
    );
}

/// Makes a file immutable (even for root) while alive.
struct Immutable(PathBuf);

impl Immutable {
    fn new(path: &Path) -> Self {
        let status = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("chattr runs (e2fsprogs)");
        assert!(
            status.success(),
            "chattr +i failed: the test needs CAP_LINUX_IMMUTABLE"
        );
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_file_is_read_and_written_once_writable_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    record_mix(&a, &clock);
    a.shutdown().expect("final write");
    let stored = values(&a.snapshot());
    drop(a);

    let read_only = Immutable::new(&path);
    let b = open(&path, &clock);
    assert_eq!(
        values(&b.snapshot()),
        stored,
        "the stored values are loaded"
    );
    b.record_fact(&fact(false));
    match b.flush() {
        Err(DurableError::Store(e)) => assert_eq!(e.kind(), StoreErrorKind::ReadOnly, "{e}"),
        other => panic!("expected a read-only store, got {other:?}"),
    }
    assert_eq!(b.snapshot().totals.facts, 24);

    drop(read_only);
    b.flush().expect("writable again");
    assert_eq!(open(&path, &clock).snapshot().totals.facts, 24);
}

#[test]
fn clock_jumps_back_are_counted_and_do_not_move_windows() {
    let clock = clock();
    let r = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .build();
    let pipeline = registered(&r);
    r.record_fact(&fact(false));
    r.snapshot();
    clock.set(clock.now() - 2 * HOUR);
    r.record_fact(&fact(false));
    let s = r.snapshot();
    assert_eq!(s.clock_jumps_back, 1);
    assert_eq!(s.facts_24h.facts, 2);
    clock.set(clock.now() - Duration::from_millis(300));
    assert_eq!(
        r.snapshot().clock_jumps_back,
        1,
        "jitter below a second is not a jump"
    );
    assert_eq!(
        scraped(&pipeline, "reflexio_clock_backward_jumps_total")["reflexio_clock_backward_jumps_total"],
        1.0
    );
}

#[test]
fn the_file_holds_one_window_of_buckets_however_long_it_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let r = open(&path, &clock);
    // Nine days, a fact and a retention run every ten minutes, written every hour.
    for step in 0..(9 * 24 * 6) {
        r.record_fact(&fact(step % 7 == 0));
        r.record_retention(&RetentionRun::new("facts", 3).expect("valid"));
        clock.advance(Duration::from_secs(600));
        if step % 6 == 5 {
            r.flush().expect("flush");
        }
    }
    r.flush().expect("flush");
    let s = r.snapshot();
    assert_eq!(s.totals.facts, 9 * 24 * 6);
    assert_eq!(s.facts_24h.facts, 24 * 6 - 1);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    assert!(
        count("fact_minutes") <= 24 * 6,
        "{} fact minutes",
        count("fact_minutes")
    );
    assert!(
        count("retention_minutes") <= 7 * 24 * 6,
        "{} retention minutes",
        count("retention_minutes")
    );
    let reopened = open(&path, &clock).snapshot();
    assert_eq!(values(&reopened), values(&s));
    let _: SystemTime = clock.now();
}

#[test]
fn a_full_disk_delays_writes_without_losing_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SmallDisk::new(dir.path(), "1m");
    let path = disk.0.join("metrics.db");
    let clock = clock();
    let r = open(&path, &clock);
    r.flush().expect("the empty store fits");

    // Fill the disk to the last byte.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8; 1]);
    }
    let now = clock.now();
    for minute in 0..600u64 {
        r.record_at(
            fact(minute % 4 == 0),
            now - Duration::from_secs(60 * minute),
        )
        .expect("recorded");
    }
    match r.flush() {
        Err(DurableError::Store(e)) => assert_eq!(e.kind(), StoreErrorKind::Full, "{e}"),
        other => panic!("expected a full disk, got {other:?}"),
    }
    assert_eq!(error_kind(&r), Some(StoreErrorKind::Full));
    assert_eq!(
        r.snapshot().facts_24h.facts,
        600,
        "recording goes on in memory"
    );

    std::fs::remove_file(&filler).expect("free the disk");
    r.flush().expect("written once there is room");
    let s = open(&path, &clock).snapshot();
    assert_eq!(s.totals.facts, 600, "nothing lost");
    assert_eq!(s.facts_24h.hallucinated, 150);
}

#[test]
fn a_restarted_holder_takes_over_the_lock_its_crashed_predecessor_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    // What a crashed worker leaves in the store: its lock, under its own pid, now dead.
    let crashed = open(&path, &clock);
    let mut left = LockEvent::for_this_process("daily_digest", "worker-1").expect("valid");
    left.pid = Some(dead_pid());
    crashed.record(Event::LockAcquired(left)).expect("recorded");
    crashed.shutdown().expect("written");
    drop(crashed);

    let restarted = open(&path, &clock);
    let s = restarted.snapshot();
    assert_eq!(
        (s.locks.active, s.locks.stale),
        (1, 1),
        "its process is gone: stale at once"
    );
    let guard = restarted
        .acquire_lock(LockEvent::new("daily_digest", "worker-1").expect("valid"))
        .expect("a new process of the same holder takes the lock over");
    let s = restarted.snapshot();
    assert_eq!((s.locks.active, s.locks.stale), (1, 0));
    assert!(
        restarted
            .acquire_lock(LockEvent::new("daily_digest", "worker-1").expect("valid"))
            .is_err(),
        "the same process acquiring twice is refused"
    );
    drop(guard);
    assert_eq!(restarted.snapshot().locks.active, 0);
}

#[test]
fn sums_past_the_range_of_sqlite_integers_stop_at_it_instead_of_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    a.record_fact(&fact(false));
    a.shutdown().expect("written");
    drop(a);
    // Months of facts later: the cumulative coverage sum (in billionths) is near i64::MAX.
    let near_max = i64::MAX - 100;
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute(
            "UPDATE counters SET value = ?1 WHERE name = 'coverage_sum'",
            [near_max],
        )
        .expect("update");
    let b = open(&path, &clock);
    b.record_fact(&fact(false));
    b.flush().expect("still writable at i64::MAX");
    let expected = i64::MAX as u64;
    assert_eq!(b.snapshot().histograms.coverage.sum, expected);
    assert_eq!(
        open(&path, &clock).snapshot().histograms.coverage.sum,
        expected
    );
}

#[test]
fn a_process_with_a_clock_ahead_does_not_move_the_others_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let good = clock();
    let ahead = ManualClock::new(good.now() + 48 * HOUR);
    let b = open(&path, &good);
    let a = open(&path, &ahead);
    for _ in 0..100 {
        b.record_fact(&fact(false));
    }
    b.flush().expect("flush");
    a.record_fact(&fact(false));
    a.flush().expect("flush");
    b.flush().expect("b reads a's row from 48 hours ahead");
    let s = b.snapshot();
    assert_eq!(s.facts_24h.facts, 100, "b's window stays at b's time");
    assert_eq!(s.totals.facts, 101, "the fact counts in the totals");
    drop((a, b));
    // A process with the right clock is not pinned to the future by the stored row either:
    // its facts land in its own minute.
    let c = open(&path, &good);
    c.record_fact(&fact(false));
    c.flush().expect("flush");
    let now_minute = (START / 60) as i64;
    let conn = rusqlite::Connection::open(&path).expect("open");
    let in_current_minute: i64 = conn
        .query_row(
            "SELECT facts FROM fact_minutes WHERE minute = ?1",
            [now_minute],
            |r| r.get(0),
        )
        .expect("a row for the current minute");
    assert!(in_current_minute >= 1);
    assert_eq!(c.snapshot().facts_24h.hallucinated, 0);
}

#[test]
fn retention_runs_count_under_their_table_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let with_one_label = |path: &Path| {
        Recorder::builder()
            .clock(clock.clone())
            .without_upkeep_thread()
            .max_tables(1)
            .store(StoreOptions::new(path).flush_interval(HOUR))
            .build()
    };
    let a = with_one_label(&path);
    let b = with_one_label(&path);
    a.record_retention(&RetentionRun::new("x", 1).expect("valid"));
    b.record_retention(&RetentionRun::new("y", 1).expect("valid"));
    for _ in 0..10 {
        b.record_retention(&RetentionRun::new("x", 1).expect("valid"));
    }
    a.flush().expect("flush");
    b.flush().expect("flush");
    a.flush().expect("flush");
    for r in [&a, &b] {
        let tables: Vec<_> = r
            .snapshot()
            .retention_by_table
            .iter()
            .map(|(label, b)| (format!("{label:?}"), b.operations))
            .collect();
        assert_eq!(
            tables,
            vec![
                ("Table(Name(\"x\"))".to_owned(), 11),
                ("Overflow".to_owned(), 1)
            ]
        );
    }
}

#[test]
fn a_store_replaced_by_a_fresh_one_continues_from_the_exported_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    record_mix(&a, &clock);
    a.flush().expect("written");
    let before = values(&a.snapshot());

    // The file becomes unwritable (commits go to the write-ahead log, so it too); meanwhile
    // it is replaced by an empty one.
    {
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let read_only = (Immutable::new(&path), Immutable::new(&wal));
        a.record_fact(&fact(true));
        assert!(a.flush().is_err());
        drop(read_only);
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    a.flush().expect("a fresh store");
    let s = a.snapshot();
    assert_eq!(s.totals.facts, 24, "exported counters never go back");
    let reopened = open(&path, &clock).snapshot();
    assert_eq!(values(&reopened), values(&s));
    assert_ne!(values(&s), before);
}

#[test]
fn configuration_reported_after_the_clock_went_back_still_wins() {
    let clock = clock();
    let r = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .build();
    r.record(CoveConfig::new(true, 0.7).expect("valid"))
        .expect("recorded");
    r.snapshot();
    clock.set(clock.now() - HOUR);
    r.record(CoveConfig::new(false, 0.5).expect("valid"))
        .expect("recorded");
    assert_eq!(
        r.snapshot().cove,
        Some(CoveConfig::new(false, 0.5).expect("valid"))
    );
}

#[test]
fn declared_tables_stay_exported_after_reading_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let r = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .tables(["transcriptions", "facts"])
        .expect("valid")
        .store(StoreOptions::new(&path).flush_interval(HOUR))
        .build();
    r.record_retention(&RetentionRun::new("audio", 1).expect("valid"));
    r.flush().expect("flush");
    let tables: Vec<String> = r
        .snapshot()
        .retention_by_table
        .iter()
        .map(|(label, _)| format!("{label:?}"))
        .collect();
    assert_eq!(
        tables,
        [
            "Table(Name(\"transcriptions\"))",
            "Table(Name(\"facts\"))",
            "Table(Name(\"audio\"))"
        ]
    );
}

#[test]
fn each_verdict_counts_on_its_own_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let r = open(&path, &clock);
    let now = clock.now();
    let cove = CoveResult::new(0.6, 3).expect("valid");
    let only = Fact::unassessed();
    r.record_fact(&fact(true));
    r.record_fact(&fact(false));
    r.record(Event::UnassessedFact { cove: None })
        .expect("recorded");
    r.record_fact(&only.hallucinated(true));
    r.record_at(
        only.atomic(false)
            .with_citation_coverage(0.5)
            .expect("valid"),
        now - HOUR,
    )
    .expect("recorded");
    r.record_durable(&[
        (Event::UnassessedFact { cove: Some(cove) }, None),
        (
            Event::Fact(only.with_citation_coverage(1.0).expect("valid")),
            Some(now - HOUR),
        ),
        // Outside the window: in the counters only.
        (
            Event::Fact(only.hallucinated(true).atomic(true)),
            Some(now - 30 * HOUR),
        ),
    ])
    .expect("committed");
    for s in [r.snapshot(), {
        r.flush().expect("flush");
        open(&path, &clock).snapshot()
    }] {
        let w = &s.facts_24h;
        assert_eq!(w.facts, 7);
        assert_eq!((w.assessed(), w.hallucinated), (3, 2));
        assert_eq!((w.atomicity_assessed, w.non_atomic), (3, 1));
        assert_eq!(w.citation_assessed, 4);
        assert!((w.citation_coverage_sum() - 3.44).abs() < 1e-9);
        // The CoVe result of a fact without other verdicts still counts.
        assert_eq!((w.cove_facts, w.rounds_sum), (3, 7));
        assert!((w.cove_confidence_sum() - 2.3).abs() < 1e-9);
        assert_eq!(s.totals.facts, 8);
        assert_eq!(
            (s.totals.hallucination_assessed, s.totals.hallucinated),
            (4, 3)
        );
        assert_eq!(
            (s.totals.atomicity_assessed, s.totals.atomicity_violations),
            (4, 1)
        );
        assert_eq!(s.histograms.coverage.count(), 4);
        assert_eq!(s.histograms.confidence.count(), 3);
    }
    let p = registered(&open(&path, &clock));
    let m = scraped(&p, "reflexio_");
    for (series, value) in [
        ("reflexio_facts_total", 8.0),
        ("reflexio_assessed_facts_total", 4.0),
        ("reflexio_hallucinated_facts_total", 3.0),
        ("reflexio_atomicity_assessed_facts_total", 4.0),
        ("reflexio_atomicity_violations_total", 1.0),
        ("reflexio_citation_coverage_count", 4.0),
        ("reflexio_cove_confidence_count", 3.0),
        ("reflexio_facts_24h", 7.0),
        ("reflexio_assessed_facts_24h", 3.0),
        ("reflexio_hallucinated_facts_24h", 2.0),
        ("reflexio_atomicity_assessed_facts_24h", 3.0),
        ("reflexio_atomicity_violations_24h", 1.0),
        ("reflexio_citation_assessed_facts_24h", 4.0),
        ("reflexio_cove_verified_facts_24h", 3.0),
        ("reflexio_cove_verification_rounds_sum_24h", 7.0),
    ] {
        assert_eq!(m.get(series), Some(&value), "{series}");
    }
    assert_eq!(
        m["reflexio_hallucination_rate_24h"],
        m["reflexio_hallucinated_facts_24h"] / m["reflexio_assessed_facts_24h"]
    );
    assert_eq!(
        m["reflexio_citation_coverage_24h"],
        m["reflexio_citation_coverage_sum_24h"] / m["reflexio_citation_assessed_facts_24h"]
    );
    assert_eq!(
        m["reflexio_cove_avg_confidence_24h"],
        m["reflexio_cove_confidence_sum_24h"] / m["reflexio_cove_verified_facts_24h"]
    );
}

fn checkpoint(key: &str, expected: Option<i64>, value: i64) -> Checkpoint {
    Checkpoint {
        key: key.to_owned(),
        expected,
        value,
    }
}

#[test]
fn checkpoints_move_with_their_batch_or_refuse_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let b = open(&path, &clock);
    let rows = [(Event::Transcription, None), (Event::Digest, None)];
    assert_eq!(a.checkpoint("legacy:transcriptions"), None);
    a.record_durable_checked(&rows, vec![checkpoint("legacy:transcriptions", None, 2)])
        .expect("committed");
    assert_eq!(a.checkpoint("legacy:transcriptions"), Some(2));

    // `b` read the checkpoint before `a` moved it: its batch is refused whole.
    for stale in [None, Some(0)] {
        assert_eq!(
            b.record_durable_checked(&rows, vec![checkpoint("legacy:transcriptions", stale, 2)]),
            Err(DurableError::CheckpointMoved {
                key: "legacy:transcriptions".to_owned()
            })
        );
    }
    // A refused batch refuses nothing else: plain batches and other checkpoints go on.
    b.record_durable(&[(Event::Transcription, None)])
        .expect("committed");
    assert_eq!(b.checkpoint("legacy:transcriptions"), Some(2));
    b.record_durable_checked(
        &rows,
        vec![
            checkpoint("legacy:transcriptions", Some(2), 4),
            checkpoint("legacy:digests", None, 7),
        ],
    )
    .expect("committed");
    // Both checkpoints of one batch move together, or neither does.
    assert_eq!(
        a.record_durable_checked(
            &rows,
            vec![
                checkpoint("legacy:digests", Some(7), 8),
                checkpoint("legacy:transcriptions", Some(2), 5),
            ],
        ),
        Err(DurableError::CheckpointMoved {
            key: "legacy:transcriptions".to_owned()
        })
    );
    a.flush().expect("flush");
    assert_eq!(a.checkpoint("legacy:digests"), Some(7));
    assert_eq!(a.checkpoint("legacy:transcriptions"), Some(4));
    let s = open(&path, &clock).snapshot();
    assert_eq!(s.totals.transcriptions, 3);
    assert_eq!(s.totals.digests, 2);
}

#[test]
fn a_history_counts_once_with_its_checkpoints_in_the_totals_and_no_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let b = open(&path, &clock);
    // A month of past rows, counted; two recent ones, recorded at their times.
    let mut past = History::new();
    past.add_facts(&fact(true), 40);
    past.add_facts(&Fact::unassessed(), 60);
    past.add_transcriptions(250);
    past.add_retention_runs(&RetentionRun::new("facts", 30).expect("valid"), 4);
    past.add_retention_runs(&RetentionRun::new("archive", 1).expect("valid"), 1);
    let recent = [
        (Event::Fact(fact(false)), Some(clock.now() - HOUR)),
        (Event::Transcription, None),
    ];
    let cursor = |expected| vec![checkpoint("legacy:facts", expected, 102)];
    a.record_durable_with_history(&recent, &past, cursor(None))
        .expect("committed");
    // Another reader that read the same rows: refused whole, nothing counted twice.
    assert_eq!(
        b.record_durable_with_history(&recent, &past, cursor(None)),
        Err(DurableError::CheckpointMoved {
            key: "legacy:facts".to_owned()
        })
    );
    // An invalid event refuses the history with it.
    let future = [(Event::Digest, Some(clock.now() + 2 * HOUR))];
    assert!(matches!(
        a.record_durable_with_history(&future, &past, Vec::new()),
        Err(DurableError::Invalid { index: 0, .. })
    ));
    let check = |s: &Snapshot| {
        assert_eq!(
            (
                s.totals.facts,
                s.totals.hallucinated,
                s.totals.transcriptions
            ),
            (101, 40, 251)
        );
        assert_eq!(s.totals.hallucination_assessed, 41);
        assert_eq!((s.facts_24h.facts, s.facts_24h.hallucinated), (1, 0));
        assert_eq!(s.histograms.coverage.count(), 41);
        assert_eq!(s.histograms.rounds.sum, 82);
        assert_eq!(s.retention_7d.operations, 0, "past runs are in no window");
        let tables: BTreeMap<String, (u64, u64)> = s
            .retention_by_table
            .iter()
            .filter_map(|(label, runs)| match label {
                TableLabel::Table(name) => {
                    Some((name.to_string(), (runs.operations, runs.deleted_records)))
                }
                TableLabel::Overflow => None,
            })
            .collect();
        assert_eq!(tables["facts"], (4, 120));
        assert_eq!(tables["archive"], (1, 1));
    };
    check(&a.snapshot());
    a.shutdown().expect("shutdown");
    b.flush().expect("flush");
    check(&b.snapshot());
    // The history is in the store: a restarted reader starts from it.
    b.shutdown().expect("shutdown");
    let reopened = open(&path, &clock);
    check(&reopened.snapshot());
    assert_eq!(reopened.checkpoint("legacy:facts"), Some(102));
}

#[test]
fn checkpoints_need_a_store() {
    let memory = Recorder::builder().without_upkeep_thread().build();
    assert_eq!(
        memory.record_durable_checked(&[], vec![checkpoint("k", None, 1)]),
        Err(DurableError::NoStore)
    );
    assert_eq!(memory.checkpoint("k"), None);
}

#[test]
fn a_store_written_by_the_first_release_is_upgraded_in_place() {
    // Written by the first release (schema 1): at START, 10 facts at coverage 0.9 (2
    // hallucinated, all verified at 0.8 in 2 rounds), 3 transcriptions, one retention run on
    // `facts` deleting 5.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1.db");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    std::fs::copy(fixture, &path).expect("copy");
    let clock = clock();
    clock.advance(HOUR);
    let r = open(&path, &clock);
    let s = r.snapshot();
    assert_eq!(r.store_health().expect("store").last_error, None);
    assert_eq!(s.totals.facts, 10);
    assert_eq!(s.totals.hallucination_assessed, 10);
    assert_eq!(s.totals.atomicity_assessed, 10);
    assert_eq!(s.totals.transcriptions, 3);
    assert_eq!(s.facts_24h.assessed(), 10);
    assert_eq!(s.facts_24h.atomicity_assessed, 10);
    assert_eq!(s.facts_24h.citation_assessed, 10);
    assert_eq!(s.facts_24h.hallucination_rate(), 0.2);
    assert!((s.facts_24h.citation_coverage() - 0.9).abs() < 1e-15);
    assert!((s.facts_24h.cove_avg_confidence() - 0.8).abs() < 1e-15);
    assert_eq!(s.retention_7d.deleted_records, 5);
    assert_eq!(s.histograms.coverage.count(), 10);

    // The upgraded store takes facts with some verdicts and checkpoints.
    r.record_durable_checked(
        &[
            (Event::UnassessedFact { cove: None }, None),
            (Event::Fact(Fact::unassessed().atomic(false)), None),
        ],
        vec![checkpoint("legacy:facts", None, 1)],
    )
    .expect("committed");
    r.shutdown().expect("shutdown");
    let s = open(&path, &clock).snapshot();
    assert_eq!(
        (
            s.totals.facts,
            s.totals.hallucination_assessed,
            s.totals.atomicity_assessed
        ),
        (12, 10, 11)
    );
    assert_eq!(s.facts_24h.hallucination_rate(), 0.2);
    assert_eq!(
        (s.facts_24h.atomicity_assessed, s.facts_24h.non_atomic),
        (11, 1)
    );
    assert_eq!(schema_version(&path), 4);
}

fn schema_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version")
}

/// The figures of the schema 2 fixture, as recorded: in the 24h window at START (and an hour
/// later), and in the counters.
fn check_v2_fixture(s: &Snapshot) {
    let w = &s.facts_24h;
    assert_eq!(w.facts, 14);
    // Schema 2 held facts with every verdict or with none: 8 now and 2 two hours back had all.
    assert_eq!(
        (
            w.hallucination_assessed,
            w.atomicity_assessed,
            w.citation_assessed
        ),
        (10, 10, 10)
    );
    assert_eq!((w.hallucinated, w.non_atomic), (3, 1));
    assert_eq!(w.coverage_sum, 8_200_000_000);
    assert_eq!(
        (w.cove_facts, w.confidence_sum, w.rounds_sum),
        (8, 6_000_000_000, 14)
    );
    assert_eq!(w.hallucination_rate(), 0.3);
    assert_eq!(w.citation_coverage(), 8.2 / 10.0);
    assert_eq!(w.cove_avg_confidence(), 6.0 / 8.0);
    assert_eq!(w.cove_avg_verification_rounds(), 14.0 / 8.0);
    let t = &s.totals;
    assert_eq!((t.facts, t.transcriptions, t.digests), (15, 4, 1));
    assert_eq!((t.hallucination_assessed, t.hallucinated), (11, 4));
    assert_eq!((t.atomicity_assessed, t.atomicity_violations), (11, 1));
    assert_eq!(s.histograms.coverage.count(), 11);
    assert_eq!(s.histograms.confidence.count(), 8);
    assert_eq!(s.retention_7d.deleted_records, 5);
}

#[test]
fn a_store_written_by_the_schema_2_release_is_upgraded_in_place_with_exact_windows() {
    // Written by the release with store schema 2, at START, by one durable batch with the
    // checkpoint `legacy:facts` = 11: the CoVe configuration (on, 0.7); 8 facts at coverage
    // 0.9, 2 of them hallucinated, the last not atomic, the first 6 verified at 0.8 in 2
    // rounds; 3 unassessed facts, 2 of them verified at 0.6 in 1 round; 2 hours back, 2 facts
    // at coverage 0.5 (one hallucinated) and 1 unassessed; 30 hours back, 1 hallucinated fact
    // at coverage 1.0; 4 transcriptions, 1 digest, and a retention run on `facts` deleting 5.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v2.db");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    std::fs::copy(fixture, &path).expect("copy");
    assert_eq!(schema_version(&path), 2);
    let clock = clock();
    clock.advance(HOUR);
    let r = open(&path, &clock);
    assert_eq!(r.store_health().expect("store").last_error, None);
    assert_eq!(schema_version(&path), 4);
    check_v2_fixture(&r.snapshot());
    assert_eq!(r.checkpoint("legacy:facts"), Some(11));
    assert_eq!(
        r.snapshot().cove,
        Some(CoveConfig::new(true, 0.7).expect("valid"))
    );

    // After a restart the windows are the same, and new facts with some verdicts add to them.
    r.shutdown().expect("shutdown");
    let r = open(&path, &clock);
    check_v2_fixture(&r.snapshot());
    r.record_durable(&[
        (Event::Fact(Fact::unassessed().hallucinated(true)), None),
        (
            Event::Fact(
                Fact::unassessed()
                    .with_citation_coverage(0.4)
                    .expect("valid"),
            ),
            Some(clock.now() - HOUR),
        ),
    ])
    .expect("committed");
    r.shutdown().expect("shutdown");
    let s = open(&path, &clock).snapshot();
    let w = &s.facts_24h;
    assert_eq!(w.facts, 16);
    assert_eq!(
        (
            w.hallucination_assessed,
            w.hallucinated,
            w.atomicity_assessed
        ),
        (11, 4, 10)
    );
    assert_eq!((w.citation_assessed, w.coverage_sum), (11, 8_600_000_000));

    // 23 hours later the facts of two hours before START have left the window; the others
    // are still in it.
    clock.advance(22 * HOUR);
    let s = open(&path, &clock).snapshot();
    assert_eq!(
        (s.facts_24h.facts, s.facts_24h.hallucination_assessed),
        (13, 9)
    );
}

#[test]
fn held_locks_list_every_process_s_locks_with_their_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let taken = clock.now() - HOUR;
    let mut lock = LockEvent::new("digest", "lockfile").expect("valid");
    lock.pid = Some(4242);
    a.record_durable(&[(Event::LockAcquired(lock.clone()), Some(taken))])
        .expect("committed");
    let b = open(&path, &clock);
    let _guard = b
        .acquire_lock(LockEvent::new("retention", "cron").expect("valid"))
        .expect("acquired");
    let mut held = b.held_locks();
    held.sort_by(|x, y| x.0.name.as_str().cmp(y.0.name.as_str()));
    assert_eq!(held.len(), 2);
    assert_eq!(held[0], (lock, taken));
    assert_eq!(held[1].0.name.as_str(), "retention");
    assert_eq!(held[1].0.pid, Some(std::process::id()));
}

#[test]
fn a_schema_3_store_is_upgraded_in_place_and_its_keys_survive_a_restart() {
    // Written by schema 3 at START: 6 facts at coverage 0.9 verified at 0.8 in 2 rounds (2
    // hallucinated), 1 fact with only a hallucination verdict (hallucinated), 1 transcription,
    // 1 digest two hours back, a retention run on `facts` deleting 5; checkpoint
    // `legacy:facts` at 7.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v3.db");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    std::fs::copy(fixture, &path).expect("copy");
    assert_eq!(schema_version(&path), 3);
    let clock = clock();
    let r = open(&path, &clock);
    assert_eq!(r.store_health().expect("store").last_error, None);
    assert_eq!(schema_version(&path), 4);
    let check = |s: &Snapshot| {
        let t = &s.totals;
        assert_eq!((t.facts, t.transcriptions, t.digests), (7, 1, 1));
        assert_eq!((t.hallucination_assessed, t.hallucinated), (7, 3));
        assert_eq!(s.facts_24h.citation_assessed, 6);
        assert_eq!(s.retention_7d.deleted_records, 5);
    };
    check(&r.snapshot());
    assert_eq!(r.checkpoint("legacy:facts"), Some(7));

    let key = IdempotencyKey::new("0b8e6f5c-8a4e-4ef1-9a4a-3c1f8f3b9d2e")
        .expect("valid")
        .with_fingerprint([1; 32]);
    let batch = [(Event::Digest, None), (Event::Transcription, None)];
    assert_eq!(r.record_durable_keyed(&batch, &key), Ok(Keyed::Recorded));
    let committed_at = clock.now();
    // Killed right after: nothing but the store survives.
    drop(r);
    clock.advance(HOUR);
    let r = open(&path, &clock);
    assert_eq!(
        r.record_durable_keyed(&batch, &key),
        Ok(Keyed::Replayed {
            accepted: 2,
            at: committed_at
        })
    );
    let other = key.clone().with_fingerprint([2; 32]);
    assert_eq!(
        r.record_durable_keyed(&batch, &other),
        Ok(Keyed::Conflict { at: committed_at })
    );
    let s = r.snapshot();
    assert_eq!((s.totals.digests, s.totals.transcriptions), (2, 2));
    // A refused batch keeps no key: sent again valid, it records.
    let fresh = IdempotencyKey::new("fresh").expect("valid");
    let future = [(Event::Digest, Some(clock.now() + HOUR))];
    assert!(matches!(
        r.record_durable_keyed(&future, &fresh),
        Err(DurableError::Invalid { index: 0, .. })
    ));
    assert_eq!(r.record_durable_keyed(&batch, &fresh), Ok(Keyed::Recorded));
    // A day later the key is forgotten.
    clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(r.record_durable_keyed(&batch, &key), Ok(Keyed::Recorded));
    assert_eq!(r.snapshot().totals.digests, 4);
}

#[test]
fn one_key_sent_by_many_threads_and_two_processes_at_once_records_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let clock = clock();
    let a = open(&path, &clock);
    let b = open(&path, &clock);
    let key = IdempotencyKey::new("the-same-key").expect("valid");
    let outcomes: Vec<Keyed> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let r = if i % 2 == 0 { &a } else { &b };
                let key = &key;
                scope.spawn(move || {
                    r.record_durable_keyed(&[(Event::Digest, None)], key)
                        .expect("committed")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("joined"))
            .collect()
    });
    let recorded = outcomes.iter().filter(|o| **o == Keyed::Recorded).count();
    assert_eq!(recorded, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Keyed::Recorded | Keyed::Replayed { accepted: 1, .. }))
    );
    a.flush().expect("flush");
    assert_eq!(a.snapshot().totals.digests, 1);
}
