//! The recorder's shared state — windows, totals, histograms, retention tables, locks and CoVe
//! configuration — behind one mutex that upkeep, snapshots, flushes and rare events take,
//! never across I/O.
//!
//! With a store, every change is also added to the `unflushed` delta. What the state exports
//! is then always "what the store holds, plus what is not written yet": after a write, the
//! rows the store returns replace the state's values, with the changes recorded meanwhile
//! added back.

use crate::engine::shard::Drained;
use crate::engine::snapshot::{LockCounts, Snapshot};
use crate::event::{CoveConfig, CoveResult, Fact, LockEvent, Name, RetentionRun};
use crate::model::bucket::{Bucket, FactBucket, RetentionBucket};
use crate::model::changes::Changes;
use crate::model::delta::{Delta, newer_cove};
use crate::model::histogram::HistogramCounts;
use crate::model::locks::{LockConflict, LockRegistry};
use crate::model::totals::{TableLabel, Totals};
use crate::model::window::{DAY_MINUTES, WEEK_MINUTES, Window};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// How far the clock must go back to count as a jump (readers of a coarse clock on several
/// threads see it go back by a few milliseconds).
const CLOCK_JUMP: Duration = Duration::from_secs(1);

/// Bounds on what the state holds, and the tables known from the start.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_tables: usize,
    pub(crate) max_locks: usize,
    pub(crate) stale_lock_after: Duration,
    pub(crate) tables: Vec<Name>,
}

/// Table names the state (and the store) keeps at most; runs over further tables count in the
/// overflow series. Bounds memory and the store whatever names arrive.
const KEPT_TABLES: usize = 1024;

/// Cumulative retention counts per table, by name in the order the tables were first seen (the
/// store's order once read from it), at most [`KEPT_TABLES`] of them. The export labels the
/// first `labelled` and folds the rest into the overflow series.
#[derive(Debug)]
struct Tables {
    index: HashMap<Name, usize>,
    named: Vec<(Name, RetentionBucket)>,
    overflow: Option<RetentionBucket>,
    labelled: usize,
}

impl Tables {
    /// Tables with the `declared` ones first, at zero, so their series exist before any run.
    fn new(labelled: usize, declared: &[Name]) -> Self {
        let mut tables = Self {
            index: HashMap::new(),
            named: Vec::new(),
            overflow: None,
            labelled,
        };
        for name in declared {
            tables.add_to(name, &RetentionBucket::default());
        }
        tables
    }

    /// Where a run over `table` is kept: its own entry, or the overflow one once
    /// [`KEPT_TABLES`] names are kept.
    fn label_for(&self, table: &Name) -> TableLabel {
        if self.index.contains_key(table) || self.named.len() < KEPT_TABLES {
            TableLabel::Table(table.clone())
        } else {
            TableLabel::Overflow
        }
    }

    /// Adds to `table`'s entry; returns `false` if it went to the overflow entry instead.
    fn add_to(&mut self, table: &Name, delta: &RetentionBucket) -> bool {
        let i = match self.index.get(table) {
            Some(&i) => i,
            None if self.named.len() < KEPT_TABLES => {
                self.index.insert(table.clone(), self.named.len());
                self.named.push((table.clone(), RetentionBucket::default()));
                self.named.len() - 1
            }
            None => {
                self.overflow.get_or_insert_default().add(delta);
                return false;
            }
        };
        self.named[i].1.add(delta);
        true
    }

    /// Adds to `label`'s entry.
    fn add(&mut self, label: &TableLabel, delta: &RetentionBucket) {
        match label {
            TableLabel::Table(name) => {
                self.add_to(name, delta);
            }
            TableLabel::Overflow => self.overflow.get_or_insert_default().add(delta),
        }
    }

