//! The real binary when its store goes away or is damaged while it runs (ingest is refused with
//! 503, `/readyz` says why, nothing acknowledged is lost, and it recovers once the store is
//! usable again), when junk fills its lock table, and when it cannot read the store at start.

mod common;
#[path = "../../reflexio-otel/tests/support/damage.rs"]
mod damage;

use common::{Bridge, eventually, fact, stored};
use damage::scramble_pages;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn batch(n: usize) -> String {
    Value::Array((0..n).map(|i| fact(i % 2 == 0, 0.97)).collect()).to_string()
}

/// `/readyz`'s status and the kind of the store's trouble.
fn readiness(bridge: &Bridge) -> (u16, String) {
    let (status, _, body) = bridge.get("/readyz", None);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    (
        status,
        body["store"]["kind"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn a_deleted_store_directory_turns_ingest_away_until_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("store");
    std::fs::create_dir(&sub).expect("mkdir");
    let store = sub.join("metrics.db");
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--flush-interval",
        "100ms",
    ]);
    let json = "application/json";
    assert_eq!(bridge.post(batch(10), json, None).0, 202);

    std::fs::remove_dir_all(&sub).expect("rm -rf");
    let (status, body) = bridge.post(batch(5), json, None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(readiness(&bridge), (503, "gone".to_owned()));
    assert_eq!(bridge.scrape()["reflexio_store_healthy"], 0.0);
    assert_eq!(
        bridge.scrape()["reflexio_facts_total"],
        10.0,
        "what was acknowledged is still exported"
    );
    assert!(
        bridge.log_text().contains("deleted"),
        "{}",
        bridge.log_text()
    );

    std::fs::create_dir(&sub).expect("the directory is back");
    assert!(eventually(WAIT, || readiness(&bridge).0 == 200));
    assert_eq!(bridge.post(batch(3), json, None).0, 202);
    assert!(bridge.terminate().success());
    assert_eq!(
        stored(&store).totals.facts,
        13,
        "nothing acknowledged was lost"
    );
}

#[test]
fn damage_to_the_store_of_a_running_bridge_makes_it_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--flush-interval",
        "100ms",
        "--integrity-check-interval",
        "200ms",
    ]);
    let json = "application/json";
    // Facts over every minute of the day: a store of many pages.
    let now = jiff::Timestamp::now();
    let events: Vec<Value> = (0..1440)
        .map(|m| {
            let mut f = fact(false, 0.97);
            f["time"] = json!((now - jiff::SignedDuration::from_mins(m)).to_string());
            f
        })
        .collect();
    assert_eq!(
        bridge.post(Value::Array(events).to_string(), json, None).0,
        202
    );

    // Every page in the main file, then all but the schema's and the one a quiet flush reads
    // overwritten.
    scramble_pages(&store);

    assert!(
        eventually(WAIT, || readiness(&bridge).0 == 503),
        "{}",
        bridge.log_text()
    );
    assert_eq!(readiness(&bridge).1, "corrupt");
    assert_eq!(bridge.scrape()["reflexio_store_healthy"], 0.0);
    assert_eq!(bridge.post(batch(2), json, None).0, 503);
    assert_eq!(bridge.scrape()["reflexio_facts_total"], 1440.0);

    // The operator moves the damaged file aside: a fresh store gets everything.
    std::fs::rename(&store, dir.path().join("damaged.db")).expect("move");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    assert!(eventually(WAIT, || readiness(&bridge).0 == 200));
    assert_eq!(bridge.post(batch(2), json, None).0, 202);
    assert!(bridge.terminate().success());
    assert_eq!(stored(&store).totals.facts, 1442);
}

