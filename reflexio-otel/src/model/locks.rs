//! The registry of process locks held now, and which of them are stale.
//!
//! A lock is identified by its name and holder. Acquiring a lock that the same holder holds is
//! refused when it is the same process (same pid and host, or neither known): that is a double
//! acquire. A different process with the holder's name (the holder restarted) takes the lock
//! over. A lock is stale when it has been held longer than the threshold, or when its holder
//! ran on this host and that process is gone. [`LockEvent::for_this_process`] is defined here,
//! beside what it fills in: this process's id and this host's name.

use crate::event::{LockEvent, Name, ValueError};
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

    /// Whether the lock has been held for longer than `stale_after` at `now`, or its holder's
    /// process on this host is gone.
    pub(crate) fn is_stale(&self, now: SystemTime, stale_after: Duration) -> bool {
        let too_long = now
            .duration_since(self.acquired_at)
            .is_ok_and(|held| held > stale_after);
        too_long || self.holder_is_gone()
    }

    fn holder_is_gone(&self) -> bool {
        match (self.pid, &self.host) {
            (Some(pid), Some(host)) if Some(host) == this_host() => !process_is_alive(pid),
            _ => false,
        }
    }
}

impl LockEvent {
    /// A lock event of this process: with its pid and this host's name, so that a restarted
    /// holder can take the lock over and a dead one's lock counts as stale at once.
    pub fn for_this_process(name: &str, holder: &str) -> Result<Self, ValueError> {
        Ok(Self {
            pid: Some(std::process::id()),
            host: this_host().cloned(),
            ..Self::new(name, holder)?
        })
    }
}

/// This machine's host name, as lock events carry it.
pub(crate) fn this_host() -> Option<&'static Name> {
    static HOST: std::sync::OnceLock<Option<Name>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            Name::new(&rustix::system::uname().nodename().to_string_lossy()).ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    })
    .as_ref()
}

#[cfg(target_os = "linux")]
fn process_is_alive(pid: u32) -> bool {
    use rustix::process::{Pid, test_kill_process};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    // EPERM means it exists but belongs to someone else.
    !matches!(test_kill_process(pid), Err(rustix::io::Errno::SRCH))
}

#[cfg(not(target_os = "linux"))]
fn process_is_alive(_pid: u32) -> bool {
    true
}

/// Why a lock event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockConflict {
    AlreadyHeld,
    NotHeld,
    Full { limit: usize },
}

type Key = (Name, Name);

/// The process that holds a lock: its pid and host, as far as known.
type Process = (Option<u32>, Option<Name>);

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
        // For each lock the sequence touched: who holds it after the events so far.
        let mut changed: BTreeMap<Key, Option<Process>> = BTreeMap::new();
        let mut count = self.held.len();
        for (index, event, acquire) in events {
            let k = key(event);
            let holder = match changed.get(&k) {
                Some(h) => h.clone(),
                None => self.held.get(&k).map(|l| (l.pid, l.host.clone())),
            };
            match (acquire, holder) {
                (true, Some((pid, host))) if pid == event.pid && host == event.host => {
                    return Err((index, LockConflict::AlreadyHeld));
                }
                (true, Some(_)) => {} // another process of the same holder takes it over
                (false, None) => return Err((index, LockConflict::NotHeld)),
                (true, None) if count >= self.limit => {
                    return Err((index, LockConflict::Full { limit: self.limit }));
                }
                (true, None) => count += 1,
                (false, Some(_)) => count -= 1,
            }
            changed.insert(k, acquire.then(|| (event.pid, event.host.clone())));
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

    pub(crate) fn held(&self) -> impl Iterator<Item = &HeldLock> {
        self.held.values()
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
    fn a_restarted_holder_takes_its_lock_over() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut reg = LockRegistry::new(4);
        let mut crashed = LockEvent::new("digest", "w1").expect("valid");
        crashed.pid = Some(111);
        crashed.host = Some(Name::new("host-a").expect("valid"));
        let mut restarted = crashed.clone();
        restarted.pid = Some(222);
        assert!(reg.acquire(&crashed, t0).is_ok());
        assert_eq!(reg.acquire(&crashed, t0), Err(LockConflict::AlreadyHeld));
        assert!(
            reg.acquire(&restarted, t0).is_ok(),
            "a new process takes over"
        );
        assert_eq!(reg.counts(t0, Duration::from_secs(60)), (1, 0));
        // Without process information both look alike: a double acquire.
        let anonymous = LockEvent::new("import", "w1").expect("valid");
        assert!(reg.acquire(&anonymous, t0).is_ok());
        assert_eq!(reg.acquire(&anonymous, t0), Err(LockConflict::AlreadyHeld));
    }

    #[test]
    fn a_lock_whose_process_is_gone_is_stale_at_once() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let host = this_host().cloned();
        let mut reg = LockRegistry::new(4);
        let mut alive = LockEvent::new("digest", "me").expect("valid");
        alive.pid = Some(std::process::id());
        alive.host = host.clone();
        let mut gone = LockEvent::new("digest", "crashed").expect("valid");
        // A child that has exited and been reaped: its pid names no process.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        gone.pid = Some(child.id());
        child.wait().expect("reaped");
        gone.host = host;
        let mut elsewhere = gone.clone();
        elsewhere.holder = Name::new("remote").expect("valid");
        elsewhere.host = Some(Name::new("another-host.invalid").expect("valid"));
        for l in [&alive, &gone, &elsewhere] {
            reg.acquire(l, t0).expect("acquired");
        }
        assert_eq!(reg.counts(t0, Duration::from_secs(3600)), (3, 1));
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

    #[test]
    fn an_event_of_this_process_carries_its_pid_and_host() {
        let event = LockEvent::for_this_process("digest", "w1").expect("valid");
        assert_eq!(event.pid, Some(std::process::id()));
        assert_eq!(event.host.as_ref(), this_host());
        assert_eq!(
            LockEvent::for_this_process("digest", "")
                .expect_err("empty holder")
                .field(),
            "holder"
        );
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let held = HeldLock::new(&event, t0);
        assert!(
            !held.is_stale(t0, Duration::from_secs(60)),
            "this process is alive"
        );
    }
}
