//! The lock-free record path: one shard of counters per recording thread for facts,
//! transcriptions and digests, read by upkeep and snapshots.
//!
//! A shard has exactly one writer, its thread, so recording is a handful of plain loads and
//! stores to memory no other thread writes: no lock, no atomic read-modify-write, no shared
//! cache line, no allocation after the thread's first event. Every counter only grows; the
//! drainer never writes the writer's memory. It keeps, per shard, what it has already taken and
//! takes the difference.
//!
//! Facts are counted in [`SLOTS`] per-minute slots. A writer reuses a slot for another minute
//! only once the drainer has acknowledged everything written to it, so every increment is
//! taken exactly once and attributed to its minute; if the slot is not yet acknowledged (the
//! upkeep stalled, or an old backfill collides with a recent minute), the fact is refused here
//! and takes the slower path through the shared state.
//!
//! A drain that runs while a thread is in the middle of recording one fact may take part of
//! that fact; the next drain takes the rest. The writer stores a fact's fields in a fixed order
//! (each count before the flags and sums it is the denominator of, the slot before the
//! histogram buckets, the version last) with release stores, and the drainer loads them in
//! exactly the reverse order with acquire loads. So whatever part of a fact the drainer sees,
//! it also sees everything written before that part: a numerator never runs ahead of its
//! denominator, a ratio read in between is at most one in-flight fact per recording thread low
//! and never above 1, and a histogram's sum may run ahead of its bucket counts but never
//! behind.

use crate::event::Fact;
use crate::model::bucket::{Bucket, FactBucket};
use crate::model::count;
use crate::model::histogram::{
    CONFIDENCE, CONFIDENCE_BUCKETS, COVERAGE, COVERAGE_BUCKETS, HistogramCounts, ROUNDS,
    ROUNDS_BUCKETS,
};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use thread_local::ThreadLocal;

/// Per-minute fact slots in each shard.
pub(crate) const SLOTS: u64 = 8;

/// Adds `v` to a counter only this thread writes.
#[inline]
fn bump(counter: &AtomicU64, v: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(v),
        Ordering::Release,
    );
}

/// The facts of one minute in one shard, cumulative since the slot was first used.
///
/// `tag` is the minute plus one (zero: never used); `version` counts the facts written to the
/// slot; `acked` is the `version` the drainer has taken everything up to. `counts` are the
/// fields of a [`FactBucket`], in [`FactBucket::fields`] order: every count before the
/// numerators and sums it is the denominator of.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot {
    tag: AtomicU64,
    version: AtomicU64,
    acked: AtomicU64,
    counts: [AtomicU64; FactBucket::FIELDS],
}

impl Slot {
    /// Adds `fact`'s counts, in [`FactBucket::fields`] order.
    #[inline]
    fn add(&self, fact: &FactBucket) {
        for (counter, v) in self.counts.iter().zip(fact.fields()) {
            bump(counter, v);
        }
    }

    /// Loads the counts in the reverse of the order [`Slot::add`] stores them.
    fn read(&self) -> FactBucket {
        let mut fields = [0; FactBucket::FIELDS];
        for (v, counter) in fields.iter_mut().zip(&self.counts).rev() {
            *v = counter.load(Ordering::Acquire);
        }
        FactBucket::from_fields(fields)
    }
}

/// What the drainer has taken from a shard so far.
#[derive(Debug, Default)]
struct Taken {
    slots: [FactBucket; SLOTS as usize],
    histograms: HistogramCounts,
    transcriptions: u64,
    digests: u64,
}

#[derive(Debug, Default)]
struct Shard {
    slots: [Slot; SLOTS as usize],
    transcriptions: AtomicU64,
    digests: AtomicU64,
    coverage: [AtomicU64; COVERAGE_BUCKETS],
    confidence: [AtomicU64; CONFIDENCE_BUCKETS],
    rounds: [AtomicU64; ROUNDS_BUCKETS],
    /// Touched only by the drainer, which holds the shared state's lock.
    taken: Mutex<Taken>,
}

/// What a drain took out of the shards besides the per-minute fact buckets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drained {
    pub(crate) transcriptions: u64,
    pub(crate) digests: u64,
    pub(crate) histograms: HistogramCounts,
}

/// The shards of one recorder, one per thread that has recorded into it.
#[derive(Debug, Default)]
pub(crate) struct Shards {
    shards: ThreadLocal<Shard>,
}

impl Shards {
    fn mine(&self) -> &Shard {
        self.shards.get_or_default()
    }

    pub(crate) fn record_transcription(&self) {
        bump(&self.mine().transcriptions, 1);
    }

    pub(crate) fn record_digest(&self) {
        bump(&self.mine().digests, 1);
    }