#[test]
fn junk_locks_filling_the_table_never_make_real_events_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&["--store", store.to_str().expect("path")]);
    let json = "application/json";
    let junk: Vec<Value> = (0..1024)
        .map(|i| json!({"type": "lock_acquired", "name": format!("junk{i:04}"), "holder": "x"}))
        .collect();
    assert_eq!(
        bridge.post(Value::Array(junk).to_string(), json, None).0,
        202
    );
    let real = json!([
        fact(false, 0.97),
        {"type": "lock_acquired", "name": "daily_digest", "holder": "worker-1", "pid": 4242}
    ]);
    let (status, body) = bridge.post(real.to_string(), json, None);
    assert_eq!(status, 202, "{body}");
    let late = json!([
        fact(true, 0.97),
        {"type": "lock_released", "name": "junk0000", "holder": "x"}
    ]);
    let (status, body) = bridge.post(late.to_string(), json, None);
    assert_eq!(status, 202, "a late release of an evicted lock: {body}");
    let s = bridge.scrape();
    assert_eq!(s["reflexio_facts_total"], 2.0);
    assert_eq!(s["reflexio_active_locks"], 1024.0);
    assert_eq!(s["reflexio_evicted_locks_total"], 1.0);
}

#[test]
fn junk_locks_naming_a_live_process_of_the_bridges_host_never_block_real_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&["--store", store.to_str().expect("path")]);
    let json = "application/json";
    // pid 1 is alive on every host, and the host is the bridge's own: never evictable by age.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let junk: Vec<Value> = (0..1024)
        .map(|i| {
            json!({"type": "lock_acquired", "name": format!("junk{i:04}"), "holder": "x",
                   "pid": 1, "host": host.trim()})
        })
        .collect();
    assert_eq!(
        bridge.post(Value::Array(junk).to_string(), json, None).0,
        202
    );
    for round in 0..3 {
        let real = json!([
            fact(false, 0.97),
            {"type": "lock_acquired", "name": format!("daily_digest{round}"), "holder": "worker-1",
             "pid": std::process::id(), "host": host.trim()}
        ]);
        let (status, body) = bridge.post(real.to_string(), json, None);
        assert_eq!(status, 202, "round {round}: {body}");
    }
    let s = bridge.scrape();
    assert_eq!(s["reflexio_facts_total"], 3.0);
    assert_eq!(s["reflexio_active_locks"], 1024.0);
    assert_eq!(s["reflexio_evicted_locks_total"], 3.0);
    assert!(
        bridge
            .log_text()
            .contains("evicted the lock held longest to make room"),
        "{}",
        bridge.log_text()
    );
}

#[test]
fn a_store_it_cannot_read_at_start_exports_no_counts_until_it_can() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let args = ["--store", store.to_str().expect("path")];
    let bridge = Bridge::start(&args);
    let (status, body) = bridge.post(batch(7), "application/json", None);
    assert_eq!(status, 202, "{body}");
    assert!(bridge.terminate().success());
    // Written by a later version, say: a schema this one does not know.
    let conn = rusqlite::Connection::open(&store).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    conn.execute_batch("PRAGMA user_version = 999")
        .expect("bump");
    drop(conn);

    let bridge = Bridge::start(&args);
    let s = bridge.scrape();
    assert_eq!(s.get("reflexio_store_healthy"), Some(&0.0), "{s:?}");
    for name in ["reflexio_facts_total", "reflexio_transcriptions_total"] {
        assert!(!s.contains_key(name), "{name} exported as 0: {s:?}");
    }
    assert_eq!(readiness(&bridge), (503, "incompatible".to_owned()));
    assert!(bridge.terminate().success());

    // Given back its own schema, the store's totals are exported again: no reset to 0.
    let conn = rusqlite::Connection::open(&store).expect("open");
    conn.execute_batch(&format!("PRAGMA user_version = {version}"))
        .expect("restore");
    drop(conn);
    let bridge = Bridge::start(&args);
    assert!(
        eventually(WAIT, || bridge.scrape().get("reflexio_facts_total")
            == Some(&7.0)),
        "{:?}",
        bridge.scrape()
    );
    assert_eq!(stored(&store).totals.facts, 7);
}
