//! Snapshots and collections taken while threads record: no ratio or mean ever above 1, and
//! the exported histogram sums end exactly where the recorded values put them.

use opentelemetry::metrics::MeterProvider;
use reflexio_otel::{Fact, PrometheusPipeline, Recorder};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_millis(1500);

/// Runs `writers` threads recording `fact` until `RUN` has passed; returns how many each did.
fn record_while(r: &Recorder, writers: usize, fact: Fact, mut meanwhile: impl FnMut()) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (r, stop) = (r.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100 {
                        r.record_fact(&fact);
                    }
                    n += 100;
                }
                n
            })
        })
        .collect();
    let began = Instant::now();
    while began.elapsed() < RUN {
        meanwhile();
    }
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().map(|t| t.join().expect("writer")).sum()
}

#[test]
fn ratios_and_means_never_exceed_one_while_threads_record() {
    let r = Recorder::builder().without_upkeep_thread().build();
    let fact = Fact::new(1.0)
        .expect("valid")
        .hallucinated(true)
        .atomic(false)
        .with_cove(1.0, 1)
        .expect("valid");
    let mut snapshots = 0u64;
    let recorded = record_while(&r, 2, fact, || {
        let s = r.snapshot();
        let w = &s.facts_24h;
        assert!(s.totals.hallucinated <= s.totals.facts, "{:?}", s.totals);
        assert!(
            w.hallucinated <= w.facts && w.non_atomic <= w.facts,
            "{w:?}"
        );
        assert!(w.cove_facts <= w.facts, "{w:?}");
        assert!(w.hallucination_rate() <= 1.0, "{w:?}");
        assert!(w.citation_coverage() <= 1.0, "{w:?}");
        assert!(w.cove_avg_confidence() <= 1.0, "{w:?}");
        assert!(w.cove_avg_verification_rounds() <= 1.0, "{w:?}");
        snapshots += 1;
    });
    assert!(snapshots > 100, "only {snapshots} snapshots");
    let s = r.snapshot();
    assert_eq!(s.totals.facts, recorded);
    assert_eq!(s.facts_24h.hallucination_rate(), 1.0);
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn exported_histogram_sums_end_exact_after_concurrent_collections() {
    let pipeline = PrometheusPipeline::new().expect("pipeline");
    let r = Recorder::builder().without_upkeep_thread().build();
    r.register(&pipeline.provider.meter("reflexio"));
    let fact = Fact::new(1.0)
        .expect("valid")
        .with_cove(1.0, 1000)
        .expect("valid");
    let recorded = record_while(&r, 3, fact, || {
        pipeline.encode().expect("collection");
    });
    let text = pipeline.encode().expect("final collection");
    let count = sample(&text, "reflexio_citation_coverage_count");
    assert_eq!(count, recorded as f64);
    assert_eq!(sample(&text, "reflexio_citation_coverage_sum"), count);
    assert_eq!(sample(&text, "reflexio_cove_confidence_sum"), count);
    assert_eq!(
        sample(&text, "reflexio_cove_verification_rounds_sum"),
        1000.0 * sample(&text, "reflexio_cove_verification_rounds_count")
    );
}
