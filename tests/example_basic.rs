//! `cargo run --example basic` prints every contract metric with its type, and
//! `promtool check metrics` has nothing to say about it.

use std::process::Command;

#[path = "../reflexio-otel/tests/support/promtool.rs"]
mod promtool;

const CONTRACT: [(&str, &str); 15] = [
    ("reflexio_transcriptions_total", "counter"),
    ("reflexio_facts_total", "counter"),
    ("reflexio_digests_total", "counter"),
    ("reflexio_cove_enabled", "gauge"),
    ("reflexio_cove_confidence_threshold", "gauge"),
    ("reflexio_cove_avg_confidence_24h", "gauge"),
    ("reflexio_cove_avg_verification_rounds_24h", "gauge"),
    ("reflexio_hallucination_rate_24h", "gauge"),
    ("reflexio_citation_coverage_24h", "gauge"),
    ("reflexio_atomicity_violations_24h", "gauge"),
    ("reflexio_retention_operations_7d", "gauge"),
    ("reflexio_retention_deleted_records_7d", "gauge"),
    ("reflexio_retention_errors_7d", "gauge"),
    ("reflexio_active_locks", "gauge"),
    ("reflexio_stale_locks", "gauge"),
];

#[test]
fn basic_example_prints_the_contract_and_passes_promtool() {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--example", "basic"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 exposition");

    for (name, kind) in CONTRACT {
        assert!(
            text.contains(&format!("\n# TYPE {name} {kind}\n")),
            "{name} is not a {kind} in:\n{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} has no sample"
        );
    }
    // The example's workload leaves something in every window and one stale lock.
    for live in [
        "reflexio_facts_24h",
        "reflexio_hallucination_rate_24h",
        "reflexio_retention_errors_7d",
        "reflexio_stale_locks",
    ] {
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{live} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!(value > 0.0, "{live} is {value}");
    }

    // Fails unless promtool accepts the text; then it must have no remarks either.
    let remarks = promtool::check_metrics(&text);
    assert!(remarks.is_empty(), "promtool: {remarks}");
}
