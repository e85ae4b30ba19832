//! The monitoring configuration in `docs/monitoring`, checked with the real tools (`promtool`,
//! `amtool`) and against the mistakes of the original guide: rules, rule unit tests,
//! Prometheus and Alertmanager configuration, the Grafana dashboard and provisioning, the
//! collector configuration and the compose file.

mod common;

use common::dashboard_exprs;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring")
}

fn yaml(file: &str) -> Yaml {
    let text = std::fs::read_to_string(dir().join(file)).expect("read");
    YamlLoader::load_from_str(&text)
        .expect("valid YAML")
        .into_iter()
        .next()
        .expect("a document")
}

/// Runs a tool and returns what it printed; fails the test if it fails.
fn run(tool: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool} must be installed (the README's test command installs it): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// Every rule of a rule file: (alert or record name, the rule).
fn rules(file: &str) -> Vec<(String, Yaml)> {
    let doc = yaml(file);
    let mut out = Vec::new();
    for group in doc["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("alert or record");
            out.push((name.to_owned(), rule.clone()));
        }
    }
    out
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let rules_dir = dir().join("rules");
    let checked = run(
        "promtool",
        &[
            "check",
            "rules",
            "reflexio-alerts.yml",
            "reflexio-recording.yml",
        ],
        &rules_dir,
    );
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = run(
        "promtool",
        &[
            "test",
            "rules",
            "reflexio-alerts.test.yml",
            "reflexio-recording.test.yml",
        ],
        &rules_dir.join("tests"),
    );
    assert_eq!(tested.matches("SUCCESS").count(), 2, "{tested}");

    // Every alert and every recording rule has unit tests.
    let tests = std::fs::read_to_string(rules_dir.join("tests/reflexio-alerts.test.yml"))
        .expect("read")
        + &std::fs::read_to_string(rules_dir.join("tests/reflexio-recording.test.yml"))
            .expect("read");
    for (name, _) in rules("rules/reflexio-alerts.yml") {
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "no unit test for {name}"
        );
    }
    for (name, _) in rules("rules/reflexio-recording.yml") {
        assert!(
            tests.contains(&format!("expr: {name}\n")),
            "no unit test for {name}"
        );
    }
}

