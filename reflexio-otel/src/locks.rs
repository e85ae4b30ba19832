//! The registry of process locks held now, and which of them are stale.

use crate::event::{LockEvent, Name};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// A process lock that is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldLock {
    /// The lock.
    pub(crate) name: Name,
    /// Who holds it.
    pub(crate) holder: Name,
    /// When it was taken.
    pub(crate) acquired_at: SystemTime,
    /// The holder's process id, when known.
    pub(crate) pid: Option<u32>,
    /// The holder's host, when known.
    pub(crate) host: Option<Name>,
}

impl HeldLock {
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

/// Locks held now, keyed by `(name, holder)`, at most `limit` of them.
#[derive(Debug)]
pub(crate) struct LockRegistry {
    held: BTreeMap<(Name, Name), HeldLock>,
    limit: usize,
}

impl LockRegistry {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            held: BTreeMap::new(),
            limit,
        }
    }

    /// Checks that `event` can be acquired, without changing anything.
    pub(crate) fn check_acquire(&self, event: &LockEvent) -> Result<(), LockConflict> {
        if self
            .held
            .contains_key(&(event.name.clone(), event.holder.clone()))
        {
            Err(LockConflict::AlreadyHeld)
        } else if self.held.len() >= self.limit {
            Err(LockConflict::Full { limit: self.limit })
        } else {
            Ok(())
        }
    }

    pub(crate) fn acquire(
        &mut self,
        event: &LockEvent,
        at: SystemTime,
    ) -> Result<(), LockConflict> {
        self.check_acquire(event)?;
        self.held.insert(
            (event.name.clone(), event.holder.clone()),
            HeldLock {
                name: event.name.clone(),
                holder: event.holder.clone(),
                acquired_at: at,
                pid: event.pid,
                host: event.host.clone(),
            },
        );
        Ok(())
    }

    pub(crate) fn release(&mut self, event: &LockEvent) -> Result<HeldLock, LockConflict> {
        self.held
            .remove(&(event.name.clone(), event.holder.clone()))
            .ok_or(LockConflict::NotHeld)
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
        assert_eq!(reg.acquire(&a, t0), Ok(()));
        assert_eq!(reg.acquire(&a, t0), Err(LockConflict::AlreadyHeld));
        assert_eq!(reg.acquire(&b, t0 + hour), Ok(()));
        assert_eq!(reg.acquire(&c, t0), Err(LockConflict::Full { limit: 2 }));
        assert_eq!(reg.counts(t0 + hour, hour), (2, 0));
        assert_eq!(reg.counts(t0 + hour + Duration::from_secs(1), hour), (2, 1));
        assert!(reg.release(&a).is_ok());
        assert_eq!(reg.release(&a), Err(LockConflict::NotHeld));
        assert_eq!(reg.counts(t0 + 3 * hour, hour), (1, 1));
    }
}
