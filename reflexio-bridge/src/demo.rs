//! The `--demo` workload: a steady, realistic stream of pipeline events, so that a new user sees
//! every metric live at once. Into an empty store it first writes a day of fact history and a
//! week of retention runs, so the windows are full from the start.

use crate::config::RETENTION_TABLES as TABLES;
use crate::worker::{Stop, Worker};
use reflexio_otel::{CoveConfig, Event, Fact, LockEvent, Recorder, RetentionRun, ValueError};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

/// The running workload; stopped on drop.
pub(crate) struct Demo {
    _worker: Worker,
}

/// A fact such as the pipeline produces: about 1 in 150 hallucinated, 1 in 40 not atomic,
/// citation coverage mostly above 95%, CoVe on four in five. Each verdict is sometimes missing
/// (a check that did not run): the hallucination verdict on 1 in 30, atomicity on 1 in 20,
/// citation coverage on 1 in 12, so each figure has its own denominator.
fn fact(rng: &mut fastrand::Rng) -> Result<Fact, ValueError> {
    let mut fact = Fact::unassessed();
    if rng.u8(..30) != 0 {
        fact = fact.hallucinated(rng.u16(..150) == 0);
    }
    if rng.u8(..20) != 0 {
        fact = fact.atomic(rng.u8(..40) != 0);
    }
    if rng.u8(..12) != 0 {
        let coverage = if rng.u8(..20) == 0 {
            0.80 + rng.f64() * 0.15
        } else {
            0.95 + rng.f64() * 0.05
        };
        fact = fact.with_citation_coverage(coverage)?;
    }
    if rng.u8(..5) == 0 {
        Ok(fact)
    } else {
        fact.with_cove(0.62 + rng.f64() * 0.37, 1 + rng.u32(..3))
    }
}

fn retention(rng: &mut fastrand::Rng, table: &str) -> Result<RetentionRun, ValueError> {
    let run = RetentionRun::new(table, rng.u64(..60))?.dry_run(rng.u8(..10) == 0);
    Ok(if rng.u8(..25) == 0 {
        run.failed("database is locked")
    } else {
        run
    })
}

/// A day of facts (one a minute) and a week of hourly retention runs and daily digests.
fn backfill(recorder: &Recorder, rng: &mut fastrand::Rng) -> anyhow::Result<()> {
    let now = recorder.now();
    for minute in 1..24 * 60u32 {
        let at = now - Duration::from_secs(60 * u64::from(minute));
        recorder.record_at(Event::Transcription, at)?;
        recorder.record_at(fact(rng)?, at)?;
    }
    for hour in 1..7 * 24u32 {
        let at = now - HOUR * hour;
        recorder.record_at(retention(rng, TABLES[hour as usize % 3])?, at)?;
        if hour % 24 == 0 {
            recorder.record_at(Event::Digest, at)?;
        }
    }
    Ok(())
}

fn run(recorder: &Recorder, stop: &Stop) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::new();
    recorder.record(CoveConfig::new(true, 0.7)?)?;
    if recorder.snapshot().totals.facts == 0 {
        backfill(recorder, &mut rng)?;
    }
    let worker = LockEvent::new("retention_job", "demo-worker")?;
    let crashed = LockEvent::new("daily_digest", "demo-worker-crashed")?;
    // A demo that was killed may have left its locks in the store.
    for lock in [&worker, &crashed] {
        let _ = recorder.record(Event::LockReleased(lock.clone()));
    }
    let mut held = false;
    let mut stale = false;
    for tick in 0u64.. {
        if stop.requested() {
            break;
        }
        recorder.record_transcription();
        for _ in 0..1 + rng.u8(..4) {
            recorder.record_fact(&fact(&mut rng)?);
        }
        if tick % 30 == 0 {
            recorder.record_retention(&retention(&mut rng, TABLES[(tick / 30) as usize % 3])?);
        }
        if tick % 600 == 0 {
            recorder.record_digest();
        }
        // A job lock held for 5 of every 20 seconds.
        match tick % 20 {
            0 if !held => {
                recorder.record(Event::LockAcquired(worker.clone()))?;
                held = true;
            }
            5 if held => {
                recorder.record(Event::LockReleased(worker.clone()))?;
                held = false;
            }
            _ => {}
        }
        // Every ten minutes, a worker "crashes" holding a lock taken over an hour ago; it is
        // cleaned up two minutes later.
        match tick % 600 {
            60 if !stale => {
                let taken = recorder.now() - 61 * Duration::from_secs(60);
                recorder.record_at(Event::LockAcquired(crashed.clone()), taken)?;
                stale = true;
            }
            180 if stale => {
                recorder.record(Event::LockReleased(crashed.clone()))?;
                stale = false;
            }
            _ => {}
        }
        stop.pause(Duration::from_secs(1));
    }
    if held {
        recorder.record(Event::LockReleased(worker))?;
    }
    if stale {
        recorder.record(Event::LockReleased(crashed))?;
    }
    Ok(())
}

impl Demo {
    pub(crate) fn start(recorder: Recorder) -> anyhow::Result<Self> {
        let worker = Worker::spawn("demo", move |stop| {
            if let Err(e) = run(&recorder, stop) {
                tracing::error!(error = %e, "the demo workload stopped");
            }
        })?;
        Ok(Self { _worker: worker })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflexio_otel::ManualClock;
    use std::time::SystemTime;

    #[test]
    fn the_backfill_is_stamped_by_the_recorders_clock() {
        let clock = ManualClock::new(SystemTime::now() - 30 * 24 * HOUR);
        let recorder = Recorder::builder()
            .clock(clock)
            .without_upkeep_thread()
            .build();
        let mut rng = fastrand::Rng::with_seed(7);
        backfill(&recorder, &mut rng).expect("every event at or before the recorder's now");
        let s = recorder.snapshot();
        assert_eq!(s.facts_24h.facts, 24 * 60 - 1);
        assert_eq!(s.retention_7d.operations, 7 * 24 - 1);
    }
}
