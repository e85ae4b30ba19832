//! Resource bounds of the real binary: stalled uploads time out without holding memory or
//! delaying SIGTERM, the number of ingest bodies read at once is bounded, and a bounded soak of
//! concurrent ingest and scrapes keeps memory flat.

mod common;

use common::{Bridge, fact, raw_exchange, rss_kib};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An upload declaring `declared` bytes that sends `sent` of them, then stalls.
fn stalled_upload(addr: &str, declared: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut request = format!(
        "POST /v1/events HTTP/1.1\r\nhost: bridge\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\n\r\n["
    )
    .into_bytes();
    request.resize(request.len() + sent.saturating_sub(1), b' ');
    stream.write_all(&request).expect("write");
    stream
}

/// The status the bridge answered on `stream`, or why there is none.
fn status_of(stream: &mut TcpStream, timeout: Duration) -> Result<u16, String> {
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed without an answer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}

fn batch(n: usize) -> String {
    Value::Array((0..n).map(|i| fact(i % 10 == 0, 0.97)).collect()).to_string()
}

#[test]
fn stalled_uploads_time_out_and_hold_no_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--body-timeout",
        "2s",
    ]);
    assert_eq!(
        bridge.post(batch(100), "application/json", None).0,
        202,
        "warm-up"
    );
    // Full-size bodies first, as a busy bridge sees them (this moves the allocator's
    // thresholds, so that later large reservations come from its heap).
    let mut full = " ".repeat(1_000_000);
    full.push_str("[]");
    for _ in 0..4 {
        assert_eq!(bridge.post(full.clone(), "application/json", None).0, 202);
    }
    let before = rss_kib(bridge.pid());

    // Each declares almost the whole body limit and sends a fifth of it.
    const STALLED: usize = 300;
    let started = Instant::now();
    let mut uploads: Vec<TcpStream> = (0..STALLED)
        .map(|_| stalled_upload(&bridge.addr, 1_000_000, 200_000))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib(bridge.pid());
    let mut statuses = std::collections::BTreeMap::new();
    for upload in &mut uploads {
        let status = status_of(upload, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("a stalled upload after {:?}: {e}", started.elapsed()));
        *statuses.entry(status).or_insert(0) += 1;
    }
    let answered = started.elapsed();
    drop(uploads);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(bridge.pid());
    println!(
        "RSS {before} KiB before, {during} KiB with {STALLED} stalled uploads, {after} KiB after; \
         all answered in {answered:?}: {statuses:?}"
    );
    // Each is cut at the body timeout (408) or refused at once for want of a slot (503).
    assert!(
        statuses.keys().all(|s| *s == 408 || *s == 503),
        "{statuses:?}"
    );
    assert!(answered < Duration::from_secs(8), "{answered:?}");
    // At most --max-ingest-bodies bodies are read at once, held as their bytes arrive: not 300
    // declared megabytes, nor the 60 MB sent.
    assert!(
        during.saturating_sub(before) < 40 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    assert!(
        after.saturating_sub(before) < 40 * 1024,
        "RSS stayed at {after} KiB (from {before} KiB)"
    );
    // The bridge still serves.
    assert_eq!(bridge.post(batch(10), "application/json", None).0, 202);
}

#[test]
fn a_stalled_upload_does_not_delay_sigterm_beyond_the_body_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--body-timeout",
        "2s",
    ]);
    let mut upload = stalled_upload(&bridge.addr, 100_000, 10);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = bridge.terminate();
    let took = started.elapsed();
    println!("SIGTERM with a stalled upload: stopped in {took:?}");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(6), "SIGTERM took {took:?}");
    // The upload was answered, not cut off without a word.
    assert_eq!(status_of(&mut upload, Duration::from_secs(1)), Ok(408));
}

