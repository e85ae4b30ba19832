//! The application's lock directory: a lock `{name}` is held while the file `{name}.pid`
//! exists, by the process whose id the file holds, since the file's modification time. Only
//! the files whose name matches [`LockNames`] are locks: in a shared directory such as `/tmp`,
//! other programs' pid files are not the application's.
//!
//! Each poll compares the files with the locks the recorder holds for them (holder
//! [`HOLDER`]) and records the difference — a new file is a lock taken, a file gone a lock
//! released, a file rewritten (another process id or modification time) a lock taken anew — so
//! a restarted bridge picks up where the last one left off. The recorder counts a lock as stale when it is older than the threshold, or when
//! its process is not alive on this host: the bridge must see the application's processes
//! (same host, or same PID namespace in containers).

use reflexio_otel::{DurableError, Event, LockEvent, Name, Recorder};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The holder name of locks read from lock files.
pub const HOLDER: &str = "pidfile";

/// Directories every program writes its pid files into: following one needs [`LockNames`].
pub(crate) const SHARED_DIRS: [&str; 4] = ["/tmp", "/var/tmp", "/run", "/dev/shm"];

/// The shared system directory (one of [`SHARED_DIRS`]) that `dir` is, symbolic links
/// followed, if it is one.
pub(crate) fn shared_system_dir(dir: &Path) -> Option<&'static str> {
    let resolved = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| {
            // Not there (yet): its own absolute form.
            let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
            absolute.components().collect()
        })
    };
    let dir = resolved(dir);
    SHARED_DIRS
        .into_iter()
        .find(|shared| resolved(Path::new(shared)) == dir || Path::new(shared) == dir)
}

/// Which lock files are the application's: `{name}.pid` files whose `name` matches one of
/// these names or globs (`*` any run of characters, `?` one, `[abc]`, `[a-z]` and `[!abc]` one
/// of a set), or, with none given, every `.pid` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockNames(Vec<String>);

impl LockNames {
    /// Every `.pid` file is a lock.
    pub fn any() -> Self {
        Self::default()
    }

    /// The names or globs of `patterns`, checked: not empty, no `/`, brackets closed, and
    /// without the `.pid` of the file.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut names = Vec::new();
        for pattern in patterns {
            let pattern = pattern.trim();
            if pattern.is_empty() {
                return Err("a lock name is empty".into());
            }
            if pattern.contains('/') || pattern.chars().any(char::is_control) {
                return Err(format!(
                    "`{pattern}` is not a lock name: a name or glob of `{{name}}.pid` files, \
                     without `/`"
                ));
            }
            if let Some(stem) = pattern.strip_suffix(".pid") {
                return Err(format!(
                    "`{pattern}`: give the lock's name without `.pid` (`{stem}`)"
                ));
            }
            if glob_match(pattern, "").is_none() {
                return Err(format!("`{pattern}` has a `[` without its `]`"));
            }
            if !names.iter().any(|n| n == pattern) {
                names.push(pattern.to_owned());
            }
        }
        Ok(Self(names))
    }

    /// Whether every `.pid` file is a lock (no names given).
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the lock file `{name}.pid` is one of the application's.
    pub fn matches(&self, name: &str) -> bool {
        self.is_any()
            || self
                .0
                .iter()
                .any(|pattern| glob_match(pattern, name) == Some(true))
    }

    /// The names or globs, as given.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

/// Whether `name` matches the glob `pattern`; `None` if the pattern is malformed (a `[` without
/// its `]`).
fn glob_match(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Every `[` must close, whatever the name.
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            i = class_end(&p, i)?;
        }
        i += 1;
    }
    // Backtracking over the last `*`: linear in practice for lock names.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ni += 1;
                continue;
            }
            Some('[') => {
                let end = class_end(&p, pi)?;
                if class_matches(&p[pi + 1..end], n[ni]) {
                    pi = end + 1;
                    ni += 1;
                    continue;
                }
            }
            Some(c) if *c == n[ni] => {
                pi += 1;
                ni += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return Some(false),
        }
    }
    Some(p[pi..].iter().all(|c| *c == '*'))
}

