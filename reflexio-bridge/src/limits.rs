//! Process limits. A file size limit (`RLIMIT_FSIZE`: `ulimit -f`, systemd's `LimitFSIZE=`)
//! makes the kernel send `SIGXFSZ`, which kills a process by default, when a write would pass
//! it. The bridge handles the signal instead, so that the write fails: the store then reports
//! itself full, as on a full disk.

use anyhow::Context;

/// Handles `SIGXFSZ` for the rest of the process's life: a write past the file size limit
/// fails instead of killing the process. Call it before the store is opened.
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
                // The write that passed the limit fails with `EFBIG`; the signal itself says
                // nothing more.
                while stream.recv().await.is_some() {}
            });
        })
        .context("cannot start the SIGXFSZ watcher")?;
    result
        .recv()
        .context("the SIGXFSZ watcher stopped")?
        .context("cannot handle SIGXFSZ")
}

/// The process's file size limit in bytes, if it has one.
pub(crate) fn file_size_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Fsize).current
}