#[test]
fn ingest_bodies_read_at_once_are_bounded_with_a_retryable_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&[
        "--store",
        store.to_str().expect("path"),
        "--body-timeout",
        "3s",
        "--max-ingest-bodies",
        "2",
    ]);
    let mut stalled = [
        stalled_upload(&bridge.addr, 1000, 10),
        stalled_upload(&bridge.addr, 1000, 10),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let request = "POST /v1/events HTTP/1.1\r\nhost: bridge\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: 19\r\n\r\n[{\"type\":\"digest\"}]";
    let refused =
        raw_exchange(&bridge.addr, request.as_bytes(), Duration::from_secs(10)).expect("answer");
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.header("retry-after"), Some("1"));
    let body = refused.json().expect("a JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("send the batch again")),
        "{body}"
    );
    // The slots come back when the stalled bodies time out.
    for s in &mut stalled {
        assert_eq!(status_of(s, Duration::from_secs(10)), Ok(408));
    }
    let accepted =
        raw_exchange(&bridge.addr, request.as_bytes(), Duration::from_secs(10)).expect("answer");
    assert_eq!(accepted.status, 202);
    let v = bridge.scrape();
    assert_eq!(
        v["reflexio_ingest_requests_total{outcome=\"overloaded\"}"],
        1.0
    );
    assert_eq!(
        v["reflexio_ingest_requests_total{outcome=\"timed_out\"}"],
        2.0
    );
    assert_eq!(v["reflexio_digests_total"], 1.0);
}

/// About 20 seconds of concurrent ingest and scrapes: memory is flat once warm.
#[test]
fn memory_stays_flat_under_concurrent_ingest_and_scrapes() {
    const CLIENTS: usize = 3;
    const SCRAPERS: usize = 1;
    const WARM_UP: Duration = Duration::from_secs(4);
    const SOAK: Duration = Duration::from_secs(16);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&["--store", store.to_str().expect("path")]);
    let body = batch(200);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let scrapes = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for i in 0..CLIENTS + SCRAPERS {
        let (url, body) = (bridge.url("/v1/events"), body.clone());
        let scrape_url = bridge.url("/metrics/prometheus");
        let (stop, acked, scrapes) = (stop.clone(), acked.clone(), scrapes.clone());
        threads.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            while !stop.load(Ordering::Relaxed) {
                if i < CLIENTS {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .expect("ingest");
                    assert_eq!(r.status().as_u16(), 202);
                    acked.fetch_add(200, Ordering::Relaxed);
                } else {
                    let r = http.get(&scrape_url).send().expect("scrape");
                    assert_eq!(r.status().as_u16(), 200);
                    assert!(r.text().expect("text").contains("reflexio_facts_total"));
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(WARM_UP);
    let warm = rss_kib(bridge.pid());
    let mut samples = vec![warm];
    let started = Instant::now();
    while started.elapsed() < SOAK {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(rss_kib(bridge.pid()));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a client failed");
    }
    let acked = acked.load(Ordering::Relaxed);
    let peak = samples.iter().copied().max().unwrap_or(warm);
    let last = samples.last().copied().unwrap_or(warm);
    println!(
        "{acked} facts acknowledged and {} scrapes in {:?}; RSS warm {warm} KiB, peak {peak} KiB, \
         last {last} KiB; samples {samples:?}",
        scrapes.load(Ordering::Relaxed),
        WARM_UP + SOAK
    );
    assert!(acked > 10_000, "only {acked} facts acknowledged");
    assert_eq!(bridge.scrape()["reflexio_facts_total"], acked as f64);
    // Flat: the peak stays within 16 MiB of the warm figure, and the last
    // third of the run grows by less than 4 MiB.
    assert!(
        peak.saturating_sub(warm) < 16 * 1024,
        "RSS grew from {warm} KiB to {peak} KiB"
    );
    let third = samples.len() * 2 / 3;
    let late_start = samples[third];
    assert!(
        last.saturating_sub(late_start) < 4 * 1024,
        "RSS still growing at the end: {late_start} KiB -> {last} KiB"
    );
}
