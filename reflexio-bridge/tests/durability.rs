//! Acknowledged means stored: clients ingest concurrently while the bridge is killed with
//! `kill -9`, five times over one store, and after each restart every event acknowledged with 202
//! is counted. A file size limit (`RLIMIT_FSIZE`) reached by the store is a full store, not a
//! killed process.

mod common;

use common::{Bridge, fact};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const CLIENTS: usize = 4;
const BATCH: usize = 50;
const KILLS: usize = 5;

/// Ingests from `CLIENTS` threads until the bridge has acknowledged `until` facts, kills it
/// with SIGKILL, and returns the facts acknowledged.
fn ingest_then_kill(bridge: Bridge, until: u64) -> u64 {
    let url = bridge.url("/v1/events");
    let body = Value::Array((0..BATCH).map(|i| fact(i % 10 == 0, 0.97)).collect()).to_string();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                while !stop.load(Ordering::Relaxed) {
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
        acked.load(Ordering::Relaxed) >= until
    }));
    bridge.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    acked.load(Ordering::Relaxed)
}

#[test]
fn every_acknowledged_event_survives_kill_9_again_and_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let store_arg = store.to_str().expect("path").to_owned();
    // A long flush interval: only the durable path can have written the events.
    let args = ["--store", &store_arg, "--flush-interval", "1h"];
    let mut acked = 0;
    let mut stored = 0;
    for round in 1..=KILLS {
        let bridge = Bridge::start(&args);
        // What the previous rounds stored is still there.
        assert_eq!(bridge.scrape()["reflexio_facts_total"] as u64, stored);
        acked += ingest_then_kill(bridge, 1000);

        let restarted = Bridge::start(&args);
        let v = restarted.scrape();
        restarted.kill();
        let now = v["reflexio_facts_total"] as u64;
        println!("round {round}: {acked} facts acknowledged in all, {now} stored");
        assert!(
            now >= acked,
            "round {round}: acknowledged {acked}, stored only {now}"
        );
        // At most the batches in flight when the bridge died were committed without an answer.
        assert!(
            now <= acked + (KILLS * CLIENTS * BATCH) as u64,
            "round {round}: {now} > {acked} + in flight"
        );
        assert_eq!(now % BATCH as u64, 0, "a batch was recorded in part");
        assert_eq!(v["reflexio_hallucinated_facts_total"] as u64, now / 10);
        // Batches committed without an answer count from now on as acknowledged.
        acked = now;
        stored = now;
    }
}

#[test]
fn a_file_size_limit_makes_the_store_full_instead_of_killing_the_bridge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let store_arg = store.to_str().expect("path");
    // 1 MiB: the store's first file and its write-ahead log fit, a few hundred batches do not.
    let bridge = Bridge::start_under(
        &["prlimit", "--fsize=1048576", "--"],
        &["--store", store_arg, "--flush-interval", "1h"],
        &[],
    );
    let body = Value::Array((0..BATCH).map(|i| fact(i % 10 == 0, 0.97)).collect()).to_string();
    let http = reqwest::blocking::Client::new();
    let mut acked = 0u64;
    let mut refusal = None;
    for _ in 0..5000 {
        let response = http
            .post(bridge.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .unwrap_or_else(|e| {
                panic!(
                    "the bridge died after {acked} facts ({e}):\n{}",
                    bridge.log_text()
                )
            });
        match response.status().as_u16() {
            202 => acked += BATCH as u64,
            status => {
                let retry = response.headers().get("retry-after").cloned();
                refusal = Some((status, retry, response.json::<Value>().expect("JSON")));
                break;
            }
        }
    }
    let (status, retry, body) = refusal.expect("the store never filled up");
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some(), "503 without Retry-After");
    assert_eq!(body["kind"], json!("full"), "{body}");
    assert!(documented_store_kinds().contains(&"full".to_owned()));
    // Alive, and saying why it is not ready.
    assert_eq!(bridge.get("/healthz", None).0, 200);
    let (status, _, ready) = bridge.get("/readyz", None);
    let ready: Value = serde_json::from_str(&ready).expect("JSON");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["store"]["kind"], json!("full"), "{ready}");
    assert!(
        bridge.log_text().contains("full"),
        "nothing logged:\n{}",
        bridge.log_text()
    );
    // The store's own error count says the same as the answers.
    let scraped = bridge.scrape();
    let errors = |kind: &str| {
        scraped
            .get(&format!(
                "reflexio_store_flush_errors_total{{kind=\"{kind}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(errors("full") >= 1.0, "{scraped:?}");
    assert_eq!(errors("io"), 0.0, "{scraped:?}");
    assert!(bridge.terminate().success());

    // Without the limit, everything acknowledged is there.
    let restarted = Bridge::start(&["--store", store_arg]);
    let stored = restarted.scrape()["reflexio_facts_total"] as u64;
    println!("{acked} facts acknowledged before the store was full, {stored} stored");
    assert!(stored >= acked, "acknowledged {acked}, stored {stored}");
}

/// The store kinds docs/openapi.yaml lists for the error's `kind`.
fn documented_store_kinds() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("read the OpenAPI document");
    let doc = yaml_rust2::YamlLoader::load_from_str(&text).expect("YAML");
    doc[0]["components"]["schemas"]["Error"]["properties"]["kind"]["enum"]
        .as_vec()
        .expect("the error's kind lists its values")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn the_documented_store_kinds_are_the_bridges() {
    let kinds: Vec<String> = reflexio_otel::StoreErrorKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    assert_eq!(documented_store_kinds(), kinds);
}
