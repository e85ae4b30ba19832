//! Clients ingest concurrently while the bridge is killed with `kill -9`: after a restart,
//! every event acknowledged with 202 is counted.

mod common;

use common::{Bridge, fact};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const CLIENTS: usize = 4;
const BATCH: usize = 50;

#[test]
fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let store_arg = store.to_str().expect("path").to_owned();
    // A long flush interval: only the durable path can have written the events.
    let bridge = Bridge::start(&["--store", &store_arg, "--flush-interval", "1h"]);
    let url = bridge.url("/v1/events");
    let body = Value::Array((0..BATCH).map(|i| fact(i % 10 == 0, 0.97)).collect()).to_string();

    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    let response = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send();
                    match response {
                        Ok(r) if r.status().as_u16() == 202 => {
                            acked.fetch_add(BATCH as u64, Ordering::Relaxed);
                        }
                        Ok(r) => panic!("unexpected answer {}", r.status()),
                        // The bridge is gone.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    // Kill it while batches are in flight.
    assert!(common::eventually(Duration::from_secs(20), || {
        acked.load(Ordering::Relaxed) >= 2000
    }));
    bridge.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let acked = acked.load(Ordering::Relaxed);
    let sent = sent.load(Ordering::Relaxed) * BATCH as u64;

    let restarted = Bridge::start(&["--store", &store_arg]);
    let stored = restarted.scrape()["reflexio_facts_total"] as u64;
    println!("{acked} facts acknowledged, {stored} stored, {sent} sent");
    assert!(
        stored >= acked,
        "acknowledged {acked}, stored only {stored}"
    );
    // At most the batches in flight when the bridge died were committed without an answer.
    assert!(
        stored <= acked + (CLIENTS * BATCH) as u64,
        "{stored} > {acked} + in flight"
    );
    assert_eq!(stored % BATCH as u64, 0, "a batch was recorded in part");
    assert_eq!(
        restarted.scrape()["reflexio_hallucinated_facts_total"] as u64,
        stored / 10
    );
}
