//! The landing page at `/`: plain server-side HTML (no JavaScript) with the bridge's name and
//! version, links to every endpoint, and a live summary: each SLA figure with its sample count,
//! its target and an ok/breach mark, and the health of the store and of the legacy follower.
//!
//! The figures are read from the same exposition `/metrics` serves, gathered for the page, so
//! the page and a scrape taken at the same moment agree. The targets are read from the alert
//! rules the bridge ships (`docs/monitoring/rules/reflexio-alerts.yml`, built in): the page
//! says breach exactly when the alert's condition holds.

use prometheus::proto::MetricFamily;
use reflexio_otel::contract;
use std::fmt::Write;
use std::sync::LazyLock;
use yaml_rust2::Yaml;

/// The shipped alert rules, built into the binary.
const RULES: &str = include_str!("../../docs/monitoring/rules/reflexio-alerts.yml");

/// How a figure is compared with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// A breach above the threshold.
    Above,
    /// A breach below it.
    Below,
}

/// One SLA figure: what it shows and, from its alert rule, when it breaches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    pub(crate) title: &'static str,
    /// The alert that watches it.
    pub(crate) alert: &'static str,
    /// The exported series of the figure.
    pub(crate) metric: String,
    /// The exported series counting its samples.
    pub(crate) samples: String,
    pub(crate) comparison: Comparison,
    pub(crate) threshold: f64,
    /// The alert fires only with at least this many samples.
    pub(crate) min_samples: f64,
    /// Shown as a percentage.
    pub(crate) percent: bool,
}

/// The figures and the alerts their targets come from, with the series the rule does not name.
const FIGURES: [(&str, &str, Option<&str>, bool); 5] = [
    (
        "Hallucination rate, 24 h",
        "HighHallucinationRate",
        None,
        true,
    ),
    ("Citation coverage, 24 h", "LowCitationCoverage", None, true),
    ("CoVe confidence, 24 h", "LowCoVeConfidence", None, false),
    (
        "Retention errors, 7 days",
        "RetentionErrors",
        Some(contract::RETENTION_OPERATIONS_7D.exported),
        false,
    ),
    (
        "Stale process locks",
        "StaleProcessLocks",
        Some(contract::ACTIVE_LOCKS.exported),
        false,
    ),
];

/// The alert expressions of the rules file, by alert name.
fn expressions(rules: &str) -> Result<Vec<(String, String)>, String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(rules).map_err(|e| e.to_string())?;
    let groups = docs
        .first()
        .and_then(|d| d["groups"].as_vec())
        .ok_or("no `groups`")?;
    Ok(groups
        .iter()
        .filter_map(|g| g["rules"].as_vec())
        .flatten()
        .filter_map(|r| {
            let alert = r["alert"].as_str()?;
            let expr = match &r["expr"] {
                Yaml::String(s) => s.clone(),
                _ => return None,
            };
            Some((alert.to_owned(), expr))
        })
        .collect())
}

/// `metric OP number`, the first comparison of an expression with a number: for
/// `reflexio_hallucination_rate_24h > 0.005 and ...` the metric, `>` and 0.005.
fn comparison(expr: &str) -> Option<(Option<&str>, Comparison, f64)> {
    let tokens: Vec<&str> = expr.split_whitespace().collect();
    tokens.windows(3).find_map(|w| {
        let op = match w[1] {
            ">" => Comparison::Above,
            "<" => Comparison::Below,
            _ => return None,
        };
        let threshold = w[2].parse::<f64>().ok()?;
        let metric = w[0]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            .then_some(w[0]);
        Some((metric, op, threshold))
    })
}

/// `and samples >= n` of an expression.
fn min_samples(expr: &str) -> Option<(&str, f64)> {
    let tokens: Vec<&str> = expr.split_whitespace().collect();
    tokens.windows(4).find_map(|w| {
        (w[0] == "and" && w[2] == ">=").then_some(())?;
        Some((w[1], w[3].parse().ok()?))
    })
}