    /// The exported series: the first `labelled` tables by name, the rest together.
    fn snapshot(&self) -> Vec<(TableLabel, RetentionBucket)> {
        let (labelled, folded) = self.named.split_at(self.named.len().min(self.labelled));
        let mut out: Vec<_> = labelled
            .iter()
            .map(|(n, b)| (TableLabel::Table(n.clone()), *b))
            .collect();
        if !folded.is_empty() || self.overflow.is_some() {
            let mut rest = self.overflow.unwrap_or_default();
            for (_, b) in folded {
                rest.add(b);
            }
            out.push((TableLabel::Overflow, rest));
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
    /// Changes not yet in the store; `None` without a store.
    unflushed: Option<Delta>,
    /// Checkpoints as last read from the store.
    checkpoints: HashMap<String, i64>,
    /// The latest time seen, and how often the clock went back from it.
    last_now: Option<SystemTime>,
    clock_jumps_back: u64,
    seq: u64,
    limits: Limits,
}

impl State {
    pub(crate) fn new(limits: Limits, persistent: bool) -> Self {
        Self {
            facts: Window::new(DAY_MINUTES),
            retention: Window::new(WEEK_MINUTES),
            totals: Totals::default(),
            histograms: HistogramCounts::default(),
            tables: Tables::new(limits.max_tables, &limits.tables),
            locks: LockRegistry::new(limits.max_locks),
            cove: None,
            unflushed: persistent.then(Delta::default),
            checkpoints: HashMap::new(),
            last_now: None,
            clock_jumps_back: 0,
            seq: 0,
            limits,
        }
    }

    /// The newest minute seen: the windows end here.
    pub(crate) fn head(&self) -> u64 {
        self.facts.head().max(self.retention.head())
    }

    /// Notes the time of an upkeep round or snapshot, counting (and logging) the clock going
    /// back by more than a second. Windows do not follow it back.
    pub(crate) fn observe_clock(&mut self, now: SystemTime) {
        match self.last_now {
            Some(last) if now < last => {
                let back = last.duration_since(now).unwrap_or_default();
                if back > CLOCK_JUMP {
                    self.clock_jumps_back += 1;
                    tracing::warn!(
                        back = %humantime::format_duration(back),
                        "the clock went back; windows stay at the latest minute seen until it catches up"
                    );
                    self.last_now = Some(now);
                }
            }
            _ => self.last_now = Some(now),
        }
    }

    /// Where a retention run over `table` is kept (see [`KEPT_TABLES`]).
    pub(crate) fn table_label(&self, table: &Name) -> TableLabel {
        self.tables.label_for(table)
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
        self.totals.add_facts(bucket);
        if let Some(u) = &mut self.unflushed {
            u.add_facts(minute, bucket);
        }
    }

    /// Adds one fact that did not go through the shards.
    pub(crate) fn add_fact(&mut self, minute: u64, fact: &Fact) {
        self.add_facts(minute, &FactBucket::of(fact));
        self.histograms.observe(fact);
        if let Some(u) = &mut self.unflushed {
            u.histograms.observe(fact);
        }
    }

    /// Adds one fact whose quality is not known.
    pub(crate) fn add_unassessed_fact(&mut self, minute: u64, cove: Option<CoveResult>) {
        self.add_facts(minute, &FactBucket::unassessed(cove));
        self.histograms.observe_cove(cove);
        if let Some(u) = &mut self.unflushed {
            u.histograms.observe_cove(cove);
        }
    }

    /// Adds what a drain of the shards took out, besides the fact buckets.
    pub(crate) fn add_drained(&mut self, drained: &Drained) {
        let totals = Totals {
            transcriptions: drained.transcriptions,
            digests: drained.digests,
            ..Totals::default()
        };
        self.totals.add(&totals);
        self.histograms.add(&drained.histograms);
        if let Some(u) = &mut self.unflushed {
            u.totals.add(&totals);
            u.histograms.add(&drained.histograms);
        }
    }

    pub(crate) fn add_retention(&mut self, minute: u64, run: &RetentionRun) {
        let delta = RetentionBucket::of(run);
        self.advance(minute);
        self.retention.add(minute, &delta);
        let by_name = self.tables.add_to(&run.table, &delta);
        if let Some(u) = &mut self.unflushed {
            let label = if by_name {
                TableLabel::Table(run.table.clone())
            } else {
                TableLabel::Overflow
            };
            u.add_retention(minute, label, &delta);
        }
    }

    /// The locks held now, with the time each was taken.
    pub(crate) fn held_locks(&self) -> Vec<(LockEvent, SystemTime)> {
        self.locks
            .held()
            .map(|l| {
                let event = LockEvent {
                    name: l.name.clone(),
                    holder: l.holder.clone(),
                    pid: l.pid,
                    host: l.host.clone(),
                };
                (event, l.acquired_at)
            })
            .collect()
    }

    pub(crate) fn checkpoint(&self, key: &str) -> Option<i64> {
        self.checkpoints.get(key).copied()
    }

    /// Stops keeping changes for the store (after it is shut down).
    pub(crate) fn stop_tracking(&mut self) {
        self.unflushed = None;
    }

    /// Everything the state holds, as one delta: what a fresh store needs to continue where
    /// the state is.
    pub(crate) fn full_delta(&self) -> Delta {
        let mut d = Delta {
            totals: self.totals,
            histograms: self.histograms,
            cove: self.cove,
            ..Delta::default()
        };
        d.facts = self.facts.buckets().collect();
        d.retention = self.retention.buckets().collect();
        for (name, b) in &self.tables.named {
            d.tables.insert(TableLabel::Table(name.clone()), *b);
        }
        if let Some(b) = self.tables.overflow {
            d.tables.insert(TableLabel::Overflow, b);
        }
        for lock in self.locks.held() {
            d.lock(&lock.name, &lock.holder, Some(lock.clone()));
        }
        d
    }

    /// Keeps the configuration with the latest event time.
    pub(crate) fn set_cove(&mut self, config: CoveConfig, at: SystemTime) {
        self.cove = newer_cove(self.cove, Some((config, at)));
        if let Some(u) = &mut self.unflushed {
            u.set_cove(config, at);
        }
    }

    pub(crate) fn acquire_lock(
        &mut self,
        event: &LockEvent,
        at: SystemTime,
    ) -> Result<(), LockConflict> {
        let held = self.locks.acquire(event, at)?;
        if let Some(u) = &mut self.unflushed {
            u.lock(&event.name, &event.holder, Some(held));
        }
        Ok(())
    }

    pub(crate) fn release_lock(&mut self, event: &LockEvent) -> Result<(), LockConflict> {
        self.locks.release(event)?;
        if let Some(u) = &mut self.unflushed {
            u.lock(&event.name, &event.holder, None);
        }
        Ok(())
    }

    /// Checks lock events as they would apply in order, changing nothing.
    pub(crate) fn check_locks<'a>(
        &self,
        events: impl IntoIterator<Item = (usize, &'a LockEvent, bool)>,
    ) -> Result<(), (usize, LockConflict)> {
        self.locks.check_sequence(events)
    }

    /// Takes the changes not yet written, forgetting window minutes no window needs.
    pub(crate) fn take_unflushed(&mut self) -> Delta {
        let head = self.head();
        match &mut self.unflushed {
            Some(u) => {
                u.forget_expired(head);
                std::mem::take(u)
            }
            None => Delta::default(),
        }
    }

    /// Puts back changes whose write failed, in front of those recorded since.
    pub(crate) fn restore_unflushed(&mut self, mut taken: Delta) {
        let head = self.head();
        if let Some(u) = &mut self.unflushed {
            taken.merge(std::mem::take(u));
            taken.forget_expired(head);
            *u = taken;
        }
    }

    /// Takes the store's values for what changed there, plus what is not written yet. Minutes
    /// after `newest` (written by a process whose clock is ahead) stay out of the windows, so
    /// another process's clock never moves this one's windows.
    pub(crate) fn apply_changes(&mut self, c: Changes, newest: u64) {
        let pending = self.unflushed.take().unwrap_or_default();
        let u = &pending;
        for (minute, stored) in c.facts.into_iter().filter(|(m, _)| *m <= newest) {
            let mut v = stored;
            if let Some(p) = u.facts.get(&minute) {
                v.add(p);
            }
            self.facts.set(minute, &v);
        }
        for (minute, stored) in c.retention.into_iter().filter(|(m, _)| *m <= newest) {
            let mut v = stored;
            if let Some(p) = u.retention.get(&minute) {
                v.add(p);
            }
            self.retention.set(minute, &v);
        }
        self.totals = c.totals;
        self.totals.add(&u.totals);
        self.histograms = c.histograms;
        self.histograms.add(&u.histograms);

        let mut tables = Tables::new(self.limits.max_tables, &self.limits.tables);
        for (label, b) in &c.tables {
            tables.add(label, b);
        }
        for (label, b) in &u.tables {
            tables.add(label, b);
        }
        self.tables = tables;

        self.cove = newer_cove(c.cove, u.cove);
        self.checkpoints = c.checkpoints.into_iter().collect();
        self.locks.replace(c.locks);
        for ((name, holder), change) in &u.locks {
            self.locks.apply(name, holder, change.clone());
        }
        self.unflushed = Some(pending);
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
            store: None,
            clock_jumps_back: self.clock_jumps_back,
            seq: self.seq,
        }
    }
}
