//! Record-path benchmarks: each `Recorder` call side by side with the raw OpenTelemetry SDK
//! calls a user would make instead, in the same run, and 1 vs 2 recording threads.
//!
//! Run with `cargo bench -p reflexio-otel --bench record`; `scripts/bench-ratios` turns the
//! results into the ratios reported in `docs/benchmarks.md`.

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};
use reflexio_otel::{Fact, PrometheusPipeline, Recorder, RetentionRun};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A varied, repeating stream of facts: some hallucinated, some not atomic, most with CoVe, a
/// few without a citation coverage or an atomicity verdict.
fn facts() -> Vec<Fact> {
    (0..64u32)
        .map(|n| {
            let mut fact = Fact::new(0.90 + f64::from(n % 10) / 100.0)
                .expect("valid")
                .hallucinated(n % 16 == 0)
                .atomic(n % 8 != 0);
            if n % 16 == 7 {
                fact.citation_coverage = None;
            }
            if n % 32 == 11 {
                fact.atomic = None;
            }
            if n % 4 == 0 {
                fact
            } else {
                fact.with_cove(0.70 + f64::from(n % 30) / 100.0, 1 + n % 3)
                    .expect("valid")
            }
        })
        .collect()
}

/// The raw SDK instruments a user would record a fact with, without windows: a counter for each
/// verdict's facts and one for its hits, and a histogram for each value.
struct RawFact {
    facts: Counter<u64>,
    assessed: Counter<u64>,
    hallucinated: Counter<u64>,
    atomicity_assessed: Counter<u64>,
    violations: Counter<u64>,
    coverage: Histogram<f64>,
    confidence: Histogram<f64>,
    rounds: Histogram<f64>,
}

impl RawFact {
    fn new(meter: &Meter) -> Self {
        Self {
            facts: meter.u64_counter("raw_facts").build(),
            assessed: meter.u64_counter("raw_assessed_facts").build(),
            hallucinated: meter.u64_counter("raw_hallucinated_facts").build(),
            atomicity_assessed: meter.u64_counter("raw_atomicity_assessed_facts").build(),
            violations: meter.u64_counter("raw_atomicity_violations").build(),
            coverage: meter
                .f64_histogram("raw_citation_coverage")
                .with_boundaries(vec![0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99])
                .build(),
            confidence: meter
                .f64_histogram("raw_cove_confidence")
                .with_boundaries(vec![
                    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
                ])
                .build(),
            rounds: meter
                .f64_histogram("raw_cove_verification_rounds")
                .with_boundaries(vec![1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0])
                .build(),
        }
    }

    fn record(&self, fact: &Fact) {
        self.facts.add(1, &[]);
        if let Some(hallucinated) = fact.hallucinated {
            self.assessed.add(1, &[]);
            if hallucinated {
                self.hallucinated.add(1, &[]);
            }
        }
        if let Some(atomic) = fact.atomic {
            self.atomicity_assessed.add(1, &[]);
            if !atomic {
                self.violations.add(1, &[]);
            }
        }
        if let Some(coverage) = fact.citation_coverage {
            self.coverage.record(coverage.get(), &[]);
        }
        if let Some(cove) = fact.cove {
            self.confidence.record(cove.confidence.get(), &[]);
            self.rounds.record(f64::from(cove.rounds.get()), &[]);
        }
    }
}

/// A provider with the Prometheus reader, the raw instruments on it, and a recorder
/// registered on it without an upkeep thread: its replay runs only where a bench calls it.
fn setup() -> (PrometheusPipeline, Recorder, RawFact) {
    let pipeline = PrometheusPipeline::new().expect("pipeline");
    let meter = pipeline.provider.meter("bench");
    let recorder = Recorder::builder().without_upkeep_thread().build();
    recorder.register(&meter);
    let raw = RawFact::new(&meter);
    (pipeline, recorder, raw)
}

/// Facts recorded between two upkeep rounds in the `with_replay` bench.
const BATCH: u64 = 1_000;