    /// Records `fact` in `minute`'s slot. Returns `false`, recording nothing, when the slot
    /// holds another minute that the drainer has not fully taken yet.
    pub(crate) fn record_fact(&self, minute: u64, fact: &Fact) -> bool {
        let shard = self.mine();
        let slot = &shard.slots[(minute % SLOTS) as usize];
        let version = slot.version.load(Ordering::Relaxed);
        if slot.tag.load(Ordering::Relaxed) != minute + 1 {
            if slot.acked.load(Ordering::Acquire) != version {
                return false;
            }
            // Everything in the slot is taken: from here on, its growth belongs to `minute`.
            slot.tag.store(minute + 1, Ordering::Release);
        }
        slot.add(&FactBucket::of(fact));
        if let Some(coverage) = fact.citation_coverage {
            bump(&shard.coverage[COVERAGE.bucket(coverage.nanos())], 1);
        }
        if let Some(cove) = fact.cove {
            bump(
                &shard.confidence[CONFIDENCE.bucket(cove.confidence.nanos())],
                1,
            );
            bump(
                &shard.rounds[ROUNDS.bucket(u64::from(cove.rounds.get()))],
                1,
            );
        }
        slot.version
            .store(version.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes everything recorded since the last drain, passing each minute's new facts to
    /// `facts`.
    pub(crate) fn drain(&self, mut facts: impl FnMut(u64, &FactBucket)) -> Drained {
        let mut out = Drained::default();
        for shard in self.shards.iter() {
            let mut taken = shard.taken.lock().unwrap_or_else(|e| e.into_inner());
            let take = |from: &[AtomicU64], taken: &mut [u64], into: &mut [u64]| {
                for ((a, t), i) in from.iter().zip(taken.iter_mut()).zip(into.iter_mut()) {
                    let now = a.load(Ordering::Acquire);
                    *i = count::add(*i, now.wrapping_sub(*t));
                    *t = now;
                }
            };
            // The histogram buckets are written after the slots, so they are read before them.
            let Taken {
                slots,
                histograms,
                transcriptions,
                digests,
            } = &mut *taken;
            let h = &mut out.histograms;
            take(
                &shard.rounds,
                &mut histograms.rounds.buckets,
                &mut h.rounds.buckets,
            );
            take(
                &shard.confidence,
                &mut histograms.confidence.buckets,
                &mut h.confidence.buckets,
            );
            take(
                &shard.coverage,
                &mut histograms.coverage.buckets,
                &mut h.coverage.buckets,
            );
            for (slot, taken) in shard.slots.iter().zip(slots.iter_mut()) {
                // Every fact up to `version` is complete in what is read next.
                let version = slot.version.load(Ordering::Acquire);
                let now = slot.read();
                // Read after the counts: if they hold a fact of a new minute, so does the tag.
                let tag = slot.tag.load(Ordering::Acquire);
                // The slot's counters only grow, wrapping: their difference is exact.
                let mut delta = now;
                delta.zip(taken, u64::wrapping_sub);
                *taken = now;
                slot.acked.store(version, Ordering::Release);
                if tag != 0 && delta != FactBucket::default() {
                    let h = &mut out.histograms;
                    h.coverage.sum = count::add(h.coverage.sum, delta.coverage_sum);
                    h.confidence.sum = count::add(h.confidence.sum, delta.confidence_sum);
                    h.rounds.sum = count::add(h.rounds.sum, delta.rounds_sum);
                    facts(tag - 1, &delta);
                }
            }
            take(
                std::slice::from_ref(&shard.transcriptions),
                std::slice::from_mut(transcriptions),
                std::slice::from_mut(&mut out.transcriptions),
            );
            take(
                std::slice::from_ref(&shard.digests),
                std::slice::from_mut(digests),
                std::slice::from_mut(&mut out.digests),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MAX_ROUNDS;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn fact(h: bool) -> Fact {
        Fact::new(0.9)
            .expect("valid")
            .hallucinated(h)
            .with_cove(0.8, 2)
            .expect("valid")
    }

    fn drain_all(shards: &Shards) -> (BTreeMap<u64, FactBucket>, Drained) {
        let mut minutes = BTreeMap::new();
        let drained = shards.drain(|m, b| {
            minutes.entry(m).or_insert_with(FactBucket::default).add(b);
        });
        (minutes, drained)
    }

    #[test]
    fn slots_are_reused_only_after_a_drain() {
        let shards = Shards::default();
        for m in 100..108 {
            assert!(shards.record_fact(m, &fact(false)), "fresh slot for {m}");
        }
        assert!(
            shards.record_fact(100, &fact(true)),
            "same minute, same slot"
        );
        assert!(
            !shards.record_fact(108, &fact(false)),
            "slot of 100 not taken yet"
        );
        let (minutes, drained) = drain_all(&shards);
        assert_eq!(minutes.len(), 8);
        assert_eq!(minutes[&100].facts, 2);
        assert_eq!(minutes[&100].hallucinated, 1);
        assert_eq!(drained.histograms.coverage.count(), 9);
        assert_eq!(drained.histograms.rounds.sum, 18);
        assert!(shards.record_fact(108, &fact(false)), "slot of 100 taken");
        assert!(
            !shards.record_fact(92, &fact(false)),
            "slot of 108 not taken yet"
        );
        assert!(
            shards.record_fact(93, &fact(false)),
            "backfill into a taken slot"
        );
        let (minutes, _) = drain_all(&shards);
        assert_eq!(minutes.keys().copied().collect::<Vec<_>>(), vec![93, 108]);
        let (minutes, drained) = drain_all(&shards);
        assert!(minutes.is_empty());
        assert_eq!(drained, Drained::default());
    }

    /// Four kinds of fact: every verdict and a CoVe result, only a hallucination verdict, only
    /// an atomicity verdict and a coverage, only a CoVe result.
    fn kind(k: usize) -> Fact {
        match k {
            0 => fact(false),
            1 => Fact::unassessed().hallucinated(true),
            2 => Fact::unassessed()
                .atomic(false)
                .with_citation_coverage(1.0)
                .expect("valid"),
            _ => Fact::unassessed().with_cove(0.5, 3).expect("valid"),
        }
    }

    /// No numerator ahead of its denominator, and no denominator ahead of the fact count.
    fn consistent(b: &FactBucket) -> bool {
        let at_most = |part: u64, whole: u64| part <= whole;
        at_most(b.hallucinated, b.hallucination_assessed)
            && at_most(b.non_atomic, b.atomicity_assessed)
            && at_most(b.coverage_sum, b.citation_assessed * 1_000_000_000)
            && at_most(b.confidence_sum, b.cove_facts * 1_000_000_000)
            && at_most(b.rounds_sum, b.cove_facts * MAX_ROUNDS as u64)
            && [
                b.hallucination_assessed,
                b.atomicity_assessed,
                b.citation_assessed,
                b.cove_facts,
            ]
            .iter()
            .all(|&n| at_most(n, b.facts))
    }

    #[test]
    fn concurrent_records_and_drains_lose_nothing() {
        let shards = Arc::new(Shards::default());
        let threads = 4u64;
        let per_thread = 40_000u64;
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let shards = Arc::clone(&shards);
                std::thread::spawn(move || {
                    let mut refused = [0u64; 4];
                    for i in 0..per_thread {
                        shards.record_transcription();
                        // Minutes move on while the drainer runs, so slots get reused.
                        let minute = 1_000 + i / 1_000;
                        let k = ((i + t) % 4) as usize;
                        if !shards.record_fact(minute, &kind(k)) {
                            refused[k] += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut minutes = BTreeMap::<u64, FactBucket>::new();
        let mut drained = Drained::default();
        let mut merge = |shards: &Shards| {
            let (m, d) = drain_all(shards);
            for (k, b) in m {
                let minute = minutes.entry(k).or_default();
                minute.add(&b);
                assert!(consistent(minute), "minute {k} read mid-fact: {minute:?}");
            }
            drained.transcriptions += d.transcriptions;
            drained.histograms.add(&d.histograms);
        };
        while writers.iter().any(|w| !w.is_finished()) {
            merge(&shards);
        }
        let mut refused = [0u64; 4];
        for w in writers {
            for (r, n) in refused.iter_mut().zip(w.join().expect("writer")) {
                *r += n;
            }
        }
        merge(&shards);
        let mut total = FactBucket::default();
        for (minute, b) in &minutes {
            assert!(
                (1_000..1_040).contains(minute),
                "fact attributed to minute {minute}"
            );
            // Each minute holds 1000 facts per thread, minus those refused.
            assert!(b.facts <= threads * 1_000);
            total.add(b);
        }
        // Every fact is either in exactly one drained minute or was refused, whole.
        let recorded = refused.map(|r| threads * per_thread / 4 - r);
        assert_eq!(total.facts, recorded.iter().sum::<u64>());
        assert_eq!(total.hallucination_assessed, recorded[0] + recorded[1]);
        assert_eq!(total.hallucinated, recorded[1]);
        assert_eq!(total.atomicity_assessed, recorded[0] + recorded[2]);
        assert_eq!(total.non_atomic, recorded[2]);
        assert_eq!(total.citation_assessed, recorded[0] + recorded[2]);
        assert_eq!(
            total.coverage_sum,
            900_000_000 * recorded[0] + 1_000_000_000 * recorded[2]
        );
        assert_eq!(total.cove_facts, recorded[0] + recorded[3]);
        assert_eq!(total.rounds_sum, 2 * recorded[0] + 3 * recorded[3]);
        assert_eq!(drained.histograms.coverage.count(), total.citation_assessed);
        assert_eq!(drained.histograms.coverage.sum, total.coverage_sum);
        assert_eq!(drained.histograms.confidence.count(), total.cove_facts);
        assert_eq!(drained.transcriptions, threads * per_thread);
    }
}