/// The index of the `]` closing the class that opens at `start`.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&'!') {
        i += 1;
    }
    // A `]` right after the opening (or `!`) is a member.
    if p.get(i) == Some(&']') {
        i += 1;
    }
    while i < p.len() {
        if p[i] == ']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Whether `c` is in the class `body` (what is between `[` and `]`).
fn class_matches(body: &[char], c: char) -> bool {
    let (negated, body) = match body.split_first() {
        Some(('!', rest)) => (true, rest),
        _ => (false, body),
    };
    let mut found = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            found |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= body[i] == c;
            i += 1;
        }
    }
    found != negated
}

/// Why the lock directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LockDirError {
    /// Listing the directory failed (it exists but cannot be read).
    #[error("cannot read the lock directory {path}: {source}")]
    Read {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The locks could not be recorded.
    #[error("cannot record the locks of {path}: {source}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: DurableError,
    },
}

/// A lock file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockFile {
    pid: Option<u32>,
    since: SystemTime,
}

/// What one poll found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LockDirCounts {
    /// Files whose name or contents are not a lock name and a process id, seen for the first
    /// time (a file counts again only after it was fixed or removed).
    pub invalid: u64,
}

/// Follows one lock directory.
#[derive(Debug)]
pub struct LockDir {
    dir: PathBuf,
    names: LockNames,
    holder: Name,
    /// The invalid files seen at the last poll, so that each is logged and counted once.
    reported: std::collections::HashSet<PathBuf>,
    /// The files as of the last poll recorded: one unchanged since whose lock is no longer
    /// held was evicted by the recorder (its process is gone and it is older than the eviction
    /// age), and is recorded again only once the file changes.
    recorded: BTreeMap<Name, LockFile>,
}

impl LockDir {
    /// Follows the lock files of `dir` that `names` matches.
    pub fn new(dir: &Path, names: LockNames) -> Self {
        Self {
            dir: dir.into(),
            names,
            holder: Name::new(HOLDER).unwrap_or_else(|_| unreachable!("a valid name")),
            reported: Default::default(),
            recorded: BTreeMap::new(),
        }
    }

