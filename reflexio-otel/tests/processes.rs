//! The store across processes: a crash (`kill -9`) loses at most one flush interval of
//! non-durable events and no durable ones; a graceful shutdown loses nothing; processes that
//! share a file add up exactly.
//!
//! This test binary has its own `main`: run without arguments it runs the checks, and it
//! starts copies of itself with `child ...` arguments as the recording processes.

use reflexio_otel::{
    CoveConfig, Event, Fact, LockEvent, Recorder, RetentionRun, Snapshot, StoreOptions,
};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FLUSH: Duration = Duration::from_millis(250);

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_millis() as u64
}

fn fact(n: u64) -> Fact {
    let f = Fact::new(if n.is_multiple_of(3) { 0.9 } else { 0.99 })
        .expect("valid")
        .hallucinated(n.is_multiple_of(10))
        .atomic(!n.is_multiple_of(7));
    if n.is_multiple_of(2) {
        f.with_cove(0.5 + (n % 50) as f64 / 100.0, 1 + (n % 4) as u32)
            .expect("valid")
    } else {
        f
    }
}

/// Everything a snapshot exports, without its time, sequence and store health.
fn values(s: &Snapshot) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        s.totals, s.facts_24h, s.retention_7d, s.retention_by_table, s.histograms, s.locks, s.cove
    )
}

fn store(path: &Path, flush: Duration) -> Recorder {
    Recorder::builder()
        .store(StoreOptions::new(path).flush_interval(flush))
        .build()
}

// ---- children ----------------------------------------------------------------------------

/// Records until killed: batches of 10 facts and a transcription, printing the count after
/// each. Early on, a few durable batches of 3 digests, printing the counts once acked; later,
/// only the periodic flushes write.
fn crash_child(path: &Path) {
    let r = store(path, FLUSH);
    let mut out = std::io::stdout().lock();
    let (mut facts, mut digests) = (0u64, 0u64);
    for batch in 0u64.. {
        for _ in 0..10 {
            r.record_fact(&fact(facts));
            facts += 1;
        }
        r.record_transcription();
        writeln!(out, "recorded {} {facts}", unix_ms(SystemTime::now())).expect("stdout");
        if batch % 100 == 0 && batch <= 300 {
            // A durable batch also writes everything recorded before it.
            let durable = vec![(Event::Digest, None); 3];
            r.record_durable(&durable).expect("durable batch");
            digests += 3;
            writeln!(out, "durable {digests} {facts}").expect("stdout");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Records a fixed mix, shuts down, and prints its final snapshot.
fn graceful_child(path: &Path) {
    let r = store(path, Duration::from_secs(3600));
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    r.record(CoveConfig::new(true, 0.75).expect("valid"))
        .expect("recorded");
    for n in 0..500 {
        r.record_fact(&fact(n));
    }
    r.record_at(fact(1), now - 30 * hour).expect("recorded");
    r.record_transcription();
    r.record_digest();
    for (table, back) in [
        ("facts", hour),
        ("digests", 50 * hour),
        ("audio", 200 * hour),
    ] {
        r.record_at(RetentionRun::new(table, 12).expect("valid"), now - back)
            .expect("recorded");
    }
    r.record(
        RetentionRun::new("facts", 1)
            .expect("valid")
            .failed("locked"),
    )
    .expect("recorded");
    r.record_at(
        Event::LockAcquired(LockEvent::new("retention", "w7").expect("valid")),
        now - 2 * hour,
    )
    .expect("recorded");
    let held = r
        .acquire_lock(LockEvent::new("daily_digest", "w1").expect("valid"))
        .expect("acquired");
    drop(held);
    r.shutdown().expect("final write");
    println!("values {}", values(&r.snapshot()));
}

/// One of several processes: `id` decides its share; prints what it recorded.
fn multi_child(path: &Path, id: u64) {
    let r = store(path, Duration::from_millis(20));
    let (mut facts, mut hallucinated, mut digests) = (0u64, 0u64, 0u64);
    for round in 0..40u64 {
        for i in 0..50 {
            let n = id * 1_000_000 + round * 100 + i;
            r.record_fact(&fact(n));
            facts += 1;
            hallucinated += u64::from(fact(n).hallucinated == Some(true));
        }
        let batch: Vec<_> = (0..25)
            .map(|i| {
                let n = id * 1_000_000 + round * 100 + 50 + i;
                facts += 1;
                hallucinated += u64::from(fact(n).hallucinated == Some(true));
                (Event::Fact(fact(n)), None)
            })
            .chain([(Event::Digest, None)])
            .collect();
        r.record_durable(&batch).expect("durable batch");
        digests += 1;
        r.record_retention(&RetentionRun::new(&format!("table_{}", round % 3), id).expect("valid"));
        std::thread::sleep(Duration::from_millis(5));
    }
    r.shutdown().expect("final write");
    println!("recorded {facts} {hallucinated} {digests}");
}

// ---- checks ------------------------------------------------------------------------------

/// Kills the child when dropped, so a failed check leaves no process behind.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// Waits for a successful exit and returns what the child printed.
    fn output(mut self) -> String {
        let out = self
            .0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("child ran");
        assert!(out.status.success(), "child failed: {:?}", out.status);
        String::from_utf8(out.stdout).expect("UTF-8")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(args: &[&str]) -> Running {
    let exe = std::env::current_exe().expect("test binary");
    Running(Some(
        Command::new(exe)
            .arg("child")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start child"),
    ))
}

fn crash_loses_at_most_one_flush_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let mut child = spawn(&["crash", path.to_str().expect("UTF-8 path")]);
    let stdout = child.child().stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = unix_ms(SystemTime::now());
    child.child().kill().expect("kill -9");
    child.child().wait().expect("reaped");
    let lines = reader.join().expect("reader");

    let mut recorded = Vec::new(); // (unix ms, facts recorded by then)
    let (mut acked_digests, mut durably_written) = (0, 0);
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["recorded", t, n] => {
                recorded.push((t.parse::<u64>().expect("t"), n.parse::<u64>().expect("n")))
            }
            ["durable", n, f] => {
                acked_digests = n.parse().expect("n");
                durably_written = f.parse().expect("f");
            }
            _ => panic!("unexpected child output {line:?}"),
        }
    }
    let last = recorded.last().expect("the child recorded something").1;
    // Everything recorded a flush interval (plus the time a flush takes) before the kill must
    // have been written.
    let deadline = killed_at - 2 * FLUSH.as_millis() as u64;
    let must_have = recorded
        .iter()
        .take_while(|(t, _)| *t <= deadline)
        .last()
        .map_or(0, |(_, n)| *n);
    assert!(must_have > 1000, "the child barely recorded: {must_have}");

    let after = Recorder::builder()
        .without_upkeep_thread()
        .store(StoreOptions::new(&path))
        .build()
        .snapshot();
    let stored = after.totals.facts;
    println!(
        "  recorded {last} facts, {} written, {} lost ({} ms flush interval); {acked_digests} durable digests acked, {} written",
        stored,
        last - stored,
        FLUSH.as_millis(),
        after.totals.digests
    );
    assert!(
        stored >= must_have,
        "lost more than one interval: {stored} < {must_have}"
    );
    assert!(
        stored > durably_written,
        "the periodic flushes wrote nothing after the last durable batch ({durably_written})"
    );
    assert!(
        stored <= last + 10,
        "wrote more than was recorded: {stored} > {last}"
    );
    assert!(
        after.totals.digests >= acked_digests,
        "a durable batch was lost"
    );
    assert!(after.totals.digests <= acked_digests + 3);
    // What was written is a prefix of what was recorded, so the windows agree with it.
    assert_eq!(after.facts_24h.facts, stored);
    let expected_hallucinated = (0..stored)
        .filter(|n| fact(*n).hallucinated == Some(true))
        .count() as u64;
    assert!(
        after.facts_24h.hallucinated.abs_diff(expected_hallucinated) <= 1,
        "hallucinated {} for a prefix of {stored} facts",
        after.facts_24h.hallucinated
    );
    assert_eq!(after.histograms.coverage.count(), stored);
}

fn graceful_shutdown_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let child = spawn(&["graceful", path.to_str().expect("UTF-8 path")]);
    let out = child.output();
    let reported = out
        .lines()
        .find_map(|l| l.strip_prefix("values "))
        .expect("the child reports its values")
        .to_owned();
    let reopened = Recorder::builder()
        .without_upkeep_thread()
        .store(StoreOptions::new(&path))
        .build()
        .snapshot();
    assert_eq!(values(&reopened), reported);
    assert_eq!(reopened.totals.facts, 501);
    assert_eq!(
        reopened.locks.active, 1,
        "the guard's release was written too"
    );
}