fn single_calls(c: &mut Criterion) {
    let (pipeline, registered, raw) = setup();
    // The record path is the same registered or not; unregistered, its upkeep thread only
    // drains, so no background replay competes with the measurement.
    let recorder = Recorder::new();
    let facts = facts();
    let meter = pipeline.provider.meter("bench");

    let mut group = c.benchmark_group("record_fact");
    let mut i = 0usize;
    group.bench_function("reflexio", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            recorder.record_fact(black_box(&facts[i & 63]));
        })
    });
    // Everything a fact costs: the record, plus its share of draining, snapshotting and
    // replaying into the SDK histograms, which upkeep otherwise does in the background.
    group.bench_function("reflexio_with_replay", |b| {
        b.iter_custom(|iters| {
            let began = Instant::now();
            let mut done = 0;
            while done < iters {
                let batch = BATCH.min(iters - done);
                for i in 0..batch as usize {
                    registered.record_fact(black_box(&facts[i & 63]));
                }
                registered.run_upkeep();
                done += batch;
            }
            began.elapsed()
        })
    });
    group.bench_function("raw_otel", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            raw.record(black_box(&facts[i & 63]));
        })
    });
    group.finish();

    let transcriptions = meter.u64_counter("raw_transcriptions").build();
    let mut group = c.benchmark_group("record_transcription");
    group.bench_function("reflexio", |b| b.iter(|| recorder.record_transcription()));
    group.bench_function("raw_otel", |b| b.iter(|| transcriptions.add(1, &[])));
    group.finish();

    let run = RetentionRun::new("facts", 120).expect("valid");
    let operations = meter.u64_counter("raw_retention_operations").build();
    let deleted = meter.u64_counter("raw_retention_deleted_records").build();
    let errors = meter.u64_counter("raw_retention_errors").build();
    let mut group = c.benchmark_group("record_retention");
    group.bench_function("reflexio", |b| b.iter(|| recorder.record_retention(&run)));
    group.bench_function("raw_otel", |b| {
        b.iter(|| {
            let table = [KeyValue::new("table", run.table.as_str().to_owned())];
            operations.add(1, &table);
            deleted.add(run.deleted_records, &table);
            if run.error.is_some() {
                errors.add(1, &table);
            }
        })
    });
    group.finish();
}

/// Wall time for `threads` threads to record `iters` facts between them.
fn threaded(threads: u64, iters: u64, record: Arc<dyn Fn(&Fact) + Send + Sync>) -> Duration {
    let facts = Arc::new(facts());
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (facts, start, record) = (facts.clone(), start.clone(), record.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..(iters / threads) as usize {
                    record(black_box(&facts[i & 63]));
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for w in workers {
        w.join().expect("worker");
    }
    began.elapsed()
}

/// Events per second with one and two recording threads: a lock shared on the record path
/// would keep two threads from doing twice the work.
fn scaling(c: &mut Criterion) {
    let (_pipeline, _registered, raw) = setup();
    let recorder = Recorder::new();
    let raw = Arc::new(raw);
    let ours: Arc<dyn Fn(&Fact) + Send + Sync> = Arc::new(move |f| recorder.record_fact(f));
    let theirs: Arc<dyn Fn(&Fact) + Send + Sync> = Arc::new(move |f| raw.record(f));

    let mut group = c.benchmark_group("record_fact_threads");
    for threads in [1, 2] {
        let ours = ours.clone();
        group.bench_function(format!("reflexio/{threads}"), move |b| {
            b.iter_custom(|iters| threaded(threads, iters, ours.clone()))
        });
        let theirs = theirs.clone();
        group.bench_function(format!("raw_otel/{threads}"), move |b| {
            b.iter_custom(|iters| threaded(threads, iters, theirs.clone()))
        });
    }
    group.finish();
}

criterion_group!(benches, single_calls, scaling);
criterion_main!(benches);