    /// The lock files now, by lock name; `now` stands for a file's unreadable time. A missing
    /// directory holds no locks.
    fn read(
        &mut self,
        counts: &mut LockDirCounts,
        now: SystemTime,
    ) -> Result<BTreeMap<Name, LockFile>, LockDirError> {
        let err = |source| LockDirError::Read {
            path: self.dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(err(e)),
        };
        let mut files = BTreeMap::new();
        let mut invalid = std::collections::HashSet::new();
        for entry in entries {
            let path = entry.map_err(err)?.path();
            if path.extension().is_none_or(|e| e != "pid") {
                continue;
            }
            // Another program's pid file: not a lock of the application's.
            let stem = path.file_stem().and_then(|s| s.to_str());
            if !self.names.is_any() && !stem.is_some_and(|s| self.names.matches(s)) {
                continue;
            }
            // Released between the listing and now: not held.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| Name::new(s).ok());
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|pid| *pid > 0);
            if name.is_none() || pid.is_none() {
                invalid.insert(path.clone());
                if !self.reported.contains(&path) {
                    counts.invalid += 1;
                    tracing::warn!(
                        file = %path.display(),
                        "lock file without a valid name or process id; {}",
                        if name.is_some() { "counted as held, never by a dead process" } else { "ignored" }
                    );
                }
            }
            let Some(name) = name else { continue };
            // A time before 1970 (a broken clock) counts as 1970: the lock is old.
            let since = meta.modified().unwrap_or(now).max(UNIX_EPOCH);
            files.insert(name, LockFile { pid, since });
        }
        self.reported = invalid;
        Ok(files)
    }

    /// Reads the directory and records what changed since the recorder last saw it.
    pub fn poll(&mut self, recorder: &Recorder) -> Result<LockDirCounts, LockDirError> {
        let mut counts = LockDirCounts::default();
        // The recorder's clock: the one the locks' times are compared with.
        let now = recorder.now();
        let files = self.read(&mut counts, now)?;
        let held: BTreeMap<Name, (Option<u32>, SystemTime)> = recorder
            .held_locks()
            .into_iter()
            .filter(|(lock, _)| lock.holder == self.holder)
            .map(|(lock, at)| (lock.name, (lock.pid, at)))
            .collect();
        let release = |name: &Name| {
            let lock = LockEvent {
                name: name.clone(),
                holder: self.holder.clone(),
                pid: None,
                host: None,
            };
            (Event::LockReleased(lock), None)
        };
        let mut batch = Vec::new();
        for (name, file) in &files {
            match held.get(name) {
                // Unchanged (a time ahead of the clock was recorded as now: the pid decides).
                Some((pid, at)) if *pid == file.pid && (*at == file.since || file.since > now) => {
                    continue;
                }
                // Taken again, by the same process or another: released, then acquired anew.
                Some(_) => batch.push(release(name)),
                // Evicted since it was recorded, and unchanged.
                None if self.recorded.get(name) == Some(file) => continue,
                None => {}
            }
            let mut lock = LockEvent::for_this_process(name.as_str(), HOLDER)
                .unwrap_or_else(|_| unreachable!("valid names"));
            lock.pid = file.pid;
            batch.push((Event::LockAcquired(lock), Some(file.since.min(now))));
        }
        for name in held.keys().filter(|name| !files.contains_key(*name)) {
            batch.push(release(name));
        }
        if !batch.is_empty() {
            recorder
                .record_durable(&batch)
                .map_err(|source| LockDirError::Store {
                    path: self.dir.clone(),
                    source,
                })?;
        }
        self.recorded = files;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(patterns: &[&str]) -> LockNames {
        LockNames::new(patterns.iter().copied()).expect("valid")
    }

    #[test]
    fn names_and_globs_pick_the_applications_lock_files() {
        let reflexio = names(&["daily_digest", "retention_*", "job-?", "w[0-9]", "x[!ab]"]);
        for name in [
            "daily_digest",
            "retention_",
            "retention_facts",
            "job-1",
            "w7",
            "xc",
        ] {
            assert!(reflexio.matches(name), "{name}");
        }
        for name in [
            "daily_digest2",
            "sshd",
            "job-12",
            "wa",
            "xa",
            "retention",
            "DAILY_DIGEST",
        ] {
            assert!(!reflexio.matches(name), "{name}");
        }
        assert!(LockNames::any().matches("anything") && LockNames::any().is_any());
        assert!(names(&["*"]).matches("") && names(&["a*b*c"]).matches("axxbyyc"));
        assert!(!names(&["a*b*c"]).matches("axxbyy"));
        assert!(
            names(&["[]]x"]).matches("]x"),
            "a ] right after [ is a member"
        );
        assert_eq!(names(&["a", "a", " b "]).patterns(), ["a", "b"]);
    }

    #[test]
    fn malformed_names_are_refused_with_why() {
        for (pattern, why) in [
            ("", "empty"),
            ("locks/daily", "without `/`"),
            ("daily_digest.pid", "without `.pid` (`daily_digest`)"),
            ("w[0-9", "without its `]`"),
            ("a\nb", "not a lock name"),
        ] {
            let err = LockNames::new([pattern]).expect_err(pattern);
            assert!(err.contains(why), "{pattern}: {err}");
        }
    }

    #[test]
    fn shared_system_directories_are_known_by_any_path_to_them() {
        assert_eq!(shared_system_dir(Path::new("/tmp")), Some("/tmp"));
        assert_eq!(shared_system_dir(Path::new("/tmp/")), Some("/tmp"));
        assert_eq!(shared_system_dir(Path::new("/tmp/../tmp")), Some("/tmp"));
        assert_eq!(shared_system_dir(Path::new("/dev/shm")), Some("/dev/shm"));
        assert_eq!(shared_system_dir(Path::new("/run")), Some("/run"));
        assert_eq!(shared_system_dir(Path::new("/var/tmp")), Some("/var/tmp"));
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(shared_system_dir(dir.path()), None);
        assert_eq!(shared_system_dir(&dir.path().join("not-yet")), None);
        // A link to /tmp is /tmp.
        let link = dir.path().join("locks");
        std::os::unix::fs::symlink("/tmp", &link).expect("symlink");
        assert_eq!(shared_system_dir(&link), Some("/tmp"));
    }
}
