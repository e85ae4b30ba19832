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
use crate::event::{CoveConfig, Fact, LockEvent, Name, RetentionRun};
use crate::model::bucket::{Bucket, FactBucket, RetentionBucket};
use crate::model::changes::Changes;
use crate::model::delta::{Delta, newer_cove};
use crate::model::histogram::HistogramCounts;
use crate::model::locks::{Key as LockKey, LockConflict, LockRegistry, Room};
use crate::model::totals::{KEPT_TABLES, TableLabel, Totals};
use crate::model::window::{DAY_MINUTES, WEEK_MINUTES, Window};
use std::collections::{HashMap, HashSet};
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
    /// How long a lock whose holder is not known to be alive is kept.
    pub(crate) evict_locks_after: Duration,
    pub(crate) tables: Vec<Name>,
}

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
    /// [`KEPT_TABLES`] names are kept, counting the names in `new` (the ones a batch labelled
    /// so far, which this adds to) as kept.
    fn label_for(&self, table: &Name, new: &mut HashSet<Name>) -> TableLabel {
        if self.index.contains_key(table) || new.contains(table) {
            TableLabel::Table(table.clone())
        } else if self.named.len() + new.len() < KEPT_TABLES {
            new.insert(table.clone());
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

    /// Where a retention run over `table` is kept (see [`KEPT_TABLES`]), counting the names of
    /// `new` as kept too: a batch's own new names, which this adds to.
    pub(crate) fn table_label(&self, table: &Name, new: &mut HashSet<Name>) -> TableLabel {
        self.tables.label_for(table, new)
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

    /// Takes a lock, evicting another to make room if the registry is full.
    pub(crate) fn acquire_lock(
        &mut self,
        event: &LockEvent,
        at: SystemTime,
    ) -> Result<(), LockConflict> {
        let (held, evicted) = self.locks.acquire(event, at)?;
        self.released(&evicted);
        if let Some(u) = &mut self.unflushed {
            u.lock(&event.name, &event.holder, Some(held));
        }
        Ok(())
    }

    /// Releases a lock (one evicted lately is released already: nothing changes).
    pub(crate) fn release_lock(&mut self, event: &LockEvent) -> Result<(), LockConflict> {
        if self.locks.release(event)?.is_some()
            && let Some(u) = &mut self.unflushed
        {
            u.lock(&event.name, &event.holder, None);
        }
        Ok(())
    }

    /// Keeps the release of locks evicted from the registry for the store.
    fn released(&mut self, evicted: &[LockKey]) {
        if let Some(u) = &mut self.unflushed {
            for (name, holder) in evicted {
                u.lock(name, holder, None);
            }
        }
    }

    /// Checks lock events as they would apply in order, changing nothing; returns the room
    /// they need (see [`State::make_room`]).
    pub(crate) fn check_locks<'a, Id>(
        &self,
        events: impl IntoIterator<Item = (Id, &'a LockEvent, bool)>,
    ) -> Result<Room, (Id, LockConflict)> {
        self.locks.check_sequence(events)
    }

    /// Evicts the locks a checked sequence of lock events needs evicted to fit.
    pub(crate) fn make_room(&mut self, room: &Room) {
        let evicted = self.locks.make_room(room);
        self.released(&evicted);
    }

    /// Evicts the locks held longer than the eviction age at `now` by holders not known to be
    /// alive.
    pub(crate) fn evict_locks(&mut self, now: SystemTime) {
        let evicted = self.locks.evict_expired(now, self.limits.evict_locks_after);
        self.released(&evicted);
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
            locks: LockCounts {
                active,
                stale,
                evicted: self.locks.evictions(),
            },
            cove: self.cove.map(|(c, _)| c),
            store: None,
            clock_jumps_back: self.clock_jumps_back,
            seq: self.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const NOW_MINUTE: u64 = 28_000_000;

    fn limits(max_tables: usize, tables: &[&str]) -> Limits {
        Limits {
            max_tables,
            max_locks: 8,
            stale_lock_after: Duration::from_secs(3600),
            evict_locks_after: Duration::from_secs(24 * 3600),
            tables: tables.iter().map(|t| name(t)).collect(),
        }
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    fn at_minute(minute: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(minute * 60)
    }

    fn facts(n: u64) -> FactBucket {
        FactBucket {
            facts: n,
            ..FactBucket::default()
        }
    }

    fn run(table: &str) -> RetentionRun {
        RetentionRun::new(table, 3).expect("valid")
    }

    fn table_ops(state: &mut State) -> Vec<(TableLabel, u64)> {
        state
            .snapshot(at_minute(state.head()))
            .retention_by_table
            .into_iter()
            .map(|(l, b)| (l, b.operations))
            .collect()
    }

    #[test]
    fn applied_changes_are_the_stores_values_plus_what_is_not_written_yet() {
        let mut state = State::new(limits(32, &[]), true);
        state.add_facts(NOW_MINUTE, &facts(2));
        let written = state.take_unflushed();
        assert_eq!(written.totals.facts, 2);
        state.add_facts(NOW_MINUTE, &facts(1)); // recorded while the write ran
        let stored = Changes {
            // The write, plus 10 facts another process wrote.
            facts: vec![(NOW_MINUTE, facts(12))],
            totals: Totals {
                facts: 12,
                ..Totals::default()
            },
            checkpoints: vec![("legacy:facts".into(), 4)],
            ..Changes::default()
        };
        state.apply_changes(stored, NOW_MINUTE);
        let snapshot = state.snapshot(at_minute(NOW_MINUTE));
        assert_eq!(snapshot.totals.facts, 13);
        assert_eq!(snapshot.facts_24h.facts, 13);
        assert_eq!(state.checkpoint("legacy:facts"), Some(4));
        assert_eq!(
            state.take_unflushed().totals.facts,
            1,
            "what is not written yet stays unflushed"
        );
    }

    #[test]
    fn stored_minutes_after_the_newest_stay_out_of_the_windows() {
        let mut state = State::new(limits(32, &[]), true);
        state.advance(NOW_MINUTE);
        let stored = Changes {
            facts: vec![(NOW_MINUTE, facts(1)), (NOW_MINUTE + 10, facts(5))],
            ..Changes::default()
        };
        state.apply_changes(stored, NOW_MINUTE + 5);
        assert_eq!(
            state.head(),
            NOW_MINUTE,
            "another clock does not move the windows"
        );
        assert_eq!(state.snapshot(at_minute(NOW_MINUTE)).facts_24h.facts, 1);
    }

    #[test]
    fn changes_are_taken_once_and_a_failed_write_puts_them_back_in_front() {
        let mut state = State::new(limits(32, &[]), true);
        state.add_facts(NOW_MINUTE - DAY_MINUTES - 5, &facts(1)); // already outside the window
        state.add_facts(NOW_MINUTE, &facts(2));
        state.add_retention(NOW_MINUTE, &run("facts"));
        let taken = state.take_unflushed();
        assert_eq!(
            taken.facts.keys().copied().collect::<Vec<_>>(),
            [NOW_MINUTE]
        );
        assert_eq!(taken.totals.facts, 3, "totals keep what the windows forget");
        assert!(state.take_unflushed().is_empty(), "taken once");

        state.add_facts(NOW_MINUTE, &facts(4));
        state.restore_unflushed(taken.clone());
        let mut expected = taken;
        let mut later = Delta::default();
        later.add_facts(NOW_MINUTE, &facts(4));
        expected.merge(later);
        assert_eq!(state.take_unflushed(), expected);
    }

    #[test]
    fn without_a_store_nothing_is_kept_for_it() {
        let mut state = State::new(limits(32, &[]), false);
        state.add_facts(NOW_MINUTE, &facts(2));
        state.add_retention(NOW_MINUTE, &run("facts"));
        assert!(state.take_unflushed().is_empty());
        state.restore_unflushed({
            let mut d = Delta::default();
            d.add_facts(NOW_MINUTE, &facts(1));
            d
        });
        assert!(state.take_unflushed().is_empty());
        assert_eq!(state.snapshot(at_minute(NOW_MINUTE)).totals.facts, 2);
    }

    #[test]
    fn declared_tables_come_first_at_zero_and_tables_past_the_label_limit_fold() {
        let mut state = State::new(limits(2, &["digests"]), true);
        assert_eq!(
            table_ops(&mut state),
            [(TableLabel::Table(name("digests")), 0)]
        );
        for table in ["facts", "facts", "audio", "logs"] {
            state.add_retention(NOW_MINUTE, &run(table));
        }
        assert_eq!(
            table_ops(&mut state),
            [
                (TableLabel::Table(name("digests")), 0),
                (TableLabel::Table(name("facts")), 2),
                (TableLabel::Overflow, 2),
            ]
        );
        let unflushed = state.take_unflushed();
        assert_eq!(
            unflushed.tables.keys().cloned().collect::<Vec<_>>(),
            [
                TableLabel::Table(name("audio")),
                TableLabel::Table(name("facts")),
                TableLabel::Table(name("logs")),
            ],
            "the store keeps every name it can"
        );
    }

    #[test]
    fn names_past_the_kept_table_cap_go_to_the_overflow_entry() {
        let mut state = State::new(limits(KEPT_TABLES + 10, &[]), true);
        for i in 0..KEPT_TABLES + 2 {
            state.add_retention(NOW_MINUTE, &run(&format!("t{i}")));
        }
        let last = name(&format!("t{}", KEPT_TABLES + 1));
        let mut new = HashSet::new();
        assert_eq!(state.table_label(&last, &mut new), TableLabel::Overflow);
        assert_eq!(
            state.table_label(&name("t0"), &mut new),
            TableLabel::Table(name("t0"))
        );
        let tables = table_ops(&mut state);
        assert_eq!(tables.len(), KEPT_TABLES + 1);
        assert_eq!(tables.last(), Some(&(TableLabel::Overflow, 2)));
        let unflushed = state.take_unflushed();
        assert_eq!(
            unflushed
                .tables
                .get(&TableLabel::Overflow)
                .map(|b| b.operations),
            Some(2)
        );
    }

    #[test]
    fn a_batchs_new_names_count_against_the_kept_table_cap() {
        let mut state = State::new(limits(32, &[]), true);
        for i in 0..KEPT_TABLES - 2 {
            state.add_retention(NOW_MINUTE, &run(&format!("t{i}")));
        }
        let mut new = HashSet::new();
        let labels: Vec<_> = ["a", "b", "a", "c"]
            .iter()
            .map(|t| state.table_label(&name(t), &mut new))
            .collect();
        assert_eq!(
            labels,
            [
                TableLabel::Table(name("a")),
                TableLabel::Table(name("b")),
                TableLabel::Table(name("a")),
                TableLabel::Overflow
            ]
        );
    }

    #[test]
    fn the_full_delta_holds_everything_the_state_holds() {
        let mut state = State::new(limits(32, &["digests"]), true);
        state.add_facts(NOW_MINUTE - 1, &facts(2));
        state.add_retention(NOW_MINUTE, &run("facts"));
        let config = CoveConfig::new(true, 0.7).expect("valid");
        state.set_cove(config, at_minute(NOW_MINUTE));
        let lock = LockEvent::new("digest", "w1").expect("valid");
        state
            .acquire_lock(&lock, at_minute(NOW_MINUTE))
            .expect("acquired");
        let full = state.full_delta();
        assert_eq!(full.totals.facts, 2);
        assert_eq!(full.facts.get(&(NOW_MINUTE - 1)).map(|b| b.facts), Some(2));
        assert_eq!(full.retention.len(), 1);
        assert_eq!(
            full.tables.keys().cloned().collect::<Vec<_>>(),
            [
                TableLabel::Table(name("digests")),
                TableLabel::Table(name("facts"))
            ]
        );
        assert_eq!(full.cove, Some((config, at_minute(NOW_MINUTE))));
        assert_eq!(full.locks.len(), 1);
    }

    #[test]
    fn lock_events_are_kept_for_the_store_and_replaced_by_what_it_holds() {
        let mut state = State::new(limits(32, &[]), true);
        let a = LockEvent::new("digest", "w1").expect("valid");
        let b = LockEvent::new("import", "w2").expect("valid");
        state
            .acquire_lock(&a, at_minute(NOW_MINUTE))
            .expect("acquired");
        assert_eq!(state.release_lock(&b), Err(LockConflict::NotHeld));
        let taken = state.take_unflushed();
        assert!(matches!(taken.locks.values().next(), Some(Some(_))));
        state
            .acquire_lock(&b, at_minute(NOW_MINUTE))
            .expect("acquired");
        // The store holds `a` (written above) and a lock of another process.
        let other = LockEvent::new("retention", "w3").expect("valid");
        let stored = Changes {
            locks: vec![
                crate::model::locks::HeldLock::new(&a, at_minute(NOW_MINUTE)),
                crate::model::locks::HeldLock::new(&other, at_minute(NOW_MINUTE)),
            ],
            ..Changes::default()
        };
        state.apply_changes(stored, NOW_MINUTE);
        let mut held: Vec<_> = state
            .held_locks()
            .into_iter()
            .map(|(l, _)| l.name.to_string())
            .collect();
        held.sort();
        assert_eq!(held, ["digest", "import", "retention"]);
    }

    #[test]
    fn the_clock_going_back_by_more_than_a_second_counts_once_per_jump() {
        let mut state = State::new(limits(32, &[]), false);
        let t = at_minute(NOW_MINUTE);
        state.observe_clock(t);
        state.observe_clock(t - Duration::from_millis(900));
        assert_eq!(
            state.snapshot(t).clock_jumps_back,
            0,
            "within a coarse clock's jitter"
        );
        state.observe_clock(t - Duration::from_secs(5));
        state.observe_clock(t - Duration::from_secs(4));
        assert_eq!(state.snapshot(t).clock_jumps_back, 1);
        state.observe_clock(t - Duration::from_secs(10));
        assert_eq!(state.snapshot(t).clock_jumps_back, 2);
    }
}
