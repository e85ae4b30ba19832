//! `Idempotency-Key` on `POST /v1/events`, against the real binary: a batch sent again with its
//! key records once and is answered as the first time, also after a kill -9 and a restart, and
//! when the copies arrive at once; another key records again; a flood of keys stays within the
//! bound.

mod common;

use common::Bridge;
use std::path::Path;

fn start(store: &Path, extra: &[&str]) -> Bridge {
    let mut args = vec!["--store", store.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

/// `POST /v1/events` with `key`: status, body, and whether it says it is a replay.
fn post(bridge: &Bridge, body: &str, key: &str) -> (u16, serde_json::Value, bool) {
    let answer = reqwest::blocking::Client::new()
        .post(bridge.url("/v1/events"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .expect("POST");
    let status = answer.status().as_u16();
    let replayed = answer.headers().get("idempotent-replayed").is_some();
    (status, answer.json().expect("JSON"), replayed)
}

const BATCH: &str = r#"[{"type":"digest"},{"type":"transcription"},{"type":"digest"}]"#;

#[test]
fn a_key_records_once_across_a_kill_and_answers_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = start(&store, &[]);
    let first = post(&bridge, BATCH, "batch-1");
    assert_eq!(first, (202, serde_json::json!({"accepted": 3}), false));
    let again = post(&bridge, BATCH, "batch-1");
    assert_eq!(again, (202, serde_json::json!({"accepted": 3}), true));
    assert_eq!(
        post(&bridge, BATCH, "batch-2").0,
        202,
        "another key records"
    );
    let m = bridge.scrape();
    assert_eq!(m["reflexio_digests_total"], 4.0);
    assert_eq!(
        m["reflexio_ingest_requests_total{outcome=\"replayed\"}"],
        1.0
    );
    assert_eq!(m["reflexio_ingest_events_total"], 6.0);

    bridge.kill();
    let bridge = start(&store, &[]);
    assert_eq!(
        post(&bridge, BATCH, "batch-1"),
        (202, serde_json::json!({"accepted": 3}), true),
        "known after kill -9"
    );
    // The same key with another batch: refused, nothing recorded.
    let (status, body, _) = post(&bridge, r#"[{"type":"digest"}]"#, "batch-2");
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("another batch"))
    );
    // Malformed keys: refused before anything is read.
    for key in ["k".repeat(256), "with space".to_owned()] {
        let (status, body, _) = post(&bridge, BATCH, &key);
        assert_eq!(status, 400, "{key}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("Idempotency-Key"))
        );
    }
    // An empty batch keeps its key too.
    assert_eq!(
        post(&bridge, "[]", "empty").1,
        serde_json::json!({"accepted": 0})
    );
    assert!(post(&bridge, "[]", "empty").2);
    let m = bridge.scrape();
    assert_eq!(m["reflexio_digests_total"], 4.0);
    assert_eq!(m["reflexio_transcriptions_total"], 2.0);
}

#[test]
fn copies_sent_at_once_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = start(&store, &[]);
    for round in 0..5 {
        let key = format!("at-once-{round}");
        let answers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| post(&bridge, BATCH, &key)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("joined"))
                .collect()
        });
        assert!(answers.iter().all(|a| a.0 == 202 && a.1["accepted"] == 3));
        assert_eq!(answers.iter().filter(|a| !a.2).count(), 1, "{answers:?}");
    }
    assert_eq!(bridge.scrape()["reflexio_digests_total"], 10.0);
}

#[test]
fn a_flood_of_keys_stays_within_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = start(&store, &["--idempotency-max-keys", "50"]);
    for i in 0..300 {
        assert_eq!(post(&bridge, "[]", &format!("flood-{i}")).0, 202);
    }
    // The newest are known, the oldest forgotten.
    assert!(post(&bridge, "[]", "flood-299").2);
    assert!(!post(&bridge, "[]", "flood-0").2);
    assert_eq!(bridge.terminate().code(), Some(0));
    let conn = rusqlite::Connection::open(&store).expect("open");
    let (rows, counted): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM idempotency_keys), \
             (SELECT value FROM meta WHERE key = 'idempotency_keys')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counts");
    assert_eq!((rows, counted), (50, 50));
}
