//! A process that is gone, for the tests of locks whose holder died (shared by
//! `reflexio-otel/tests/store.rs`, `reflexio-otel/tests/faults.rs` and the bridge's tests).

/// A pid that names no process: a child that has exited and been reaped.
pub(crate) fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("reaped");
    pid
}