/// The figures with their targets, read from `rules`.
pub(crate) fn figures(rules: &str) -> Result<Vec<Figure>, String> {
    let exprs = expressions(rules)?;
    FIGURES
        .iter()
        .map(|(title, alert, samples_series, percent)| {
            let expr = exprs
                .iter()
                .find(|(a, _)| a == alert)
                .map(|(_, e)| e.as_str())
                .ok_or_else(|| format!("no alert {alert}"))?;
            let (named, comparison, threshold) =
                comparison(expr).ok_or_else(|| format!("{alert}: no comparison in `{expr}`"))?;
            // RetentionErrors compares increase() of the counter; the page shows the window.
            let metric = match named {
                Some(m) if m.starts_with("reflexio_") => m.to_owned(),
                _ => contract::RETENTION_ERRORS_7D.exported.to_owned(),
            };
            let (samples, min) = match (min_samples(expr), samples_series) {
                (Some((s, n)), _) => (s.to_owned(), n),
                (None, Some(s)) => ((*s).to_owned(), 0.0),
                (None, None) => return Err(format!("{alert}: no sample count")),
            };
            Ok(Figure {
                title,
                alert,
                metric,
                samples,
                comparison,
                threshold,
                min_samples: min,
                percent: *percent,
            })
        })
        .collect()
}

static SHIPPED: LazyLock<Result<Vec<Figure>, String>> = LazyLock::new(|| figures(RULES));

/// The sum of the samples of `name` whose labels include `labels` (`None`: not exported).
fn value(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let family = families.iter().find(|f| f.name() == name)?;
    let kind = family.get_field_type();
    let mut found = None;
    for m in family.get_metric() {
        let matches = labels.iter().all(|(k, v)| {
            m.get_label()
                .iter()
                .any(|l| l.name() == *k && l.value() == *v)
        });
        if !matches {
            continue;
        }
        let v = match kind {
            prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
            prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
            _ => continue,
        };
        *found.get_or_insert(0.0) += v;
    }
    found
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How a figure stands against its target.
fn mark(figure: &Figure, value: f64, samples: f64) -> (&'static str, String) {
    let breached = match figure.comparison {
        Comparison::Above => value > figure.threshold,
        Comparison::Below => value < figure.threshold,
    };
    if samples < figure.min_samples {
        let why = if samples == 0.0 {
            "no data: no samples in the window".to_owned()
        } else {
            format!(
                "too few samples to judge: the alert needs {}",
                figure.min_samples
            )
        };
        return ("nodata", why);
    }
    if breached {
        ("breach", "BREACH".to_owned())
    } else {
        ("ok", "ok".to_owned())
    }
}

fn target(figure: &Figure) -> String {
    let show = |v: f64| {
        if figure.percent {
            format!("{}%", v * 100.0)
        } else {
            v.to_string()
        }
    };
    let mut text = match figure.comparison {
        Comparison::Above => format!("≤ {}", show(figure.threshold)),
        Comparison::Below => format!("≥ {}", show(figure.threshold)),
    };
    if figure.min_samples > 0.0 {
        let _ = write!(text, " (judged from {} samples)", figure.min_samples);
    }
    text
}

/// The health of the store, as the page shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreSummary {
    /// Why the store is unhealthy, if it is.
    pub(crate) trouble: Option<&'static str>,
}

