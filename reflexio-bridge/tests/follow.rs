//! The legacy follower and the lock directory, driven by a recorder on a manual clock: they
//! compare times by the recorder's clock, and a lock file whose lock the recorder evicted is not
//! recorded again until it changes.

mod common;

use common::process::dead_pid;
use reflexio_bridge::legacy::{LegacySettings, LegacyStats, LockDir, LockNames, Poller};
use reflexio_otel::{Clock, ManualClock, Recorder, StoreOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A recorder on `store` whose clock stands `behind` the system's.
fn recorder(store: &Path, behind: Duration) -> (Recorder, ManualClock) {
    let clock = ManualClock::new(SystemTime::now() - behind);
    let recorder = Recorder::builder()
        .clock(clock.clone())
        .store(StoreOptions::new(store))
        .build();
    (recorder, clock)
}

#[test]
fn lock_files_are_compared_with_the_recorders_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = dir.path().join("locks");
    std::fs::create_dir(&locks).expect("mkdir");
    // Written now by the system's clock: a day ahead of the recorder's.
    std::fs::write(
        locks.join("daily_digest.pid"),
        std::process::id().to_string(),
    )
    .expect("write");
    let (recorder, clock) = recorder(&dir.path().join("metrics.db"), DAY);
    let mut lock_dir = LockDir::new(&locks, LockNames::any());
    lock_dir
        .poll(&recorder)
        .expect("a file newer than the recorder's now counts as taken now");
    let held = recorder.held_locks();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1, clock.now());
    lock_dir.poll(&recorder).expect("unchanged");
    assert_eq!(recorder.held_locks(), held, "not taken anew");
}

#[test]
fn the_follower_reads_rows_by_the_recorders_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("reflexio.db");
    // A month behind the system's clock.
    let (recorder, clock) = recorder(&dir.path().join("metrics.db"), 30 * DAY);
    let written = jiff::Timestamp::try_from(clock.now() - Duration::from_secs(3600)).expect("time");
    let conn = rusqlite::Connection::open(&app).expect("app db");
    conn.execute_batch(&format!(
        "CREATE TABLE transcriptions (id INTEGER PRIMARY KEY, created_at TEXT);
         INSERT INTO transcriptions (created_at) VALUES ('{written}');"
    ))
    .expect("rows");
    drop(conn);
    let settings = LegacySettings {
        db: Some(app),
        lock_dir: None,
        lock_names: LockNames::any(),
        zone: jiff::tz::TimeZone::UTC,
        poll_interval: Duration::from_millis(50),
    };
    let stats = Arc::new(LegacyStats::default());
    let poller = Poller::start(settings, recorder.clone(), stats, None).expect("started");
    let recorded = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        recorder.snapshot().totals.transcriptions == 1
    });
    drop(poller);
    assert!(
        recorded,
        "a row an hour old by the recorder's clock is within the last 7 days"
    );
    assert_eq!(recorder.snapshot().facts_24h.facts, 0);
}

#[test]
fn a_lock_file_whose_lock_was_evicted_is_recorded_again_only_once_it_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = dir.path().join("locks");
    std::fs::create_dir(&locks).expect("mkdir");
    let file = locks.join("retention.pid");
    std::fs::write(&file, dead_pid().to_string()).expect("write");
    let three_hours_ago = SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(three_hours_ago))
        .expect("mtime");
    let clock = ManualClock::new(SystemTime::now());
    let recorder = Recorder::builder()
        .clock(clock.clone())
        .without_upkeep_thread()
        .stale_lock_after(Duration::from_secs(3600))
        .evict_locks_after(Duration::from_secs(2 * 3600))
        .store(StoreOptions::new(dir.path().join("metrics.db")))
        .build();
    let mut lock_dir = LockDir::new(&locks, LockNames::any());
    lock_dir.poll(&recorder).expect("polled");
    let s = recorder.snapshot();
    assert_eq!(
        (s.locks.active, s.locks.evicted),
        (0, 1),
        "its process is gone and it is older than the eviction age"
    );
    for _ in 0..3 {
        lock_dir.poll(&recorder).expect("polled");
        let s = recorder.snapshot();
        assert_eq!((s.locks.active, s.locks.evicted), (0, 1), "not again");
    }
    std::fs::write(&file, std::process::id().to_string()).expect("taken again");
    lock_dir.poll(&recorder).expect("polled");
    let s = recorder.snapshot();
    assert_eq!((s.locks.active, s.locks.stale, s.locks.evicted), (1, 0, 1));
}
