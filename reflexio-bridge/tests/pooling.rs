//! Two bridges with different events — facts with any subset of their verdicts, some sent before
//! Prometheus first scrapes them, some backfilled into the window's past or beyond it — scraped
//! by a real Prometheus: every query of docs/metrics.md's "Pooling across instances" equals the
//! truth counted from the events themselves, each pooled count exactly, and each bridge's ratio
//! equals its exported numerator over its exported denominator.

mod common;

use common::{Bridge, Server, eventually, query, value};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// A fact as sent: its age, and each verdict if known.
#[derive(Debug, Clone, Copy)]
struct SentFact {
    age: SignedDuration,
    hallucinated: Option<bool>,
    atomic: Option<bool>,
    coverage: Option<f64>,
    cove: Option<(f64, u32)>,
}

impl SentFact {
    fn random(rng: &mut fastrand::Rng) -> SentFact {
        let mut known = || rng.u8(..10) < 8;
        let (h, a, c, v) = (known(), known(), known(), known());
        let age = match rng.u8(..10) {
            0..=5 => SignedDuration::ZERO,
            // Backfilled into the 24h window's past.
            6..=8 => SignedDuration::from_mins(rng.i64(1..23 * 60 + 30)),
            // Older than the window: in the counters only.
            _ => SignedDuration::from_mins(rng.i64(25 * 60..72 * 60)),
        };
        SentFact {
            age,
            hallucinated: h.then(|| rng.u8(..20) == 0),
            atomic: a.then(|| rng.u8(..10) != 0),
            coverage: c.then(|| f64::from(rng.u32(500..=1000)) / 1000.0),
            cove: v.then(|| (f64::from(rng.u32(300..=1000)) / 1000.0, rng.u32(1..=4))),
        }
    }

    fn wire(&self, now: Timestamp) -> Value {
        let mut event = json!({
            "type": "fact",
            "hallucinated": self.hallucinated,
            "atomic": self.atomic,
            "citation_coverage": self.coverage,
        });
        if let Some((confidence, rounds)) = self.cove {
            event["cove"] = json!({"confidence": confidence, "rounds": rounds});
        }
        if !self.age.is_zero() {
            event["time"] = json!((now - self.age).to_string());
        }
        event
    }

    fn in_24h(&self) -> bool {
        self.age < SignedDuration::from_hours(24)
    }
}

/// A retention run as sent: its age in hours and whether it failed.
fn retention(age_hours: i64, failed: bool, now: Timestamp) -> Value {
    let time = (now - SignedDuration::from_hours(age_hours)).to_string();
    let error = failed.then_some("database is locked");
    json!({"type":"retention","table":"facts","deleted_records":3,"error":error,"time":time})
}

