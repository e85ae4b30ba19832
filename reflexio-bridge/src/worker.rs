//! A background thread that runs until its handle is dropped: a stop flag its body checks, a
//! pause between rounds that a stop cuts short, and a join on drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a worker's body sees: whether it is asked to stop, and a pause that the request cuts
/// short.
#[derive(Debug)]
pub(crate) struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Whether the worker's handle was dropped.
    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Waits `at_most`, less if a stop is requested meanwhile (or the thread is woken early).
    pub(crate) fn pause(&self, at_most: Duration) {
        std::thread::park_timeout(at_most);
    }
}

/// A running background thread. Dropping it asks the body to stop, wakes it from its pause and
/// waits for it to return.
#[derive(Debug)]
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `body` in a thread named `name`.
    pub(crate) fn spawn(
        name: &str,
        body: impl FnOnce(&Stop) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Stop(Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    #[test]
    fn dropping_the_worker_cuts_its_pause_short_and_joins_it() {
        let rounds = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&rounds);
        let worker = Worker::spawn("test-worker", move |stop| {
            while !stop.requested() {
                counted.fetch_add(1, Ordering::Relaxed);
                stop.pause(Duration::from_secs(60));
            }
            counted.fetch_add(1000, Ordering::Relaxed);
        })
        .expect("spawned");
        while rounds.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let started = Instant::now();
        drop(worker);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pause was not cut short"
        );
        assert_eq!(
            rounds.load(Ordering::Relaxed),
            1001,
            "the body ran once, then finished before the drop returned"
        );
    }
}
