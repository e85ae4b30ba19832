//! Process limits. A file size limit (`RLIMIT_FSIZE`: `ulimit -f`, systemd's `LimitFSIZE=`)
//! makes the kernel send `SIGXFSZ`, which kills a process by default, when a write would pass
//! it. The bridge handles the signal instead, so that the write fails, and notes when it came:
//! SQLite reports such a write as a plain I/O error, which the bridge then reports as a full
//! store, as on a full disk.

use anyhow::Context;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a write last passed the file size limit, in Unix milliseconds (0: never).
static EXCEEDED_AT: AtomicU64 = AtomicU64::new(0);

/// How long before an I/O error a `SIGXFSZ` may have come and still be its cause.
const CAUSE_WINDOW: Duration = Duration::from_secs(5);

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Handles `SIGXFSZ` for the rest of the process's life: a write past the file size limit
/// fails instead of killing the process, and [`exceeded_since`] tells it happened. Call it
/// before the store is opened.
pub(crate) fn watch_file_size_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (registered, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sigxfsz".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = registered.send(Err(anyhow::Error::new(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let xfsz = SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw());
                let mut stream = match signal(xfsz) {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = registered.send(Err(anyhow::Error::new(e)));
                        return;
                    }
                };
                let _ = registered.send(Ok(()));
                while stream.recv().await.is_some() {
                    EXCEEDED_AT.store(unix_millis(SystemTime::now()), Ordering::Relaxed);
                }
            });
        })
        .context("cannot start the SIGXFSZ watcher")?;
    result
        .recv()
        .context("the SIGXFSZ watcher stopped")?
        .context("cannot handle SIGXFSZ")
}

/// A write passed the file size limit at `since` or later (allowing for the signal arriving
/// shortly before the failure it causes is noticed).
pub(crate) fn exceeded_since(since: SystemTime) -> bool {
    let at = EXCEEDED_AT.load(Ordering::Relaxed);
    at != 0 && at + unix_millis(UNIX_EPOCH + CAUSE_WINDOW) >= unix_millis(since)
}

/// Waits up to `patience` for a `SIGXFSZ` at `since` or later: the signal is handled on its
/// own thread, a moment after the write it interrupted failed.
pub(crate) async fn wait_exceeded_since(since: SystemTime, patience: Duration) -> bool {
    if file_size_limit().is_none() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if exceeded_since(since) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The process's file size limit in bytes, if it has one.
pub(crate) fn file_size_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Fsize).current
}
