//! The Prometheus exposition: every contract name with its type, exact values, the overflow
//! series, `promtool check metrics`, and `docs/metrics.md` in step with the contract.

use opentelemetry::metrics::MeterProvider;
use reflexio_otel::contract::{self, MetricKind};
use reflexio_otel::{
    CoveConfig, Event, Fact, LockEvent, PrometheusPipeline, Recorder, RetentionRun,
};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

#[path = "support/exposition.rs"]
mod exposition;
#[path = "support/promtool.rs"]
mod promtool;
use exposition::samples;
use promtool::check_metrics as promtool_check;

/// `# TYPE` lines of an exposition: name -> type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("TYPE line has a name and a type");
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

fn registered() -> (PrometheusPipeline, Recorder) {
    let pipeline = PrometheusPipeline::new().expect("pipeline");
    let recorder = Recorder::new();
    recorder.register(&pipeline.provider.meter("reflexio"));
    (pipeline, recorder)
}

fn record_mix(recorder: &Recorder) {
    recorder
        .record(CoveConfig::new(true, 0.7).expect("valid"))
        .expect("recorded");
    for i in 0..10 {
        let fact = Fact::new(0.98)
            .expect("valid")
            .hallucinated(i == 3)
            .atomic(i != 5);
        let fact = if i < 4 {
            fact.with_cove(0.9, 1 + (i % 2) as u32).expect("valid")
        } else {
            fact
        };
        recorder.record_fact(&fact);
    }
    // Facts with only some verdicts: each counts for its own figures.
    recorder.record_fact(&Fact::unassessed().hallucinated(true));
    recorder.record_fact(
        &Fact::unassessed()
            .atomic(false)
            .with_citation_coverage(0.5)
            .expect("valid"),
    );
    recorder.record_transcription();
    recorder.record_transcription();
    recorder.record_digest();
    let runs = [
        RetentionRun::new("facts", 120).expect("valid"),
        RetentionRun::new("facts", 9).expect("valid").dry_run(true),
        RetentionRun::new("digests", 0)
            .expect("valid")
            .failed("database is locked"),
    ];
    for run in runs {
        recorder.record(run).expect("recorded");
    }
    // An old run: in the totals, outside the 7d window.
    recorder
        .record_at(
            RetentionRun::new("facts", 1000).expect("valid"),
            SystemTime::now() - Duration::from_secs(8 * 86_400),
        )
        .expect("recorded");
    recorder
        .record_at(
            Event::LockAcquired(LockEvent::new("retention", "worker-7").expect("valid")),
            SystemTime::now() - Duration::from_secs(2 * 3600),
        )
        .expect("recorded");
}