/// The queries of the first PromQL block of docs/metrics.md's "Pooling across instances".
fn documented_queries() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let doc = std::fs::read_to_string(path).expect("docs/metrics.md");
    let section = doc
        .split("## Pooling across instances")
        .nth(1)
        .expect("a pooling section");
    let block = section
        .split("```promql")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a promql block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn pooled_queries_over_two_bridges_equal_the_truth_of_all_their_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |name: &str| {
        let store = dir.path().join(format!("{name}.db"));
        Bridge::start(&["--store", store.to_str().expect("path")])
    };
    let bridges = [start("a"), start("b")];
    let now = Timestamp::now();
    let mut rng = fastrand::Rng::with_seed(11);
    let facts: [Vec<SentFact>; 2] = [
        (0..400).map(|_| SentFact::random(&mut rng)).collect(),
        (0..250).map(|_| SentFact::random(&mut rng)).collect(),
    ];
    let runs = [
        vec![(1, true), (30, false), (9 * 24, true)],
        vec![(2, false), (3 * 24, true)],
    ];

    // Half of each bridge's events before Prometheus scrapes it for the first time, half after.
    let send = |i: usize, first_half: bool| {
        let half = facts[i].len() / 2;
        let part = if first_half {
            &facts[i][..half]
        } else {
            &facts[i][half..]
        };
        let mut events: Vec<Value> = part.iter().map(|f| f.wire(now)).collect();
        if !first_half {
            events.extend(
                runs[i]
                    .iter()
                    .map(|&(age, failed)| retention(age, failed, now)),
            );
        }
        let (status, body) =
            bridges[i].post(Value::Array(events).to_string(), "application/json", None);
        assert_eq!(status, 202, "{body}");
    };
    send(0, true);
    send(1, true);
    let addrs: Vec<&str> = bridges.iter().map(|b| b.addr.as_str()).collect();
    let prometheus = Server::prometheus(&addrs);
    let scraped = |expr: &str, expected: f64| {
        eventually(Duration::from_secs(30), || {
            query(prometheus.port, expr).is_ok_and(|r| r.len() == 1 && value(&r[0]) == expected)
        })
    };
    assert!(
        scraped(r#"count(up{job="reflexio"} == 1)"#, 2.0),
        "{}",
        prometheus.log()
    );
    send(0, false);
    send(1, false);
    let all: Vec<&SentFact> = facts.iter().flatten().collect();
    assert!(
        scraped("sum(reflexio_facts_total)", all.len() as f64),
        "every fact scraped"
    );

    // The truth, counted from the events.
    let day: Vec<&SentFact> = all.iter().copied().filter(|f| f.in_24h()).collect();
    let count = |p: fn(&SentFact) -> bool| day.iter().filter(|f| p(f)).count() as f64;
    let sum = |v: fn(&SentFact) -> Option<f64>| day.iter().filter_map(|f| v(f)).sum::<f64>();
    let assessed = count(|f| f.hallucinated.is_some());
    let hallucinated = count(|f| f.hallucinated == Some(true));
    let atomicity_assessed = count(|f| f.atomic.is_some());
    let violations = count(|f| f.atomic == Some(false));
    let citation_assessed = count(|f| f.coverage.is_some());
    let coverage = sum(|f| f.coverage);
    let verified = count(|f| f.cove.is_some());
    let confidence = sum(|f| f.cove.map(|c| c.0));
    let rounds = sum(|f| f.cove.map(|c| f64::from(c.1)));
    let errors_7d = runs
        .iter()
        .flatten()
        .filter(|(age, failed)| *failed && *age < 7 * 24)
        .count() as f64;
    assert!(
        [assessed, atomicity_assessed, citation_assessed, verified]
            .iter()
            .all(|&n| n > 0.0 && n < day.len() as f64),
        "the events have partial verdicts"
    );
    assert!(
        day.len() < all.len(),
        "some facts are older than the window"
    );

    // Each pooled count, exactly.
    for (expr, expected) in [
        ("sum(reflexio_facts_24h)", day.len() as f64),
        ("sum(reflexio_assessed_facts_24h)", assessed),
        ("sum(reflexio_hallucinated_facts_24h)", hallucinated),
        (
            "sum(reflexio_atomicity_assessed_facts_24h)",
            atomicity_assessed,
        ),
        ("sum(reflexio_atomicity_violations_24h)", violations),
        (
            "sum(reflexio_citation_assessed_facts_24h)",
            citation_assessed,
        ),
        ("sum(reflexio_cove_verified_facts_24h)", verified),
        ("sum(reflexio_cove_verification_rounds_sum_24h)", rounds),
        ("sum(reflexio_retention_errors_7d)", errors_7d),
    ] {
        let got = query(prometheus.port, expr).expect("query");
        assert_eq!(got.len(), 1, "{expr}");
        assert_eq!(value(&got[0]), expected, "{expr}");
    }

    // Every documented query, against the truth.
    let truth: BTreeMap<&str, f64> = [
        (
            "sum(reflexio_hallucinated_facts_24h) / sum(reflexio_assessed_facts_24h)",
            hallucinated / assessed,
        ),
        (
            "sum(reflexio_atomicity_violations_24h) / sum(reflexio_atomicity_assessed_facts_24h)",
            violations / atomicity_assessed,
        ),
        (
            "sum(reflexio_citation_coverage_sum_24h) / sum(reflexio_citation_assessed_facts_24h)",
            coverage / citation_assessed,
        ),
        (
            "sum(reflexio_cove_confidence_sum_24h) / sum(reflexio_cove_verified_facts_24h)",
            confidence / verified,
        ),
        (
            "sum(reflexio_cove_verification_rounds_sum_24h) / sum(reflexio_cove_verified_facts_24h)",
            rounds / verified,
        ),
        ("sum(reflexio_facts_24h)", day.len() as f64),
        ("sum(reflexio_retention_errors_7d)", errors_7d),
    ]
    .into_iter()
    .collect();
    let documented = documented_queries();
    for expr in &documented {
        let expected = truth
            .get(expr.as_str())
            .unwrap_or_else(|| panic!("no truth for the documented query {expr}"));
        let got = query(prometheus.port, expr).expect("query");
        assert_eq!(got.len(), 1, "{expr}");
        let got = value(&got[0]);
        assert!(
            (got - expected).abs() <= 1e-12 * expected.abs().max(1.0),
            "{expr}: {got} != {expected}"
        );
    }
    assert_eq!(documented.len(), truth.len(), "{documented:?}");

    // On each bridge, each ratio is its numerator over its denominator, bit for bit.
    for (ratio, numerator, denominator) in [
        (
            "reflexio_hallucination_rate_24h",
            "reflexio_hallucinated_facts_24h",
            "reflexio_assessed_facts_24h",
        ),
        (
            "reflexio_citation_coverage_24h",
            "reflexio_citation_coverage_sum_24h",
            "reflexio_citation_assessed_facts_24h",
        ),
        (
            "reflexio_cove_avg_confidence_24h",
            "reflexio_cove_confidence_sum_24h",
            "reflexio_cove_verified_facts_24h",
        ),
        (
            "reflexio_cove_avg_verification_rounds_24h",
            "reflexio_cove_verification_rounds_sum_24h",
            "reflexio_cove_verified_facts_24h",
        ),
    ] {
        let same = format!("{ratio} == {numerator} / {denominator}");
        let got = query(prometheus.port, &same).expect("query");
        assert_eq!(got.len(), 2, "{same}: {got:?}");
    }
}
