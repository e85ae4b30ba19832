//! Records a realistic day and week of Reflexio events and prints the Prometheus exposition.
//!
//! Run with `cargo run --example basic`.

use opentelemetry::metrics::MeterProvider;
use reflexio_otel::{
    CoveConfig, Event, Fact, LockEvent, PrometheusPipeline, Recorder, RetentionRun,
};
use std::time::{Duration, SystemTime};

const MINUTE: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let pipeline = PrometheusPipeline::new()?;
    let recorder = Recorder::new();
    recorder.register(&pipeline.provider.meter("reflexio"));
    let now = SystemTime::now();

    recorder.record(CoveConfig::new(true, 0.7)?)?;

    // Eight days of pipeline activity, one batch every 20 minutes: the oldest day falls outside
    // every window but still counts in the totals.
    for step in 0..(8 * 24 * 3) {
        let at = now - step * 20 * MINUTE;
        recorder.record_at(Event::Transcription, at)?;
        for i in 0..4u32 {
            let n = step * 4 + i;
            let mut fact = Fact::new(if n % 17 == 0 { 0.91 } else { 0.99 })?
                .hallucinated(n % 250 == 0)
                .atomic(n % 40 != 0);
            // Some checks did not run: each verdict counts on its own, and each figure is
            // exported with its own denominator (reflexio_citation_assessed_facts_24h, ...).
            if n % 7 == 0 {
                fact.citation_coverage = None;
            }
            if n % 11 == 0 {
                fact.atomic = None;
            }
            let fact = if n % 3 == 0 {
                fact
            } else {
                fact.with_cove(0.72 + f64::from(n % 25) / 100.0, 1 + n % 3)?
            };
            recorder.record_at(fact, at)?;
        }
    }

    // A digest and retention runs over each table every day; one run failed, one was dry.
    for day in 0..8u32 {
        let at = now - day * 24 * 60 * MINUTE;
        recorder.record_at(Event::Digest, at)?;
        for (table, deleted) in [("transcriptions", 40), ("facts", 160), ("digests", 1)] {
            let run = RetentionRun::new(table, deleted)?;
            let run = match (day, table) {
                (2, "facts") => run.failed("database is locked"),
                (4, "digests") => run.dry_run(true),
                _ => run,
            };
            recorder.record_at(run, at)?;
        }
    }

    // One lock held by a live worker, one left behind two hours ago by a crashed one.
    let _digest_lock = recorder.acquire_lock(LockEvent::new("daily_digest", "worker-1")?)?;
    recorder.record_at(
        Event::LockAcquired(LockEvent::new("retention", "worker-7")?),
        now - 120 * MINUTE,
    )?;

    print!("{}", pipeline.encode()?);
    Ok(())
}