#[test]
fn every_contract_metric_is_exported_with_its_type() {
    let (pipeline, recorder) = registered();
    record_mix(&recorder);
    let _held = recorder
        .acquire_lock(LockEvent::new("daily_digest", "worker-1").expect("valid"))
        .expect("acquired");
    let text = pipeline.encode().expect("encode");

    let types = types(&text);
    for m in contract::ALL {
        assert_eq!(
            types.get(m.exported).map(String::as_str),
            Some(m.kind.as_str()),
            "{} must be exported as a {}",
            m.exported,
            m.kind.as_str()
        );
    }
    assert_eq!(
        types.len(),
        contract::ALL.len(),
        "no metric outside the contract: {types:?}"
    );
    let required = [
        "reflexio_transcriptions_total",
        "reflexio_facts_total",
        "reflexio_digests_total",
        "reflexio_cove_enabled",
        "reflexio_cove_confidence_threshold",
        "reflexio_cove_avg_confidence_24h",
        "reflexio_cove_avg_verification_rounds_24h",
        "reflexio_hallucination_rate_24h",
        "reflexio_citation_coverage_24h",
        "reflexio_atomicity_violations_24h",
        "reflexio_retention_operations_7d",
        "reflexio_retention_deleted_records_7d",
        "reflexio_retention_errors_7d",
        "reflexio_active_locks",
        "reflexio_stale_locks",
    ];
    for name in required {
        let expected = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(expected),
            "{name}"
        );
    }

    let v = samples(&text);
    let expect = [
        ("reflexio_transcriptions_total", 2.0),
        ("reflexio_facts_total", 12.0),
        ("reflexio_assessed_facts_total", 11.0),
        ("reflexio_digests_total", 1.0),
        ("reflexio_hallucinated_facts_total", 2.0),
        ("reflexio_atomicity_assessed_facts_total", 11.0),
        ("reflexio_atomicity_violations_total", 2.0),
        ("reflexio_cove_enabled", 1.0),
        ("reflexio_cove_confidence_threshold", 0.7),
        ("reflexio_facts_24h", 12.0),
        ("reflexio_assessed_facts_24h", 11.0),
        ("reflexio_hallucinated_facts_24h", 2.0),
        ("reflexio_hallucination_rate_24h", 2.0 / 11.0),
        ("reflexio_citation_assessed_facts_24h", 11.0),
        ("reflexio_citation_coverage_sum_24h", 10.3),
        ("reflexio_citation_coverage_24h", 10.3 / 11.0),
        ("reflexio_atomicity_assessed_facts_24h", 11.0),
        ("reflexio_atomicity_violations_24h", 2.0),
        ("reflexio_cove_verified_facts_24h", 4.0),
        ("reflexio_cove_confidence_sum_24h", 3.6),
        ("reflexio_cove_avg_confidence_24h", 3.6 / 4.0),
        ("reflexio_cove_verification_rounds_sum_24h", 6.0),
        ("reflexio_cove_avg_verification_rounds_24h", 1.5),
        ("reflexio_retention_operations_7d", 3.0),
        ("reflexio_retention_deleted_records_7d", 120.0),
        ("reflexio_retention_errors_7d", 1.0),
        ("reflexio_retention_operations_total{table=\"facts\"}", 3.0),
        (
            "reflexio_retention_deleted_records_total{table=\"facts\"}",
            1120.0,
        ),
        ("reflexio_retention_errors_total{table=\"digests\"}", 1.0),
        ("reflexio_retention_errors_total{table=\"facts\"}", 0.0),
        ("reflexio_active_locks", 2.0),
        ("reflexio_stale_locks", 1.0),
        ("reflexio_citation_coverage_count", 11.0),
        ("reflexio_citation_coverage_bucket{le=\"0.5\"}", 1.0),
        ("reflexio_citation_coverage_bucket{le=\"0.95\"}", 1.0),
        ("reflexio_citation_coverage_bucket{le=\"0.98\"}", 11.0),
        ("reflexio_cove_confidence_count", 4.0),
        ("reflexio_cove_confidence_bucket{le=\"0.9\"}", 4.0),
        ("reflexio_cove_confidence_bucket{le=\"0.8\"}", 0.0),
        ("reflexio_cove_verification_rounds_bucket{le=\"1\"}", 2.0),
        ("reflexio_cove_verification_rounds_sum", 6.0),
        ("reflexio_cove_verification_rounds_count", 4.0),
    ];
    for (series, value) in expect {
        assert_eq!(v.get(series), Some(&value), "{series}\n{text}");
    }
    let sum = v["reflexio_citation_coverage_sum"];
    assert!((sum - 10.3).abs() < 1e-9, "coverage sum {sum}");
    let sum = v["reflexio_cove_confidence_sum"];
    assert!((sum - 3.6).abs() < 1e-9, "confidence sum {sum}");

    assert_eq!(promtool_check(&text), "", "promtool has remarks");
}

#[test]
fn an_empty_recorder_exports_every_series_with_documented_values() {
    let (pipeline, recorder) = registered();
    let text = pipeline.encode().expect("encode");
    let (v, families) = (samples(&text), types(&text));
    // As documented: histograms appear with their first observation (the SDK exports no
    // empty histogram) and per-table series with their table's first run; everything else is
    // there from the start.
    let deferred = |m: &contract::MetricSpec| {
        m.kind == MetricKind::Histogram || m.labels == [contract::TABLE_LABEL]
    };
    for m in contract::ALL {
        let present = families.contains_key(m.exported);
        assert_eq!(
            present,
            !deferred(m),
            "{} in an empty exposition",
            m.exported
        );
    }
    assert_eq!(v["reflexio_facts_24h"], 0.0);
    assert_eq!(v["reflexio_hallucination_rate_24h"], 0.0);
    assert_eq!(v["reflexio_citation_coverage_24h"], 0.0);
    assert_eq!(v["reflexio_cove_verified_facts_24h"], 0.0);
    assert_eq!(v["reflexio_cove_avg_confidence_24h"], 0.0);
    assert_eq!(promtool_check(&text), "");

    recorder.record_fact(
        &Fact::new(1.0)
            .expect("valid")
            .with_cove(1.0, 1)
            .expect("valid"),
    );
    recorder.record_retention(&RetentionRun::new("facts", 1).expect("valid"));
    let families = types(&pipeline.encode().expect("encode"));
    for m in contract::ALL.iter().filter(|m| deferred(m)) {
        assert!(
            families.contains_key(m.exported),
            "{} after first use",
            m.exported
        );
    }
}

