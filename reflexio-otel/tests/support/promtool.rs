//! `promtool check metrics`, Prometheus's own linter of the text exposition, for the tests that
//! check an exposition with it (shared by `reflexio-otel/tests/exposition.rs`, the workspace's
//! `tests/example_basic.rs` and `reflexio-bridge/tests/web.rs`).

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `text`, asserts that it accepts it, and returns what it
/// printed (its remarks; empty when it has none).
pub(crate) fn check_metrics(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed: the README's test command installs prometheus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write exposition");
    let out = child.wait_with_output().expect("promtool runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{printed}"
    );
    printed
}
