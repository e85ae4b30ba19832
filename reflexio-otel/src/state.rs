//! The recorder's shared state — windows, totals, histograms, retention tables, locks and CoVe
//! configuration — behind one mutex that upkeep, snapshots and rare events take, never across
//! I/O.

use crate::event::{CoveConfig, Fact, LockEvent, Name, RetentionRun};
use crate::histogram::HistogramCounts;
use crate::locks::{LockConflict, LockRegistry};
use crate::shard::Drained;
use crate::snapshot::{LockCounts, Snapshot, TableLabel, Totals};
use crate::window::{Bucket, DAY_MINUTES, FactBucket, RetentionBucket, WEEK_MINUTES, Window};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Bounds on what the state holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_tables: usize,
    pub(crate) max_locks: usize,
    pub(crate) stale_lock_after: Duration,
}

/// Cumulative retention counts per table, at most `limit` tables, the rest in one overflow
/// series.
#[derive(Debug)]
struct Tables {
    index: HashMap<Name, usize>,
    named: Vec<(Name, RetentionBucket)>,
    overflow: Option<RetentionBucket>,
    limit: usize,
}

impl Tables {
    fn new(limit: usize) -> Self {
        Self {
            index: HashMap::new(),
            named: Vec::new(),
            overflow: None,
            limit,
        }
    }

    fn add(&mut self, table: &Name, delta: &RetentionBucket) {
        let bucket = match self.index.get(table) {
            Some(&i) => &mut self.named[i].1,
            None if self.named.len() < self.limit => {
                let i = self.named.len();
                self.index.insert(table.clone(), i);
                self.named.push((table.clone(), RetentionBucket::default()));
                &mut self.named[i].1
            }
            None => self.overflow.get_or_insert_with(RetentionBucket::default),
        };
        bucket.add(delta);
    }

    fn snapshot(&self) -> Vec<(TableLabel, RetentionBucket)> {
        let mut out: Vec<_> = self
            .named
            .iter()
            .map(|(n, b)| (TableLabel::Table(n.clone()), *b))
            .collect();
        if let Some(b) = self.overflow {
            out.push((TableLabel::Overflow, b));
        }
        out
    }
}

#[derive(Debug)]
pub(crate) struct State {
    facts: Window<FactBucket>,
    retention: Window<RetentionBucket>,
    totals: Totals,
    histograms: HistogramCounts,
    tables: Tables,
    locks: LockRegistry,
    cove: Option<(CoveConfig, SystemTime)>,
    seq: u64,
    limits: Limits,
}

impl State {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            facts: Window::new(DAY_MINUTES),
            retention: Window::new(WEEK_MINUTES),
            totals: Totals::default(),
            histograms: HistogramCounts::default(),
            tables: Tables::new(limits.max_tables),
            locks: LockRegistry::new(limits.max_locks),
            cove: None,
            seq: 0,
            limits,
        }
    }

    /// The newest minute seen: the windows end here.
    pub(crate) fn head(&self) -> u64 {
        self.facts.head().max(self.retention.head())
    }

    /// Moves the windows forwards to `minute` (never backwards).
    pub(crate) fn advance(&mut self, minute: u64) {
        self.facts.advance(minute);
        self.retention.advance(minute);
    }

    /// Adds a minute's worth of facts to the 24h window and the totals. Histograms are counted
    /// separately ([`State::add_drained`], [`State::add_fact`]).
    pub(crate) fn add_facts(&mut self, minute: u64, bucket: &FactBucket) {
        self.advance(minute);
        self.facts.add(minute, bucket);
        let t = &mut self.totals;
        t.facts = t.facts.wrapping_add(bucket.facts);
        t.hallucinated = t.hallucinated.wrapping_add(bucket.hallucinated);
        t.atomicity_violations = t.atomicity_violations.wrapping_add(bucket.non_atomic);
    }

    /// Adds one fact that did not go through the shards.
    pub(crate) fn add_fact(&mut self, minute: u64, fact: &Fact) {
        self.add_facts(minute, &FactBucket::of(fact));
        self.histograms.observe(fact);
    }

    /// Adds what a drain of the shards took out, besides the fact buckets.
    pub(crate) fn add_drained(&mut self, drained: &Drained) {
        let t = &mut self.totals;
        t.transcriptions = t.transcriptions.wrapping_add(drained.transcriptions);
        t.digests = t.digests.wrapping_add(drained.digests);
        self.histograms.add(&drained.histograms);
    }

    pub(crate) fn add_retention(&mut self, minute: u64, run: &RetentionRun) {
        let delta = RetentionBucket {
            operations: 1,
            deleted_records: run.counted_deletions(),
            errors: u64::from(run.error.is_some()),
        };
        self.advance(minute);
        self.retention.add(minute, &delta);
        self.tables.add(&run.table, &delta);
    }

    /// Keeps the configuration with the latest event time.
    pub(crate) fn set_cove(&mut self, config: CoveConfig, at: SystemTime) {
        if self.cove.is_none_or(|(_, t)| at >= t) {
            self.cove = Some((config, at));
        }
    }

    pub(crate) fn acquire_lock(
        &mut self,
        event: &LockEvent,
        at: SystemTime,
    ) -> Result<(), LockConflict> {
        self.locks.acquire(event, at)
    }

    pub(crate) fn release_lock(&mut self, event: &LockEvent) -> Result<(), LockConflict> {
        self.locks.release(event).map(drop)
    }

    pub(crate) fn snapshot(&mut self, now: SystemTime) -> Snapshot {
        self.seq += 1;
        let (active, stale) = self.locks.counts(now, self.limits.stale_lock_after);
        Snapshot {
            at: now,
            totals: self.totals,
            facts_24h: self.facts.sum(),
            retention_7d: self.retention.sum(),
            retention_by_table: self.tables.snapshot(),
            histograms: self.histograms,
            locks: LockCounts { active, stale },
            cove: self.cove.map(|(c, _)| c),
            seq: self.seq,
        }
    }
}