#[test]
fn the_alerts_are_the_guides_with_its_mistakes_fixed() {
    let alerts: Vec<(String, Yaml)> = rules("rules/reflexio-alerts.yml");
    let find = |name: &str| {
        alerts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    // (alert, threshold in the expression, for, severity, what the description must say)
    let guide = [
        (
            "HighHallucinationRate",
            "> 0.005",
            Some("5m"),
            "critical",
            "0.5%",
        ),
        (
            "LowCitationCoverage",
            "< 0.95",
            Some("10m"),
            "warning",
            "95%",
        ),
        (
            "LowCoVeConfidence",
            "< 0.70",
            Some("10m"),
            "warning",
            "0.70",
        ),
        (
            "RetentionErrors",
            "increase(reflexio_retention_errors_total[1h])",
            None,
            "warning",
            "last hour",
        ),
        ("StaleProcessLocks", "> 0", Some("5m"), "warning", "stale"),
    ];
    for (name, threshold, for_, severity, says) in guide {
        let rule = find(name);
        let expr = rule["expr"].as_str().expect("expr");
        assert!(expr.contains(threshold), "{name}: {expr}");
        assert_eq!(rule["for"].as_str(), for_, "{name}");
        assert_eq!(
            rule["labels"]["severity"].as_str(),
            Some(severity),
            "{name}"
        );
        let description = rule["annotations"]["description"]
            .as_str()
            .expect("description");
        assert!(description.contains(says), "{name}: {description}");
    }
    // The guide said "below target of 98%" for a 0.95 threshold.
    let coverage = find("LowCitationCoverage");
    let text = coverage["annotations"]["description"]
        .as_str()
        .expect("description");
    assert!(text.contains("below the 95% alert threshold"), "{text}");
    // Rates and means need samples.
    for (name, guard) in [
        (
            "HighHallucinationRate",
            "reflexio_assessed_facts_24h >= 200",
        ),
        ("LowCitationCoverage", "reflexio_assessed_facts_24h >= 100"),
        (
            "LowCoVeConfidence",
            "reflexio_cove_verified_facts_24h >= 100",
        ),
    ] {
        assert!(
            find(name)["expr"].as_str().expect("expr").contains(guard),
            "{name}"
        );
    }
    for bridge in [
        "ReflexioBridgeDown",
        "ReflexioStoreNotWritable",
        "ReflexioOtlpExportFailing",
        "ReflexioLegacyReadFailing",
        "ReflexioLegacyTimestampErrors",
    ] {
        find(bridge);
    }
    // No delta() of a window, no rate() or increase() of a gauge, no quantile of a non-histogram.
    for file in ["rules/reflexio-alerts.yml", "rules/reflexio-recording.yml"] {
        for (name, rule) in rules(file) {
            let expr = rule["expr"].as_str().expect("expr");
            assert!(!expr.contains("delta("), "{name}: {expr}");
            for window in ["_24h[", "_7d[", "_24h{", "_7d{"] {
                assert!(
                    !(expr.contains("rate(") || expr.contains("increase("))
                        || !expr.contains(window),
                    "{name} applies rate/increase to a window gauge: {expr}"
                );
            }
            if expr.contains("histogram_quantile") {
                assert!(expr.contains("_bucket["), "{name}: {expr}");
            }
        }
    }
}

#[test]
fn fleet_rules_pool_instead_of_averaging_ratios() {
    for (name, rule) in rules("rules/reflexio-recording.yml") {
        let expr = rule["expr"].as_str().expect("expr");
        assert!(!expr.contains("avg("), "{name} averages: {expr}");
        assert!(name.starts_with("reflexio:"), "{name}");
        if expr.contains(" / ") {
            let (num, den) = expr.split_once(" / ").expect("ratio");
            assert!(num.trim_start().starts_with("sum("), "{name}: {expr}");
            assert!(den.trim_start().starts_with("(sum("), "{name}: {expr}");
        }
    }
}

#[test]
fn promtool_accepts_the_prometheus_configuration() {
    let docs = dir();
    run(
        "promtool",
        &["check", "config", "--syntax-only", "prometheus.yml"],
        &docs,
    );
    // A full check reads the token file and the rule files: lay them out as the compose file does.
    let work = tempfile::tempdir().expect("tempdir");
    let token = work.path().join("reflexio_token");
    std::fs::write(&token, "token\n").expect("token");
    let text = std::fs::read_to_string(docs.join("prometheus.yml")).expect("read");
    assert!(text.contains("credentials_file: /run/secrets/reflexio_token"));
    let text = text.replace("/run/secrets/reflexio_token", token.to_str().expect("path"));
    std::fs::write(work.path().join("prometheus.yml"), text).expect("write");
    std::fs::create_dir(work.path().join("rules")).expect("mkdir");
    for file in ["reflexio-alerts.yml", "reflexio-recording.yml"] {
        std::fs::copy(
            docs.join("rules").join(file),
            work.path().join("rules").join(file),
        )
        .expect("copy");
    }
    let checked = run(
        "promtool",
        &["check", "config", "prometheus.yml"],
        work.path(),
    );
    assert!(checked.contains("SUCCESS: 2 rule files found"), "{checked}");
    let config = yaml("prometheus.yml");
    let jobs = config["scrape_configs"].as_vec().expect("scrape_configs");
    let reflexio = jobs
        .iter()
        .find(|j| j["job_name"].as_str() == Some("reflexio"))
        .expect("the reflexio job");
    assert_eq!(
        reflexio["metrics_path"].as_str(),
        Some("/metrics/prometheus")
    );
    assert!(!config["alerting"]["alertmanagers"].is_badvalue());
}

#[test]
fn amtool_accepts_the_alertmanager_configuration_and_routes_by_severity() {
    let docs = dir();
    run("amtool", &["check-config", "alertmanager.yml"], &docs);
    for (severity, receiver) in [("critical", "slack-and-email"), ("warning", "slack")] {
        let routed = run(
            "amtool",
            &[
                "config",
                "routes",
                "test",
                "--config.file=alertmanager.yml",
                &format!("severity={severity}"),
                "alertname=HighHallucinationRate",
            ],
            &docs,
        );
        assert_eq!(
            routed.lines().next(),
            Some(receiver),
            "{severity}: {routed}"
        );
    }
    // Secrets come from files, never from the repository.
    let text = std::fs::read_to_string(docs.join("alertmanager.yml")).expect("read");
    for inline in ["api_url:", "auth_password:", "hooks.slack.com"] {
        assert!(
            !text.contains(inline),
            "alertmanager.yml holds a secret: {inline}"
        );
    }
    for file in ["slack_api_url_file:", "smtp_auth_password_file:"] {
        assert!(text.contains(file), "{file}");
    }
}

#[test]
fn the_dashboard_uses_the_current_model_and_the_sla_thresholds() {
    let text =
        std::fs::read_to_string(dir().join("grafana/dashboards/reflexio.json")).expect("read");
    let dashboard: Value = serde_json::from_str(&text).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let kinds: BTreeSet<&str> = panels.iter().filter_map(|p| p["type"].as_str()).collect();
    assert!(
        kinds.is_subset(&BTreeSet::from(["timeseries", "stat", "gauge", "row"])),
        "{kinds:?}"
    );
    assert!(
        panels.iter().all(|p| p.get("alert").is_none()),
        "legacy panel alerting"
    );
    assert!(!text.contains("\"graph\""), "legacy graph panel");
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, BTreeSet::from(["datasource", "job", "instance"]));
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            let expr = t["expr"].as_str().expect("expr");
            if expr.starts_with("reflexio_") && !expr.starts_with("reflexio:") {
                assert!(
                    expr.contains("$instance") && expr.contains("job=~\"$job\""),
                    "{}: {expr} ignores $job or $instance",
                    p["title"]
                );
            }
        }
    }
    // The guide's SLA table: thresholds where the colour changes.
    let steps = |title: &str| -> Vec<(String, Option<f64>)> {
        let panel = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| {
                (
                    s["color"].as_str().expect("color").to_owned(),
                    s["value"].as_f64(),
                )
            })
            .collect()
    };
    let sla = [
        (
            "Hallucination rate (24h)",
            vec![("green", None), ("red", Some(0.005))],
        ),
        (
            "Citation coverage (24h)",
            vec![("red", None), ("yellow", Some(0.95)), ("green", Some(0.98))],
        ),
        (
            "CoVe confidence (24h)",
            vec![("red", None), ("green", Some(0.70))],
        ),
        (
            "Retention errors (7d)",
            vec![("green", None), ("red", Some(1.0))],
        ),
        ("Stale locks", vec![("green", None), ("red", Some(1.0))]),
    ];
    for (title, expected) in sla {
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(c, v)| (c.to_owned(), v))
            .collect();
        assert_eq!(steps(title), expected, "{title}");
    }
    assert!(dashboard_exprs(&dashboard).len() >= 25);
}