fn processes_sharing_a_file_add_up_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.db");
    let path_arg = path.to_str().expect("UTF-8 path");
    // A first process creates the file, so the others race on writing, not on creating it.
    drop(store(&path, FLUSH));
    let children: Vec<Running> = (1..=4)
        .map(|id| spawn(&["multi", path_arg, &id.to_string()]))
        .collect();
    let (mut facts, mut hallucinated, mut digests) = (0u64, 0u64, 0u64);
    for child in children {
        let out = child.output();
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("recorded "))
            .expect("the child reports what it recorded");
        let n: Vec<u64> = line
            .split(' ')
            .map(|v| v.parse().expect("number"))
            .collect();
        facts += n[0];
        hallucinated += n[1];
        digests += n[2];
    }
    let s = Recorder::builder()
        .without_upkeep_thread()
        .store(StoreOptions::new(&path))
        .build()
        .snapshot();
    assert_eq!(s.totals.facts, facts);
    assert_eq!(s.totals.facts, 4 * 40 * 75);
    assert_eq!(s.totals.hallucinated, hallucinated);
    assert_eq!(s.totals.digests, digests);
    assert_eq!(s.facts_24h.facts, facts);
    assert_eq!(s.facts_24h.hallucinated, hallucinated);
    assert_eq!(s.histograms.coverage.count(), facts);
    assert_eq!(s.retention_7d.operations, 4 * 40);
    assert_eq!(s.retention_7d.deleted_records, 40 * (1 + 2 + 3 + 4));
    assert_eq!(s.retention_by_table.len(), 3);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let path = Path::new(&args[3]);
        match args[2].as_str() {
            "crash" => crash_child(path),
            "graceful" => graceful_child(path),
            "multi" => multi_child(path, args[4].parse().expect("id")),
            role => panic!("unknown child role {role}"),
        }
        return;
    }
    let checks: [(&str, fn()); 3] = [
        (
            "crash_loses_at_most_one_flush_interval",
            crash_loses_at_most_one_flush_interval,
        ),
        (
            "graceful_shutdown_loses_nothing",
            graceful_shutdown_loses_nothing,
        ),
        (
            "processes_sharing_a_file_add_up_exactly",
            processes_sharing_a_file_add_up_exactly,
        ),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        let began = Instant::now();
        println!("test {name} ...");
        match std::panic::catch_unwind(check) {
            Ok(()) => println!("test {name} ... ok ({:.1?})", began.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} process test(s) failed");
        std::process::exit(1);
    }
}
