//! The registry of process locks held now, which of them are stale, and which are evicted.
//!
//! A lock is identified by its name and holder. Acquiring a lock that the same holder holds is
//! refused when it is the same process (same pid and host, or neither known): that is a double
//! acquire. A different process with the holder's name (the holder restarted) takes the lock
//! over. A lock is stale when it has been held longer than the threshold, or when its holder
//! ran on this host and that process is gone. [`LockEvent::for_this_process`] is defined here,
//! beside what it fills in: this process's id and this host's name.
//!
//! A lock whose holder is not known to be alive (no pid and host, another host, or a process
//! of this host that is gone) is evicted once held longer than the eviction age. When the
//! registry is full and another lock is taken, the lock held longest makes room: one whose
//! holder is not known to be alive if there is one, else one of a live process (a full table of
//! live holders is junk or a leak, and must not block the locks taken after it). The registry
//! remembers the locks it evicted lately, so that a late release of one is accepted (and changes
//! nothing) instead of refusing the events that came with it.

use crate::event::{LockEvent, Name, ValueError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
        self.local_holder_alive() == Some(false)
    }

    /// Whether its holder is a process of this host that is alive: the only holders whose
    /// locks are never evicted by age, and the last to make room in a full registry.
    fn holder_is_known_alive(&self) -> bool {
        self.local_holder_alive() == Some(true)
    }

    /// Whether its holder's process is alive, when the holder is a process of this host.
    fn local_holder_alive(&self) -> Option<bool> {
        match (self.pid, &self.host) {
            (Some(pid), Some(host)) if Some(host) == this_host() => Some(process_is_alive(pid)),
            _ => None,
        }
    }

    /// Whether it has been held longer than `evict_after` at `now` by a holder not known to be
    /// alive.
    fn is_evictable(&self, now: SystemTime, evict_after: Duration) -> bool {
        now.duration_since(self.acquired_at)
            .is_ok_and(|held| held > evict_after)
            && !self.holder_is_known_alive()
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

/// A lock's name and holder.
pub(crate) type Key = (Name, Name);

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
    /// The locks evicted lately (at most `limit`), oldest first: their release is accepted.
    evicted: VecDeque<Key>,
    /// Locks evicted since the registry was made.
    evictions: u64,
}

/// What a sequence of lock events needs, once checked: how many held locks must be evicted to
/// make room for it, none of them among `touched`, the locks the sequence itself changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Room {
    pub(crate) evict: usize,
    pub(crate) touched: BTreeSet<Key>,
}