#[test]
fn tables_past_the_limit_share_the_overflow_series() {
    let pipeline = PrometheusPipeline::new().expect("pipeline");
    let recorder = Recorder::builder().max_tables(2).build();
    recorder.register(&pipeline.provider.meter("reflexio"));
    for (i, table) in ["facts", "digests", "audio", "logs", "facts"]
        .iter()
        .enumerate()
    {
        recorder.record_retention(&RetentionRun::new(table, i as u64).expect("valid"));
    }
    let text = pipeline.encode().expect("encode");
    let v = samples(&text);
    assert_eq!(
        v["reflexio_retention_operations_total{table=\"facts\"}"],
        2.0
    );
    assert_eq!(
        v["reflexio_retention_operations_total{table=\"digests\"}"],
        1.0
    );
    assert_eq!(
        v["reflexio_retention_operations_total{otel_metric_overflow=\"true\"}"],
        2.0
    );
    assert_eq!(
        v["reflexio_retention_deleted_records_total{otel_metric_overflow=\"true\"}"],
        5.0
    );
    let series = v
        .keys()
        .filter(|k| k.starts_with("reflexio_retention_operations_total"))
        .count();
    assert_eq!(series, 3, "{text}");
    assert_eq!(promtool_check(&text), "");
}

#[test]
fn each_collection_sees_events_recorded_just_before_it() {
    let (pipeline, recorder) = registered();
    for n in 1..=50u64 {
        recorder.record_fact(&Fact::new(0.5).expect("valid").hallucinated(n % 2 == 0));
        let v = samples(&pipeline.encode().expect("encode"));
        assert_eq!(v["reflexio_facts_total"], n as f64);
        assert_eq!(v["reflexio_facts_24h"], n as f64);
        assert_eq!(v["reflexio_citation_coverage_count"], n as f64);
        assert_eq!(v["reflexio_hallucinated_facts_total"], (n / 2) as f64);
    }
}

/// `docs/metrics.md`'s contract table: `| \`name\` | type | ...`.
#[test]
fn docs_list_exactly_the_contract() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let doc = std::fs::read_to_string(path).expect("docs/metrics.md");
    let documented: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<_> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.get(2)?;
            name.starts_with("reflexio_")
                .then(|| (name.to_owned(), kind.to_string()))
        })
        .collect();
    let contract: BTreeMap<String, String> = contract::ALL
        .iter()
        .chain(contract::STORE)
        .chain(contract::BRIDGE)
        .chain(contract::LEGACY)
        .map(|m| (m.exported.to_owned(), m.kind.as_str().to_owned()))
        .collect();
    assert_eq!(documented, contract);
}

#[test]
fn declared_tables_are_exported_at_zero_before_any_run() {
    let pipeline = PrometheusPipeline::new().expect("pipeline");
    let recorder = Recorder::builder()
        .tables(["facts", "digests"])
        .expect("valid")
        .build();
    recorder.register(&pipeline.provider.meter("reflexio"));
    let v = samples(&pipeline.encode().expect("encode"));
    for table in ["facts", "digests"] {
        for counter in ["operations", "deleted_records", "errors"] {
            let series = format!("reflexio_retention_{counter}_total{{table=\"{table}\"}}");
            assert_eq!(v.get(&series), Some(&0.0), "{series}");
        }
    }
    recorder.record_retention(
        &RetentionRun::new("facts", 3)
            .expect("valid")
            .failed("locked"),
    );
    let v = samples(&pipeline.encode().expect("encode"));
    assert_eq!(v["reflexio_retention_errors_total{table=\"facts\"}"], 1.0);
    assert!(Recorder::builder().tables([""]).is_err());
}