#[test]
fn grafana_provisioning_loads_the_datasource_and_the_dashboard() {
    let ds = yaml("grafana/provisioning/datasources/prometheus.yml");
    let source = &ds["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
    let provider = &yaml("grafana/provisioning/dashboards/reflexio.yml")["providers"][0];
    let path = provider["options"]["path"].as_str().expect("path");
    let compose = yaml("docker-compose.monitoring.yml");
    let mounts: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        mounts.contains(&format!("./grafana/dashboards:{path}:ro").as_str()),
        "the dashboards are not mounted where the provider looks: {mounts:?}"
    );
    assert!(mounts.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro"));
}

#[test]
fn the_collector_configuration_is_complete() {
    let c = yaml("otel-collector.yaml");
    for protocol in ["grpc", "http"] {
        assert!(
            !c["receivers"]["otlp"]["protocols"][protocol].is_badvalue(),
            "{protocol}"
        );
    }
    let pipeline = &c["service"]["pipelines"]["metrics"];
    for (part, section) in [
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ] {
        for name in pipeline[part].as_vec().expect(part) {
            let name = name.as_str().expect("name");
            assert!(
                !c[section][name].is_badvalue(),
                "{part} {name} is not defined"
            );
        }
    }
    assert!(!c["exporters"]["prometheus"]["endpoint"].is_badvalue());
    // The current schema: the collector's own metrics through a pull reader on the port
    // Prometheus' otel-collector job scrapes (the old `address` key is rejected since 0.128),
    // and no `batch` processor (being removed).
    let telemetry = &c["service"]["telemetry"]["metrics"];
    assert!(telemetry["address"].is_badvalue(), "deprecated address key");
    let reader = &telemetry["readers"][0]["pull"]["exporter"]["prometheus"];
    assert_eq!(reader["host"].as_str(), Some("0.0.0.0"));
    assert_eq!(reader["port"].as_i64(), Some(8888));
    assert!(c["processors"]["batch"].is_badvalue());
    let compose = yaml("docker-compose.monitoring.yml");
    let image = compose["services"]["otel-collector"]["image"]
        .as_str()
        .expect("image");
    let minor: u32 = image
        .rsplit_once(":0.")
        .and_then(|(_, v)| v.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{image} is not a 0.x release"));
    assert!(minor >= 128, "{image} predates the readers schema");
}

#[test]
fn the_compose_file_is_well_formed_pinned_and_mounts_files_that_exist() {
    let docs = dir();
    let compose = yaml("docker-compose.monitoring.yml");
    let services = compose["services"].as_hash().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "alertmanager",
            "grafana",
            "otel-collector",
            "prometheus",
            "reflexio-bridge"
        ])
    );
    let declared_volumes = compose["volumes"].as_hash().expect("volumes");
    let declared_secrets = compose["secrets"].as_hash().expect("secrets");
    for (name, service) in services {
        let name = name.as_str().expect("name");
        let image = service["image"]
            .as_str()
            .expect("every service names its image");
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: {image} is not pinned"));
        assert!(
            tag != "latest" && !tag.is_empty(),
            "{name}: {image} is not pinned"
        );
        assert!(
            !service["healthcheck"]["test"].is_badvalue(),
            "{name} has no health check"
        );
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let source = spec.split(':').next().expect("source");
            if source.starts_with('.') {
                assert!(
                    docs.join(source).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    declared_volumes.contains_key(&Yaml::String(source.into())),
                    "{name}: {source}"
                );
            }
        }
        for secret in service["secrets"].as_vec().into_iter().flatten() {
            let secret = secret.as_str().expect("secret");
            assert!(
                declared_secrets.contains_key(&Yaml::String(secret.into())),
                "{name}: {secret}"
            );
        }
        if let Some(context) = service["build"]["context"].as_str() {
            let context = docs.join(context);
            let dockerfile = service["build"]["dockerfile"].as_str().expect("dockerfile");
            assert!(context.join(dockerfile).exists(), "{name}: no {dockerfile}");
            assert!(context.join("Cargo.toml").exists());
        }
    }
    // Secrets live in files the operator creates, which git ignores.
    let ignored = std::fs::read_to_string(docs.join("../../.gitignore")).expect("gitignore");
    assert!(ignored.lines().any(|l| l == "/docs/monitoring/secrets/"));
    for (_, secret) in declared_secrets {
        let file = secret["file"].as_str().expect("file");
        assert!(file.starts_with("./secrets/"), "{file}");
    }
    // Each configuration file is mounted where its server reads it.
    let mounts = |service: &str| -> Vec<String> {
        compose["services"][service]["volumes"]
            .as_vec()
            .expect("volumes")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        mounts("prometheus").contains(&"./prometheus.yml:/etc/prometheus/prometheus.yml:ro".into())
    );
    assert!(mounts("prometheus").contains(&"./rules:/etc/prometheus/rules:ro".into()));
    assert!(
        mounts("alertmanager")
            .contains(&"./alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro".into())
    );
    assert!(
        mounts("otel-collector")
            .contains(&"./otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro".into())
    );
}

#[test]
fn the_guide_covers_every_file() {
    let guide =
        std::fs::read_to_string(dir().join("../monitoring.md")).expect("docs/monitoring.md");
    for file in [
        "prometheus.yml",
        "reflexio-alerts.yml",
        "reflexio-recording.yml",
        "alertmanager.yml",
        "otel-collector.yaml",
        "docker-compose.monitoring.yml",
        "reflexio.json",
        "secrets/",
    ] {
        assert!(
            guide.contains(file),
            "docs/monitoring.md does not mention {file}"
        );
    }
    for section in [
        "Quick start",
        "Troubleshooting",
        "PromQL",
        "SLA",
        "federation",
        "remote write",
    ] {
        assert!(
            guide.to_lowercase().contains(&section.to_lowercase()),
            "no {section} section"
        );
    }
}