impl LockRegistry {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            held: BTreeMap::new(),
            limit,
            evicted: VecDeque::new(),
            evictions: 0,
        }
    }

    /// Takes the lock at `at`, first evicting another (see [`LockRegistry::make_room`]) if the
    /// registry is full; returns the lock held, and the keys of the locks evicted for it.
    pub(crate) fn acquire(
        &mut self,
        event: &LockEvent,
        at: SystemTime,
    ) -> Result<(HeldLock, Vec<Key>), LockConflict> {
        let room = self
            .check_sequence([(0, event, true)])
            .map_err(|(_, conflict)| conflict)?;
        let evicted = self.make_room(&room);
        let held = HeldLock::new(event, at);
        let k = key(event);
        self.evicted.retain(|e| *e != k);
        self.held.insert(k, held.clone());
        Ok((held, evicted))
    }

    /// Releases the lock: `Some` if it was held, `None` if it was evicted lately (nothing to
    /// release).
    pub(crate) fn release(&mut self, event: &LockEvent) -> Result<Option<HeldLock>, LockConflict> {
        let k = key(event);
        match self.held.remove(&k) {
            Some(held) => Ok(Some(held)),
            None if self.evicted.contains(&k) => Ok(None),
            None => Err(LockConflict::NotHeld),
        }
    }

    /// Checks `(id, event, acquire?)` in order as if applied, changing nothing; returns the
    /// room the sequence needs, or the id of the first event that would be refused.
    pub(crate) fn check_sequence<'a, Id>(
        &self,
        events: impl IntoIterator<Item = (Id, &'a LockEvent, bool)>,
    ) -> Result<Room, (Id, LockConflict)> {
        let events: Vec<_> = events.into_iter().collect();
        let touched: BTreeSet<Key> = events.iter().map(|(_, e, _)| key(e)).collect();
        // How many locks the sequence may evict, counted when it first needs one.
        let mut spare = None;
        // For each lock the sequence touched: who holds it after the events so far.
        let mut changed: BTreeMap<Key, Option<Process>> = BTreeMap::new();
        let mut count = self.held.len();
        let mut evict = 0;
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
                (false, None) if changed.contains_key(&k) || !self.evicted.contains(&k) => {
                    return Err((index, LockConflict::NotHeld));
                }
                (false, None) => {} // evicted lately: nothing to release
                (true, None) if count >= self.limit => {
                    // Any held lock the sequence does not touch may make room.
                    let spare = *spare.get_or_insert_with(|| {
                        self.held.keys().filter(|k| !touched.contains(*k)).count()
                    });
                    if evict >= spare {
                        return Err((index, LockConflict::Full { limit: self.limit }));
                    }
                    evict += 1;
                }
                (true, None) => count += 1,
                (false, Some(_)) => count -= 1,
            }
            changed.insert(k, acquire.then(|| (event.pid, event.host.clone())));
        }
        Ok(Room { evict, touched })
    }

    /// Up to `n` held locks that may be evicted to make room, none of them in `exclude`: those
    /// whose holder is not known to be alive first, then those of live processes, the one held
    /// longest first in each.
    fn victims(&self, n: usize, exclude: &BTreeSet<Key>) -> Vec<Key> {
        let mut candidates: Vec<(bool, &HeldLock)> = self
            .held
            .iter()
            .filter(|(k, _)| !exclude.contains(*k))
            .map(|(_, l)| (l.holder_is_known_alive(), l))
            .collect();
        candidates.sort_by_key(|(alive, l)| (*alive, l.acquired_at));
        candidates
            .into_iter()
            .take(n)
            .map(|(_, l)| (l.name.clone(), l.holder.clone()))
            .collect()
    }

    /// Evicts the locks `room` needs evicted; returns their keys.
    pub(crate) fn make_room(&mut self, room: &Room) -> Vec<Key> {
        if room.evict == 0 {
            return Vec::new();
        }
        let victims = self.victims(room.evict, &room.touched);
        for k in &victims {
            self.evict(k);
        }
        victims
    }

    fn evict(&mut self, k: &Key) {
        if let Some(lock) = self.held.remove(k) {
            let why = if lock.holder_is_known_alive() {
                "evicted the lock held longest to make room: every held lock's holder is alive"
            } else {
                "evicted a lock whose holder is not known to be alive"
            };
            tracing::warn!(
                lock = %lock.name,
                holder = %lock.holder,
                pid = lock.pid,
                host = lock.host.as_ref().map(Name::as_str),
                "{why}"
            );
            self.evictions += 1;
            if self.evicted.len() >= self.limit.max(1) {
                self.evicted.pop_front();
            }
            self.evicted.push_back(k.clone());
        }
    }

    /// Evicts the locks held longer than `evict_after` at `now` by a holder not known to be
    /// alive; returns their keys.
    pub(crate) fn evict_expired(&mut self, now: SystemTime, evict_after: Duration) -> Vec<Key> {
        let expired: Vec<Key> = self
            .held
            .iter()
            .filter(|(_, l)| l.is_evictable(now, evict_after))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.evict(k);
        }
        expired
    }

    /// Locks evicted since the registry was made.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
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
        let mut a_alive = a.clone();
        let mut b_alive = b.clone();
        for l in [&mut a_alive, &mut b_alive] {
            l.pid = Some(std::process::id());
            l.host = this_host().cloned();
        }
        let (a, b) = (a_alive, b_alive);
        assert!(reg.acquire(&a, t0).is_ok());
        assert_eq!(reg.acquire(&a, t0), Err(LockConflict::AlreadyHeld));
        assert!(reg.acquire(&b, t0 + hour).is_ok());
        assert_eq!(reg.counts(t0 + hour, hour), (2, 0));
        assert_eq!(reg.counts(t0 + hour + Duration::from_secs(1), hour), (2, 1));
        assert!(reg.release(&a).is_ok());
        assert_eq!(reg.release(&a), Err(LockConflict::NotHeld));
        assert_eq!(reg.counts(t0 + 3 * hour, hour), (1, 1));
        assert!(reg.acquire(&c, t0).is_ok());
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
            reg.check_sequence([(0, &a, true), (1, &a, false), (2, &b, true)])
                .map(|room| room.evict),
            Ok(0)
        );
        assert_eq!(
            reg.check_sequence([(0, &a, true), (1, &b, true)]),
            Err((1, LockConflict::Full { limit: 1 })),
            "the sequence's own locks are never evicted for it"
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
        let room = reg.check_sequence([(0, &b, true)]).expect("room made");
        assert_eq!(room.evict, 1, "a's holder is not known to be alive");
        assert_eq!(
            reg.counts(t0, Duration::from_secs(1)),
            (1, 0),
            "nothing changed"
        );
    }

    #[test]
    fn locks_held_too_long_by_holders_not_known_alive_are_evicted_and_may_be_released() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(24 * 3600);
        let mut reg = LockRegistry::new(8);
        let unknown = LockEvent::new("import", "w1").expect("valid");
        let mut remote = LockEvent::new("import", "w2").expect("valid");
        remote.pid = Some(std::process::id());
        remote.host = Some(Name::new("another-host.invalid").expect("valid"));
        let alive = LockEvent::for_this_process("import", "w3").expect("valid");
        for l in [&unknown, &remote, &alive] {
            reg.acquire(l, t0).expect("acquired");
        }
        assert!(
            reg.evict_expired(t0 + day, day).is_empty(),
            "not older than"
        );
        let mut evicted = reg.evict_expired(t0 + day + Duration::from_secs(1), day);
        evicted.sort();
        assert_eq!(evicted, [key(&unknown), key(&remote)]);
        assert_eq!((reg.held().count(), reg.evictions()), (1, 2));
        assert_eq!(
            reg.release(&unknown),
            Ok(None),
            "evicted: nothing to release"
        );
        assert_eq!(
            reg.check_sequence([(0, &remote, false)]).map(|r| r.evict),
            Ok(0)
        );
        assert!(
            reg.check_sequence([(0, &remote, false), (1, &remote, false)])
                .is_err(),
            "released twice"
        );
    }

    #[test]
    fn a_full_registry_evicts_the_longest_held_lock_not_known_alive() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut reg = LockRegistry::new(3);
        let alive = LockEvent::for_this_process("a", "w").expect("valid");
        let old = LockEvent::new("b", "w").expect("valid");
        let newer = LockEvent::new("c", "w").expect("valid");
        reg.acquire(&alive, t0).expect("acquired");
        reg.acquire(&old, t0 + Duration::from_secs(1))
            .expect("acquired");
        reg.acquire(&newer, t0 + Duration::from_secs(2))
            .expect("acquired");
        let d = LockEvent::new("d", "w").expect("valid");
        let (_, evicted) = reg.acquire(&d, t0).expect("room made");
        assert_eq!(
            evicted,
            [key(&old)],
            "the alive one stays, the older of the rest goes"
        );
        let e = LockEvent::new("e", "w").expect("valid");
        assert_eq!(
            reg.check_sequence([(0, &e, true), (1, &newer, false)])
                .map(|r| r.evict),
            Ok(1),
            "d makes room; c is the sequence's own"
        );
    }

    #[test]
    fn a_registry_full_of_live_holders_evicts_the_longest_held_of_them() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut reg = LockRegistry::new(2);
        // Junk that names a live process of this host (pid 1 is always alive).
        let mut junk = Vec::new();
        for (i, name) in ["junk0", "junk1"].into_iter().enumerate() {
            let mut l = LockEvent::new(name, "x").expect("valid");
            l.pid = Some(1);
            l.host = this_host().cloned();
            reg.acquire(&l, t0 + Duration::from_secs(i as u64))
                .expect("acquired");
            junk.push(l);
        }
        let real = LockEvent::for_this_process("daily_digest", "w").expect("valid");
        let (_, evicted) = reg
            .acquire(&real, t0 + Duration::from_secs(60))
            .expect("a full table of live holders never blocks a new lock");
        assert_eq!(evicted, [key(&junk[0])], "the longest held goes");
        assert_eq!((reg.held().count(), reg.evictions()), (2, 1));
        assert_eq!(
            reg.release(&junk[0]),
            Ok(None),
            "a late release is accepted"
        );
        // Only a sequence that alone needs more locks than the registry holds is refused.
        let a = LockEvent::new("a", "w").expect("valid");
        let b = LockEvent::new("b", "w").expect("valid");
        let c = LockEvent::new("c", "w").expect("valid");
        assert_eq!(
            reg.check_sequence([(0, &a, true), (1, &b, true), (2, &c, true)]),
            Err((2, LockConflict::Full { limit: 2 }))
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
