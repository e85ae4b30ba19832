//! The registry of process locks held now, and which of them are stale.

use crate::event::{LockEvent, Name};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// A process lock that is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldLock {
    pub(crate) name: Name,
    pub(crate) holder: Name,
    pub(crate) acquired_at: SystemTime,
    pub(crate) pid: Option<u32>,
    pub(crate) host: Option<Name>,
}

impl HeldLock {
    pub(crate) fn new(event: &LockEvent, at: SystemTime) -> Self {
        Self {
            name: event.name.clone(),
            holder: event.holder.clone(),
            acquired_at: at,
            pid: event.pid,
            host: event.host.clone(),
        }
    }

    /// Whether the lock has been held for longer than `stale_after` at `now`.
    pub(crate) fn is_stale(&self, now: SystemTime, stale_after: Duration) -> bool {
        now.duration_since(self.acquired_at)
            .is_ok_and(|held| held > stale_after)
    }
}

/// Why a lock event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockConflict {
    AlreadyHeld,
    NotHeld,
    Full { limit: usize },
}

type Key = (Name, Name);

fn key(event: &LockEvent) -> Key {
    (event.name.clone(), event.holder.clone())
}

/// Locks held now, keyed by `(name, holder)`, at most `limit` of them.
#[derive(Debug)]
pub(crate) struct LockRegistry {
    held: BTreeMap<Key, HeldLock>,
    limit: usize,
}

impl LockRegistry {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            held: BTreeMap::new(),
            limit,
        }
    }

    pub(crate) fn acquire(
        &mut self,
        event: &LockEvent,
        at: SystemTime,
    ) -> Result<HeldLock, LockConflict> {
        self.check_sequence([(0, event, true)])
            .map_err(|(_, conflict)| conflict)?;
        let held = HeldLock::new(event, at);
        self.held.insert(key(event), held.clone());
        Ok(held)
    }

    pub(crate) fn release(&mut self, event: &LockEvent) -> Result<HeldLock, LockConflict> {
        self.held.remove(&key(event)).ok_or(LockConflict::NotHeld)
    }

    /// Checks `(index, event, acquire?)` in order as if applied, changing nothing; returns the
    /// index of the first that would be refused.
    pub(crate) fn check_sequence<'a>(
        &self,
        events: impl IntoIterator<Item = (usize, &'a LockEvent, bool)>,
    ) -> Result<(), (usize, LockConflict)> {
        let mut changed: BTreeMap<Key, bool> = BTreeMap::new();
        let mut count = self.held.len();
        for (index, event, acquire) in events {
            let k = key(event);
            let held = changed
                .get(&k)
                .copied()
                .unwrap_or_else(|| self.held.contains_key(&k));
            match (acquire, held) {
                (true, true) => return Err((index, LockConflict::AlreadyHeld)),
                (false, false) => return Err((index, LockConflict::NotHeld)),
                (true, false) if count >= self.limit => {
                    return Err((index, LockConflict::Full { limit: self.limit }));
                }
                (true, false) => count += 1,
                (false, true) => count -= 1,
            }
            changed.insert(k, acquire);
        }
        Ok(())
    }

    /// Replaces every lock with `locks` (as read from the store).
    pub(crate) fn replace(&mut self, locks: Vec<HeldLock>) {
        self.held = locks
            .into_iter()
            .map(|l| ((l.name.clone(), l.holder.clone()), l))
            .collect();
    }

    /// Applies a change not yet in the store: held with these details, or released.
    pub(crate) fn apply(&mut self, name: &Name, holder: &Name, change: Option<HeldLock>) {
        let k = (name.clone(), holder.clone());
        match change {
            Some(held) => self.held.insert(k, held),
            None => self.held.remove(&k),
        };
    }

    /// `(held, stale)` at `now`.
    pub(crate) fn counts(&self, now: SystemTime, stale_after: Duration) -> (u64, u64) {
        let stale = self
            .held
            .values()
            .filter(|l| l.is_stale(now, stale_after))
            .count();
        (self.held.len() as u64, stale as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn locks_go_stale_after_the_threshold() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let mut reg = LockRegistry::new(2);
        let a = LockEvent::new("digest", "w1").expect("valid");
        let b = LockEvent::new("digest", "w2").expect("valid");
        let c = LockEvent::new("retention", "w1").expect("valid");
        assert!(reg.acquire(&a, t0).is_ok());
        assert_eq!(reg.acquire(&a, t0), Err(LockConflict::AlreadyHeld));
        assert!(reg.acquire(&b, t0 + hour).is_ok());
        assert_eq!(reg.acquire(&c, t0), Err(LockConflict::Full { limit: 2 }));
        assert_eq!(reg.counts(t0 + hour, hour), (2, 0));
        assert_eq!(reg.counts(t0 + hour + Duration::from_secs(1), hour), (2, 1));
        assert!(reg.release(&a).is_ok());
        assert_eq!(reg.release(&a), Err(LockConflict::NotHeld));
        assert_eq!(reg.counts(t0 + 3 * hour, hour), (1, 1));
    }

    #[test]
    fn sequences_are_checked_in_order_without_changes() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut reg = LockRegistry::new(1);
        let a = LockEvent::new("digest", "w1").expect("valid");
        let b = LockEvent::new("import", "w1").expect("valid");
        assert_eq!(
            reg.check_sequence([(0, &a, true), (1, &a, false), (2, &b, true)]),
            Ok(())
        );
        assert_eq!(
            reg.check_sequence([(0, &a, true), (1, &b, true)]),
            Err((1, LockConflict::Full { limit: 1 }))
        );
        assert_eq!(
            reg.check_sequence([(0, &a, false)]),
            Err((0, LockConflict::NotHeld))
        );
        reg.acquire(&a, t0).expect("acquired");
        assert_eq!(
            reg.check_sequence([(0, &a, false), (1, &a, true), (2, &a, true)]),
            Err((2, LockConflict::AlreadyHeld))
        );
        assert_eq!(
            reg.counts(t0, Duration::from_secs(1)),
            (1, 0),
            "nothing changed"
        );
    }
}