/// The page, from `families` (the exposition, gathered now).
pub(crate) fn page(families: &[MetricFamily], store: &StoreSummary, version: &str) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>reflexio-bridge {version}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}}\
         table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.4em .8em;text-align:left}}\
         th{{background:#f3f3f3}} .ok{{color:#176f2c;font-weight:bold}}\
         .breach{{color:#fff;background:#b3261e;font-weight:bold}}\
         .nodata{{color:#6b6b6b}} code{{background:#f3f3f3;padding:0 .2em}}\
         </style></head>\n<body>\n<h1>reflexio-bridge</h1>\n\
         <p>Version <span id=\"version\">{version}</span>. Serves Reflexio's metrics to \
         Prometheus and OpenTelemetry collectors, and records events sent over HTTP.</p>\n",
        version = escape(version)
    );
    html.push_str(
        "<h2>Endpoints</h2>\n<ul>\n\
         <li><a href=\"metrics\">/metrics</a>: the Prometheus exposition (Prometheus' default \
         path)</li>\n\
         <li><a href=\"metrics/prometheus\">/metrics/prometheus</a>: the same exposition</li>\n\
         <li><a href=\"healthz\">/healthz</a>: liveness</li>\n\
         <li><a href=\"readyz\">/readyz</a>: readiness (the store)</li>\n\
         <li><code>POST /v1/events</code>: event ingest (JSON array or NDJSON)</li>\n\
         </ul>\n",
    );
    html.push_str(
        "<h2>Service levels</h2>\n<table id=\"sla\">\n<tr><th>figure</th><th>value</th>\
         <th>samples</th><th>target</th><th>status</th></tr>\n",
    );
    match &*SHIPPED {
        Ok(figures) => {
            for figure in figures {
                let samples = value(families, &figure.samples, &[]);
                let value = value(families, &figure.metric, &[]);
                let (class, status) = match (value, samples) {
                    (Some(v), Some(n)) => mark(figure, v, n),
                    _ => ("nodata", "not exported".to_owned()),
                };
                let shown = value.map_or("—".to_owned(), |v| v.to_string());
                let human = match value {
                    Some(v) if figure.percent => format!(" ({:.2}%)", v * 100.0),
                    _ => String::new(),
                };
                let _ = writeln!(
                    html,
                    "<tr data-metric=\"{metric}\"><td>{title}</td>\
                     <td><span class=\"value\">{shown}</span>{human}</td>\
                     <td><span class=\"samples\" data-metric=\"{samples_metric}\">{samples}</span></td>\
                     <td>{target} <small>(alert {alert})</small></td>\
                     <td class=\"{class}\">{status}</td></tr>",
                    metric = escape(&figure.metric),
                    title = escape(figure.title),
                    samples_metric = escape(&figure.samples),
                    samples = samples.map_or("—".to_owned(), |n| n.to_string()),
                    target = escape(&target(figure)),
                    alert = escape(figure.alert),
                    status = escape(&status),
                );
            }
        }
        Err(e) => {
            let _ = writeln!(
                html,
                "<tr><td colspan=\"5\">the shipped alert rules cannot be read: {}</td></tr>",
                escape(e)
            );
        }
    }
    html.push_str("</table>\n<h2>Health</h2>\n<table id=\"health\">\n");
    let store_healthy = value(families, contract::STORE_HEALTHY.exported, &[]);
    let (class, text) = match (store_healthy, store.trouble) {
        (None, _) => ("nodata", "no store".to_owned()),
        (Some(h), _) if h >= 1.0 => ("ok", "ok".to_owned()),
        (Some(_), Some(why)) => ("breach", format!("failing: {why}")),
        (Some(_), None) => ("breach", "failing".to_owned()),
    };
    let last_flush = value(families, contract::STORE_LAST_FLUSH.exported, &[])
        .filter(|t| *t > 0.0)
        .and_then(|t| jiff::Timestamp::from_microsecond((t * 1e6) as i64).ok())
        .map_or("never".to_owned(), |t| format!("{t:.0}"));
    let _ = writeln!(
        html,
        "<tr><th>store</th><td class=\"{class}\" id=\"store\">{}</td>\
         <td>last flush: {last_flush}</td></tr>",
        escape(&text)
    );
    for source in ["database", "lock_dir"] {
        let healthy = value(
            families,
            contract::LEGACY_HEALTHY.exported,
            &[(contract::SOURCE_LABEL, source)],
        );
        let (class, text) = match healthy {
            None => ("nodata", "not followed"),
            Some(h) if h >= 1.0 => ("ok", "ok"),
            Some(_) => ("breach", "failing: its last poll failed (see the log)"),
        };
        let what = if source == "database" {
            "legacy database (--legacy-db)"
        } else {
            "legacy lock directory (--lock-dir)"
        };
        let _ = writeln!(
            html,
            "<tr><th>{what}</th><td class=\"{class}\" id=\"legacy-{source}\">{text}</td><td></td></tr>"
        );
    }
    html.push_str(
        "</table>\n<p>Figures as of this page's load, from the exposition at \
         <a href=\"metrics\">/metrics</a>; targets from the shipped alert rules \
         (reflexio-alerts.yml).</p>\n</body></html>\n",
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_comes_from_the_shipped_rules() {
        let figures = figures(RULES).expect("the shipped rules");
        let got: Vec<_> = figures
            .iter()
            .map(|f| {
                (
                    f.alert,
                    f.metric.as_str(),
                    f.comparison,
                    f.threshold,
                    f.samples.as_str(),
                    f.min_samples,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "HighHallucinationRate",
                    "reflexio_hallucination_rate_24h",
                    Comparison::Above,
                    0.005,
                    "reflexio_assessed_facts_24h",
                    200.0
                ),
                (
                    "LowCitationCoverage",
                    "reflexio_citation_coverage_24h",
                    Comparison::Below,
                    0.95,
                    "reflexio_citation_assessed_facts_24h",
                    100.0
                ),
                (
                    "LowCoVeConfidence",
                    "reflexio_cove_avg_confidence_24h",
                    Comparison::Below,
                    0.70,
                    "reflexio_cove_verified_facts_24h",
                    100.0
                ),
                (
                    "RetentionErrors",
                    "reflexio_retention_errors_7d",
                    Comparison::Above,
                    0.0,
                    "reflexio_retention_operations_7d",
                    0.0
                ),
                (
                    "StaleProcessLocks",
                    "reflexio_stale_locks",
                    Comparison::Above,
                    0.0,
                    "reflexio_active_locks",
                    0.0
                ),
            ]
        );
        // A changed threshold in the rules changes the page.
        let edited = RULES.replace(
            "reflexio_hallucination_rate_24h > 0.005",
            "reflexio_hallucination_rate_24h > 0.01",
        );
        assert_eq!(figures_of(&edited)[0].threshold, 0.01);
    }

    fn figures_of(rules: &str) -> Vec<Figure> {
        figures(rules).expect("rules")
    }

    #[test]
    fn marks_follow_the_alert_condition() {
        let f = &figures_of(RULES)[0];
        assert_eq!(mark(f, 0.004, 500.0).0, "ok");
        assert_eq!(mark(f, 0.005, 500.0).0, "ok", "the alert is `>`");
        assert_eq!(mark(f, 0.006, 500.0).0, "breach");
        assert_eq!(mark(f, 0.5, 10.0).0, "nodata", "too few samples");
        assert_eq!(mark(f, 0.0, 0.0).1, "no data: no samples in the window");
        let coverage = &figures_of(RULES)[1];
        assert_eq!(mark(coverage, 0.94, 100.0).0, "breach");
        assert_eq!(mark(coverage, 0.95, 100.0).0, "ok");
        assert_eq!(target(coverage), "≥ 95% (judged from 100 samples)");
    }

    #[test]
    fn the_page_shows_the_gathered_values() {
        let pipeline = reflexio_otel::PrometheusPipeline::new().expect("pipeline");
        let recorder = reflexio_otel::Recorder::new();
        recorder.register(&opentelemetry::metrics::MeterProvider::meter(
            &pipeline.provider,
            "t",
        ));
        for i in 0..300 {
            recorder.record_fact(
                &reflexio_otel::Fact::new(0.97)
                    .expect("valid")
                    .hallucinated(i < 3),
            );
        }
        let html = page(
            &pipeline.registry.gather(),
            &StoreSummary::default(),
            "1.2.3",
        );
        assert!(html.contains("<span id=\"version\">1.2.3</span>"), "{html}");
        assert!(
            html.contains("<span class=\"value\">0.01</span> (1.00%)"),
            "{html}"
        );
        assert!(html.contains(">300</span>"), "{html}");
        assert!(html.contains("<td class=\"breach\">BREACH</td>"), "{html}");
        assert!(html.contains("id=\"store\">no store<"), "{html}");
        assert!(
            html.contains("id=\"legacy-database\">not followed<"),
            "{html}"
        );
        assert!(!html.contains("<script"), "no JavaScript");
    }
}
