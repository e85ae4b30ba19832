//! The monitoring stack end to end, with the real servers (Debian's Prometheus 2.42,
//! Alertmanager 0.25 and VictoriaMetrics 1.79) on free loopback ports.
//!
//! - Two bridges are scraped together, the documented rules are evaluated, a copy of the
//!   hallucination alert with a short `for` fires and Alertmanager delivers it to a webhook
//!   inside the test, and every expression of the dashboard and of the PromQL cookbook runs.
//! - Three bridges, and every way of carrying their series that the docs ship: a Prometheus
//!   scraping them with the shipped rules and remote-writing to VictoriaMetrics, a Prometheus
//!   agent writing to a central Prometheus, and two "datacenter" Prometheus servers federated
//!   by a global one. The fleet figures equal the pooled truth exactly on each.
//! - The shipped Alertmanager configuration pages once for a breach that the fleet alerts of a
//!   datacenter and of the global Prometheus both see.

mod common;

use common::{Bridge, Server, dashboard_exprs, eventually, fact, free_port, query, value};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

fn key(k: &str) -> Yaml {
    Yaml::String(k.into())
}

fn yaml(text: &str) -> Yaml {
    YamlLoader::load_from_str(text).expect("YAML").remove(0)
}

/// Sets `k` of the map `doc` to `value`.
fn set(doc: &mut Yaml, k: &str, value: Yaml) {
    doc.as_mut_hash().expect("a map").insert(key(k), value);
}

fn emit(doc: &Yaml) -> String {
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(doc).expect("emit");
    out
}

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring")
}

/// Alertmanager sending every alert to `webhook`, without clustering.
fn alertmanager(webhook: &str) -> Server {
    let config = format!(
        "route:\n  receiver: test\n  group_by: [alertname, instance]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    \
         webhook_configs:\n      - url: {webhook}\n"
    );
    Server::start("prometheus-alertmanager", move |port, dir| {
        let file = dir.join("alertmanager.yml");
        std::fs::write(&file, &config).expect("write");
        vec![
            format!("--config.file={}", file.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ]
    })
}

/// A rule file holding copies of shipped alerts (`file`, `alert`) that fire one second after
/// their condition holds, with `replace` applied to their expressions (shorter ranges).
fn fast_copies(dir: &Path, alerts: &[(&str, &str)], replace: &[(&str, &str)]) -> PathBuf {
    let mut copies = Vec::new();
    for (file, alert) in alerts {
        let text = std::fs::read_to_string(docs().join("rules").join(file)).expect("read");
        let doc = YamlLoader::load_from_str(&text).expect("YAML").remove(0);
        let rule = doc["groups"]
            .as_vec()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_vec().expect("rules"))
            .find(|r| r["alert"].as_str() == Some(alert))
            .unwrap_or_else(|| panic!("no alert {alert} in {file}"))
            .clone();
        let mut fast = rule.into_hash().expect("a rule is a map");
        fast.insert(key("for"), Yaml::String("1s".into()));
        let mut expr = fast[&key("expr")].as_str().expect("expr").to_owned();
        for (from, to) in replace {
            expr = expr.replace(from, to);
        }
        fast.insert(key("expr"), Yaml::String(expr));
        copies.push(Yaml::Hash(fast));
    }
    let mut doc = yaml("groups:\n  - name: short-for\n    rules: []\n");
    set(&mut doc["groups"][0], "rules", Yaml::Array(copies));
    let names: Vec<String> = alerts.iter().map(|(_, a)| a.to_lowercase()).collect();
    let file = dir.join(format!("fast-{}.yml", names.join("-")));
    std::fs::write(&file, emit(&doc)).expect("write");
    file
}

/// The documented alerts, plus a copy of HighHallucinationRate that fires after one second.
fn rule_files(dir: &Path) -> Vec<PathBuf> {
    vec![
        docs().join("rules/reflexio-recording.yml"),
        docs().join("rules/reflexio-alerts.yml"),
        fast_copies(
            dir,
            &[("reflexio-alerts.yml", "HighHallucinationRate")],
            &[],
        ),
    ]
}

/// Prometheus scraping `targets` every second and alerting to `alertmanager`.
fn prometheus(targets: &[&str], alertmanager: u16) -> Server {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let targets = targets.join(", ");
    Server::start("prometheus", move |port, dir| {
        let rules: Vec<String> = rule_files(dir)
            .iter()
            .map(|f| format!("  - {}\n", f.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{alertmanager}\"]\n\
             scrape_configs:\n  - job_name: reflexio\n    metrics_path: /metrics/prometheus\n    \
             static_configs:\n      - targets: [{targets}]\n",
            rules.concat()
        );
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("write");
        vec![
            format!("--config.file={}", file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]
    })
}

/// An HTTP server for Alertmanager's webhook: every POSTed body, as JSON.
fn webhook() -> (
    String,
    mpsc::Receiver<Value>,
    actix_web::dev::ServerHandle,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let (tx, rx) = mpsc::channel();
    let (ready, started) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let tx = web::Data::new(std::sync::Mutex::new(tx));
            let server = HttpServer::new(move || {
                App::new().app_data(tx.clone()).route(
                    "/alerts",
                    web::post().to(
                        |body: web::Json<Value>, tx: web::Data<std::sync::Mutex<mpsc::Sender<Value>>>| async move {
                            let _ = tx.lock().expect("lock").send(body.into_inner());
                            HttpResponse::Ok().finish()
                        },
                    ),
                )
            })
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")?;
            let port = server.addrs()[0].port();
            let server = server.run();
            let _ = ready.send((port, server.handle()));
            server.await
        })
    });
    let (port, handle) = started.recv().expect("webhook started");
    (
        format!("http://127.0.0.1:{port}/alerts"),
        rx,
        handle,
        thread,
    )
}

/// Grafana's variables, as the dashboard would fill them in.
fn grafana_expr(expr: &str) -> String {
    expr.replace("$instance", ".*")
        .replace("$job", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
}

/// The PromQL queries of docs/monitoring.md: the ```promql blocks, one query per paragraph.
fn cookbook() -> Vec<String> {
    let guide = std::fs::read_to_string(docs().join("../monitoring.md")).expect("read");
    let mut queries = Vec::new();
    for block in guide.split("```promql").skip(1) {
        let block = block.split("```").next().expect("closed block");
        let mut current = String::new();
        for line in block.lines().chain([""]) {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                if !current.is_empty() {
                    queries.push(std::mem::take(&mut current));
                }
            } else {
                current.push(' ');
                current.push_str(line);
            }
        }
    }
    queries
}

#[test]
fn prometheus_evaluates_the_rules_and_alertmanager_delivers_the_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = free_port(); // OTLP to a closed port, so the OTLP series exist
    let bridge = |name: &str| {
        Bridge::start(&[
            "--store",
            dir.path()
                .join(format!("{name}.db"))
                .to_str()
                .expect("path"),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{closed}"),
            "--otlp-interval",
            "1s",
        ])
    };
    let (a, b) = (bridge("a"), bridge("b"));
    let (hook, alerts, hook_handle, hook_thread) = webhook();
    let am = alertmanager(&hook);
    let prom = prometheus(&[&a.addr, &b.addr], am.port);

    // Both bridges scraped twice before any event: the counters' first samples are 0. The
    // histograms appear with their first observation, so one fact each goes first and is
    // scraped before the batches: the dashboard's rate() panels see a series' growth, not the
    // value it appears with. (The fleet rules, from the window gauges, need none of this.)
    assert!(eventually(Duration::from_secs(30), || {
        query(prom.port, r#"count_over_time(up{job="reflexio"}[1m]) >= 2"#)
            .is_ok_and(|r| r.len() == 2)
    }));
    for bridge in [&a, &b] {
        let first = Value::Array(vec![fact(false, 0.96)]).to_string();
        assert_eq!(bridge.post(first, "application/json", None).0, 202);
    }
    assert!(eventually(Duration::from_secs(30), || {
        query(
            prom.port,
            "count_over_time(reflexio_cove_confidence_count[1m]) >= 2",
        )
        .is_ok_and(|r| r.len() == 2)
    }));

    // a: 300 more facts, 30 hallucinated, a failed retention run. b: 700 more facts, none
    // hallucinated. Pooled over the fleet: 30 / 1002 ≈ 3%; a mean of the two ratios would say
    // 5%.
    let batch = |facts: usize, hallucinated: usize, extra: Vec<Value>| {
        let mut events: Vec<Value> = (0..facts).map(|i| fact(i < hallucinated, 0.96)).collect();
        events.extend(extra);
        Value::Array(events).to_string()
    };
    let failed_run = json!({"type":"retention","table":"facts","deleted_records":0,"error":"database is locked"});
    let lock = json!({"type":"lock_acquired","name":"daily_digest","holder":"worker-1"});
    assert_eq!(
        a.post(
            batch(300, 30, vec![failed_run, lock]),
            "application/json",
            None
        )
        .0,
        202
    );
    assert_eq!(
        b.post(
            batch(
                700,
                0,
                vec![json!({"type":"cove_config","enabled":true,"threshold":0.7})]
            ),
            "application/json",
            None
        )
        .0,
        202
    );

    // The short-for copy of HighHallucinationRate fires for a only, and so does
    // RetentionErrors; Alertmanager delivers both to the webhook.
    let mut delivered = Vec::new();
    let arrived = eventually(Duration::from_secs(60), || {
        while let Ok(message) = alerts.try_recv() {
            for alert in message["alerts"].as_array().into_iter().flatten() {
                if alert["status"] == "firing" {
                    delivered.push(alert["labels"].clone());
                }
            }
        }
        let has = |name: &str| delivered.iter().any(|l| l["alertname"] == name);
        has("HighHallucinationRate") && has("RetentionErrors")
    });
    assert!(arrived, "delivered: {delivered:?}");
    for labels in &delivered {
        assert_eq!(labels["instance"], a.addr.as_str(), "{labels}");
        assert_eq!(labels["service"], "reflexio");
    }
    let hallucination = delivered
        .iter()
        .find(|l| l["alertname"] == "HighHallucinationRate")
        .expect("delivered");
    assert_eq!(hallucination["severity"], "critical");
    let retention = delivered
        .iter()
        .find(|l| l["alertname"] == "RetentionErrors")
        .expect("delivered");
    assert_eq!(retention["table"], "facts");
    // The documented rule itself waits its 5 minutes.
    let pending = query(
        prom.port,
        r#"ALERTS{alertname="HighHallucinationRate", alertstate="pending"}"#,
    )
    .expect("query");
    assert_eq!(pending.len(), 1, "{pending:?}");

    // The fleet rules pool the two bridges' windows exactly: a mean of the two ratios would
    // say 5%.
    let pooled = 30.0 / 1002.0;
    let mut fleet = Vec::new();
    let exact = eventually(Duration::from_secs(30), || {
        fleet = [
            "reflexio:facts:increase24h",
            "reflexio:hallucination_rate:ratio24h",
        ]
        .iter()
        .map(|q| query(prom.port, q).ok().and_then(|r| r.first().map(value)))
        .collect();
        fleet == [Some(1002.0), Some(pooled)]
    });
    assert!(
        exact,
        "fleet facts and hallucination rate {fleet:?}, pooled 1002 and {pooled}"
    );
    let per_instance = query(prom.port, "reflexio_hallucination_rate_24h").expect("query");
    let mean_of_ratios: f64 =
        per_instance.iter().map(value).sum::<f64>() / per_instance.len() as f64;
    assert!(
        (mean_of_ratios - (30.0 / 301.0) / 2.0).abs() < 1e-12,
        "{mean_of_ratios}"
    );
    let coverage =
        value(&query(prom.port, "reflexio:citation_coverage:mean24h").expect("query")[0]);
    assert!((coverage - 0.96).abs() < 1e-9, "{coverage}");
    let stale = query(prom.port, "reflexio:stale_locks:sum").expect("query");
    assert_eq!(value(&stale[0]), 0.0);

    // Every expression of the dashboard returns data.
    let text =
        std::fs::read_to_string(docs().join("grafana/dashboards/reflexio.json")).expect("read");
    let dashboard: Value = serde_json::from_str(&text).expect("JSON");
    let mut exprs = dashboard_exprs(&dashboard);
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        exprs.push((
            "annotation".into(),
            annotation["expr"].as_str().expect("expr").into(),
        ));
    }
    for (panel, expr) in &exprs {
        let expr = grafana_expr(expr);
        // The quantile's rule group is evaluated once a minute, whatever the global interval.
        let ok = eventually(Duration::from_secs(70), || {
            query(prom.port, &expr).is_ok_and(|r| !r.is_empty())
        });
        assert!(
            ok,
            "panel {panel}: `{expr}` returns no data: {:?}",
            query(prom.port, &expr)
        );
    }

    // Every query of the guide's cookbook runs.
    let queries = cookbook();
    assert!(queries.len() >= 10, "{queries:?}");
    for q in &queries {
        assert!(
            query(prom.port, q).is_ok(),
            "`{q}`: {:?}",
            query(prom.port, q)
        );
    }

    drop(prom);
    drop(am);
    actix_web::rt::System::new().block_on(hook_handle.stop(false));
    hook_thread.join().expect("join").expect("webhook");
}

// ---------------------------------------------------------------------------------------------
// A fleet on every engine

/// What one bridge's windows hold: the pooled truth the fleet figures must equal.
#[derive(Debug, Default, Clone, Copy)]
struct Truth {
    facts: f64,
    assessed: f64,
    hallucinated: f64,
    atomicity_assessed: f64,
    atomicity_violations: f64,
    citation_assessed: f64,
    citation_sum: f64,
    cove_verified: f64,
    cove_confidence_sum: f64,
    cove_rounds_sum: f64,
    retention_operations: f64,
    retention_deleted: f64,
    retention_errors: f64,
    stale_locks: f64,
}

impl Truth {
    fn add(self, o: Truth) -> Truth {
        Truth {
            facts: self.facts + o.facts,
            assessed: self.assessed + o.assessed,
            hallucinated: self.hallucinated + o.hallucinated,
            atomicity_assessed: self.atomicity_assessed + o.atomicity_assessed,
            atomicity_violations: self.atomicity_violations + o.atomicity_violations,
            citation_assessed: self.citation_assessed + o.citation_assessed,
            citation_sum: self.citation_sum + o.citation_sum,
            cove_verified: self.cove_verified + o.cove_verified,
            cove_confidence_sum: self.cove_confidence_sum + o.cove_confidence_sum,
            cove_rounds_sum: self.cove_rounds_sum + o.cove_rounds_sum,
            retention_operations: self.retention_operations + o.retention_operations,
            retention_deleted: self.retention_deleted + o.retention_deleted,
            retention_errors: self.retention_errors + o.retention_errors,
            stale_locks: self.stale_locks + o.stale_locks,
        }
    }

    /// Every fleet figure of the recording rules: (rule, the same pooled from the window
    /// gauges, its true value). The fractions the test sends are sums of powers of two, so every sum
    /// is exact in floating point, in any order; the denominators are 2^a 5^b, so every ratio
    /// has a short decimal form, which VictoriaMetrics stores exactly (it keeps 12 significant
    /// digits).
    fn figures(&self) -> Vec<(&'static str, &'static str, f64)> {
        vec![
            (
                "reflexio:facts:increase24h",
                "sum(reflexio_facts_24h)",
                self.facts,
            ),
            (
                "reflexio:assessed_facts:increase24h",
                "sum(reflexio_assessed_facts_24h)",
                self.assessed,
            ),
            (
                "reflexio:hallucinated_facts:increase24h",
                "sum(reflexio_hallucinated_facts_24h)",
                self.hallucinated,
            ),
            (
                "reflexio:hallucination_rate:ratio24h",
                "sum(reflexio_hallucinated_facts_24h) / sum(reflexio_assessed_facts_24h)",
                self.hallucinated / self.assessed,
            ),
            (
                "reflexio:atomicity_assessed_facts:increase24h",
                "sum(reflexio_atomicity_assessed_facts_24h)",
                self.atomicity_assessed,
            ),
            (
                "reflexio:atomicity_violations:increase24h",
                "sum(reflexio_atomicity_violations_24h)",
                self.atomicity_violations,
            ),
            (
                "reflexio:atomicity_violation_rate:ratio24h",
                "sum(reflexio_atomicity_violations_24h) / sum(reflexio_atomicity_assessed_facts_24h)",
                self.atomicity_violations / self.atomicity_assessed,
            ),
            (
                "reflexio:citation_assessed_facts:increase24h",
                "sum(reflexio_citation_assessed_facts_24h)",
                self.citation_assessed,
            ),
            (
                "reflexio:citation_coverage_sum:increase24h",
                "sum(reflexio_citation_coverage_sum_24h)",
                self.citation_sum,
            ),
            (
                "reflexio:citation_coverage:mean24h",
                "sum(reflexio_citation_coverage_sum_24h) / sum(reflexio_citation_assessed_facts_24h)",
                self.citation_sum / self.citation_assessed,
            ),
            (
                "reflexio:cove_verified_facts:increase24h",
                "sum(reflexio_cove_verified_facts_24h)",
                self.cove_verified,
            ),
            (
                "reflexio:cove_confidence_sum:increase24h",
                "sum(reflexio_cove_confidence_sum_24h)",
                self.cove_confidence_sum,
            ),
            (
                "reflexio:cove_verification_rounds_sum:increase24h",
                "sum(reflexio_cove_verification_rounds_sum_24h)",
                self.cove_rounds_sum,
            ),
            (
                "reflexio:cove_confidence:mean24h",
                "sum(reflexio_cove_confidence_sum_24h) / sum(reflexio_cove_verified_facts_24h)",
                self.cove_confidence_sum / self.cove_verified,
            ),
            (
                "reflexio:cove_verification_rounds:mean24h",
                "sum(reflexio_cove_verification_rounds_sum_24h) / sum(reflexio_cove_verified_facts_24h)",
                self.cove_rounds_sum / self.cove_verified,
            ),
            (
                "reflexio:retention_operations:increase7d",
                "sum(reflexio_retention_operations_7d)",
                self.retention_operations,
            ),
            (
                "reflexio:retention_deleted_records:increase7d",
                "sum(reflexio_retention_deleted_records_7d)",
                self.retention_deleted,
            ),
            (
                "reflexio:retention_errors:increase7d",
                "sum(reflexio_retention_errors_7d)",
                self.retention_errors,
            ),
            (
                "reflexio:stale_locks:sum",
                "sum(reflexio_stale_locks)",
                self.stale_locks,
            ),
        ]
    }
}

/// Events for one bridge, with the truth they add to its windows.
#[derive(Default)]
struct Events {
    events: Vec<Value>,
    truth: Truth,
}

impl Events {
    /// `n` facts, the first `hallucinated` of them hallucinated and the next `non_atomic` not
    /// atomic, all with `coverage` and an optional CoVe result, at `age` before now (none: now).
    /// Facts older than 24 hours count in no 24h window.
    fn facts(
        &mut self,
        n: usize,
        hallucinated: usize,
        non_atomic: usize,
        coverage: f64,
        cove: Option<(f64, u32)>,
        age: Option<Duration>,
    ) -> &mut Self {
        for i in 0..n {
            let mut fact = json!({
                "type": "fact",
                "hallucinated": i < hallucinated,
                "atomic": !(hallucinated..hallucinated + non_atomic).contains(&i),
                "citation_coverage": coverage,
                "cove": cove.map(|(confidence, rounds)| json!({"confidence": confidence, "rounds": rounds})),
            });
            if let Some(age) = age {
                fact["time"] = json!(ago(age));
            }
            self.events.push(fact);
        }
        if age.is_none_or(|a| a < Duration::from_secs(86_400)) {
            let n = n as f64;
            let t = &mut self.truth;
            t.facts += n;
            t.assessed += n;
            t.hallucinated += hallucinated as f64;
            t.atomicity_assessed += n;
            t.atomicity_violations += non_atomic as f64;
            t.citation_assessed += n;
            t.citation_sum += n * coverage;
            if let Some((confidence, rounds)) = cove {
                t.cove_verified += n;
                t.cove_confidence_sum += n * confidence;
                t.cove_rounds_sum += n * f64::from(rounds);
            }
        }
        self
    }

    /// A retention run over `table`, failed or not, at `age` before now (none: now).
    fn retention(
        &mut self,
        table: &str,
        deleted: u32,
        failed: bool,
        age: Option<Duration>,
    ) -> &mut Self {
        let mut run = json!({
            "type": "retention",
            "table": table,
            "deleted_records": if failed { 0 } else { deleted },
            "error": failed.then_some("database is locked"),
        });
        if let Some(age) = age {
            run["time"] = json!(ago(age));
        }
        self.events.push(run);
        let t = &mut self.truth;
        t.retention_operations += 1.0;
        if failed {
            t.retention_errors += 1.0;
        } else {
            t.retention_deleted += f64::from(deleted);
        }
        self
    }

    /// A lock taken now; the bridges run with `--stale-lock-after 1s`, so it is soon stale.
    fn lock(&mut self, name: &str) -> &mut Self {
        self.events
            .push(json!({"type": "lock_acquired", "name": name, "holder": "worker-1"}));
        self.truth.stale_locks += 1.0;
        self
    }

    /// Posts the events to `bridge`; returns the truth they add.
    fn send(&mut self, bridge: &Bridge) -> Truth {
        let body = Value::Array(std::mem::take(&mut self.events)).to_string();
        let (status, answer) = bridge.post(body, "application/json", None);
        assert_eq!(status, 202, "{answer}");
        std::mem::take(&mut self.truth)
    }
}

/// RFC 3339 time `age` before now.
fn ago(age: Duration) -> String {
    let age = jiff::SignedDuration::try_from(age).expect("an age");
    jiff::Timestamp::now()
        .checked_sub(age)
        .expect("a time")
        .to_string()
}

const HOUR: Duration = Duration::from_secs(3600);

/// A shipped Prometheus configuration made runnable here: evaluated and scraped every second,
/// its rule files from docs/monitoring (plus `extra_rules`), no Alertmanager and no token.
fn configure(file: &str, extra_rules: &[PathBuf]) -> Yaml {
    let mut doc = yaml(&std::fs::read_to_string(docs().join(file)).expect("read"));
    let global = &mut doc["global"];
    set(global, "scrape_interval", Yaml::String("1s".into()));
    set(global, "evaluation_interval", Yaml::String("1s".into()));
    let mut rules: Vec<Yaml> = doc["rule_files"]
        .as_vec()
        .into_iter()
        .flatten()
        .map(|f| {
            let f = docs().join(f.as_str().expect("a path"));
            assert!(f.exists(), "{} does not exist", f.display());
            Yaml::String(f.display().to_string())
        })
        .collect();
    rules.extend(
        extra_rules
            .iter()
            .map(|f| Yaml::String(f.display().to_string())),
    );
    let map = doc.as_mut_hash().expect("a map");
    if !rules.is_empty() {
        map.insert(key("rule_files"), Yaml::Array(rules));
    }
    map.remove(&key("alerting"));
    doc
}

/// The shipped `reflexio` job of `doc` scraping `targets` (address, instance label if not the
/// address), without the token; every other job removed.
fn scrape_bridges(doc: &mut Yaml, targets: &[(&str, Option<&str>)]) {
    let mut job = doc["scrape_configs"]
        .as_vec()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some("reflexio"))
        .expect("the reflexio job")
        .clone();
    job.as_mut_hash()
        .expect("a job")
        .remove(&key("authorization"));
    let statics = targets
        .iter()
        .map(|(address, instance)| {
            let mut s = yaml(&format!("targets: [\"{address}\"]"));
            if let Some(instance) = instance {
                set(&mut s, "labels", yaml(&format!("instance: \"{instance}\"")));
            }
            s
        })
        .collect();
    set(&mut job, "static_configs", Yaml::Array(statics));
    set(doc, "scrape_configs", Yaml::Array(vec![job]));
}

/// Prometheus (or, with `agent`, a Prometheus agent) with the configuration `doc`.
fn prometheus_with(doc: &Yaml, flags: &[&str]) -> Server {
    let text = emit(doc);
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    let agent = flags.iter().any(|f| f == "--enable-feature=agent");
    Server::start("prometheus", move |port, dir| {
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, &text).expect("write");
        let storage = if agent {
            "--storage.agent.path"
        } else {
            "--storage.tsdb.path"
        };
        let mut args = vec![
            format!("--config.file={}", file.display()),
            format!("{storage}={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        args.extend(flags.iter().cloned());
        args
    })
}

/// The remote-write example of the shipped prometheus.yml (a commented block), with `url`.
fn shipped_remote_write(url: &str, token: &Path) -> Yaml {
    let text = std::fs::read_to_string(docs().join("prometheus.yml")).expect("read");
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "# remote_write:")
        .map_while(|l| l.strip_prefix("# "))
        .collect();
    assert!(
        !block.is_empty(),
        "prometheus.yml has no remote_write example"
    );
    let mut doc = yaml(&block.join("\n"));
    let write = &mut doc["remote_write"][0];
    let shipped = write["url"].as_str().expect("url").to_owned();
    let path = shipped.splitn(4, '/').nth(3).expect("a path");
    set(write, "url", Yaml::String(format!("{url}/{path}")));
    set(
        &mut write["authorization"],
        "credentials_file",
        Yaml::String(token.display().to_string()),
    );
    doc["remote_write"].clone()
}

/// The first sample of an instant query, if any.
fn first(port: u16, expr: &str) -> Option<f64> {
    query(port, expr).ok()?.first().map(value)
}

/// Waits (at most `within`) until every figure of `truth` is exact on the engine at `port`:
/// the recording rules' outputs (`recorded`, with `selector` added), or the same pooled from
/// the window gauges. Returns the figures that are not, described.
fn check_figures(
    engine: &str,
    port: u16,
    truth: &Truth,
    recorded: Option<&str>,
    pooled: bool,
    within: Duration,
) -> Vec<String> {
    let wanted: Vec<(String, f64)> = truth
        .figures()
        .into_iter()
        .flat_map(|(rule, sum, value)| {
            let mut queries = Vec::new();
            if let Some(selector) = recorded {
                queries.push((format!("{rule}{selector}"), value));
            }
            if pooled {
                queries.push((sum.to_owned(), value));
            }
            queries
        })
        .collect();
    let mut got = Vec::new();
    let exact = eventually(within, || {
        got = wanted.iter().map(|(q, _)| first(port, q)).collect();
        got.iter().zip(&wanted).all(|(g, (_, v))| *g == Some(*v))
    });
    if exact {
        return Vec::new();
    }
    got.iter()
        .zip(&wanted)
        .filter(|(g, (_, v))| **g != Some(*v))
        .map(|(g, (q, v))| format!("{engine}: `{q}` = {g:?}, truth {v}"))
        .collect()
}

/// `pooled` (sums of window gauges, or a ratio of two) restricted to the datacenter `dc` and
/// kept apart by it: `sum(g)` becomes `sum by (dc) (g{dc="dc"})`.
fn per_dc(pooled: &str, dc: &str) -> String {
    pooled
        .split(" / ")
        .map(|part| {
            let gauge = part
                .strip_prefix("sum(")
                .and_then(|g| g.strip_suffix(')'))
                .unwrap_or_else(|| panic!("not a sum of one gauge: {part}"));
            format!(r#"sum by (dc) ({gauge}{{dc="{dc}"}})"#)
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

#[test]
fn fleet_figures_are_exact_on_every_engine_and_push_and_federation_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = |name: &str| {
        Bridge::start(&[
            "--store",
            dir.path()
                .join(format!("{name}.db"))
                .to_str()
                .expect("path"),
            "--stale-lock-after",
            "1s",
        ])
    };
    let (a, b, c) = (bridge("a"), bridge("b"), bridge("c"));

    // Before any Prometheus runs: events no scrape will ever see arrive. Each bridge stays
    // under the 200-fact guard of the per-instance alerts; c has no CoVe result yet (its
    // histograms do not exist), b has a failed run of a declared table.
    let (mut ea, mut eb, mut ec) = (Events::default(), Events::default(), Events::default());
    let mut truth_a = ea
        .facts(60, 3, 2, 0.75, Some((0.875, 2)), None)
        .retention("facts", 5, false, None)
        .send(&a);
    let mut truth_b = eb
        .facts(60, 2, 0, 1.0, Some((0.625, 1)), None)
        .retention("digests", 0, true, None)
        .send(&b);
    let mut truth_c = ec.facts(60, 3, 0, 0.625, None, None).send(&c);

    // The engines. The main Prometheus runs the shipped prometheus.yml (its rule files, its
    // dc) and its remote-write example towards VictoriaMetrics; copies of the fleet alert and
    // of the no-data alert fire one second after their condition holds.
    let rules = tempfile::tempdir().expect("tempdir");
    let fleet_fast = fast_copies(
        rules.path(),
        &[
            ("reflexio-fleet-alerts.yml", "FleetHighHallucinationRate"),
            ("reflexio-alerts.yml", "HighHallucinationRate"),
        ],
        &[],
    );
    let push_fast = fast_copies(
        rules.path(),
        &[("reflexio-push.yml", "ReflexioNoData")],
        &[("[2m]", "[5s]")],
    );
    let token = rules.path().join("token");
    std::fs::write(&token, "token\n").expect("token");
    let all = [
        (a.addr.as_str(), None),
        (b.addr.as_str(), None),
        (c.addr.as_str(), None),
    ];
    let vm = Server::start_ready("victoria-metrics", "/health", |port, dir| {
        vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}", dir.join("data").display()),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=ERROR".into(),
        ]
    });
    let mut main = configure("prometheus.yml", std::slice::from_ref(&fleet_fast));
    scrape_bridges(&mut main, &all);
    let vm_url = format!("http://127.0.0.1:{}", vm.port);
    set(
        &mut main,
        "remote_write",
        shipped_remote_write(&vm_url, &token),
    );
    let main = prometheus_with(&main, &[]);

    // Push: a central Prometheus fed by an agent.
    let central = configure("prometheus-central.yml", &[push_fast]);
    let mut central = central;
    set(&mut central, "scrape_configs", Yaml::Array(Vec::new()));
    let central = prometheus_with(&central, &["--web.enable-remote-write-receiver"]);
    let mut agent = configure("prometheus-agent.yml", &[]);
    scrape_bridges(&mut agent, &all);
    let shipped = agent["remote_write"][0]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let url = shipped.replace(
        "prometheus-central:9090",
        &format!("127.0.0.1:{}", central.port),
    );
    assert_ne!(
        url, shipped,
        "the agent does not write to prometheus-central:9090"
    );
    set(&mut agent["remote_write"][0], "url", Yaml::String(url));
    let agent = prometheus_with(&agent, &["--enable-feature=agent"]);

    // Federation: two datacenters with the shipped external_labels, the same bridge name in
    // both (a in dc1, c in dc2), and a global Prometheus over them.
    let shipped_dc = yaml(&std::fs::read_to_string(docs().join("prometheus.yml")).expect("read"));
    assert!(
        !shipped_dc["global"]["external_labels"]["dc"].is_badvalue(),
        "prometheus.yml names no dc in external_labels"
    );
    let datacenter = |name: &str, targets: &[(&str, Option<&str>)]| {
        let mut doc = configure("prometheus.yml", &[]);
        set(
            &mut doc["global"]["external_labels"],
            "dc",
            Yaml::String(name.into()),
        );
        scrape_bridges(&mut doc, targets);
        prometheus_with(&doc, &[])
    };
    let same = "reflexio-bridge:8000";
    let dc1 = datacenter(
        "dc1",
        &[(a.addr.as_str(), Some(same)), (b.addr.as_str(), None)],
    );
    let dc2 = datacenter("dc2", &[(c.addr.as_str(), Some(same))]);
    let mut global = configure("prometheus-global.yml", &[]);
    let mut federate = global["scrape_configs"]
        .as_vec()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["metrics_path"].as_str() == Some("/federate"))
        .expect("the federation job")
        .clone();
    set(
        &mut federate,
        "static_configs",
        yaml(&format!(
            "- targets: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
            dc1.port, dc2.port
        )),
    );
    set(&mut global, "scrape_configs", Yaml::Array(vec![federate]));
    let global = prometheus_with(&global, &[]);

    // Every bridge scraped at least twice everywhere before the rest of the events.
    for (name, port, targets) in [
        ("main", main.port, 3),
        ("central", central.port, 3),
        ("dc1", dc1.port, 2),
        ("dc2", dc2.port, 1),
    ] {
        let scraped = eventually(Duration::from_secs(30), || {
            query(port, r#"count_over_time(up{job="reflexio"}[1m]) >= 2"#)
                .is_ok_and(|r| r.len() == targets)
        });
        assert!(scraped, "{name} did not scrape the bridges");
    }

    // After the first scrapes: a backfills facts of 3 hours ago (they count) and of 2 days ago
    // (they do not), and a retention run of 2 days ago; b records more facts (10 without a CoVe result); c gets its first
    // CoVe results (its histograms' first observations) and the first run, failed, of a table
    // the bridge did not know. a and b each take a lock, stale a second later.
    truth_a = truth_a.add(
        ea.facts(40, 10, 1, 0.5, Some((0.5, 3)), Some(3 * HOUR))
            .facts(30, 30, 30, 0.25, Some((0.25, 5)), Some(48 * HOUR))
            .retention("transcriptions", 7, false, Some(48 * HOUR))
            .lock("daily_digest")
            .send(&a),
    );
    truth_b = truth_b.add(
        eb.facts(60, 1, 3, 0.875, Some((0.75, 2)), None)
            .facts(10, 0, 0, 0.875, None, None)
            .lock("compaction")
            .send(&b),
    );
    truth_c = truth_c.add(
        ec.facts(30, 2, 0, 0.75, Some((0.25, 4)), None)
            .retention("audio_cache", 0, true, None)
            .send(&c),
    );
    let fleet = truth_a.add(truth_b).add(truth_c);
    // Each bridge under the guard of 200, the fleet above it, at 21 / 320.
    for t in [&truth_a, &truth_b, &truth_c] {
        assert!(t.assessed < 200.0, "{t:?}");
    }
    assert!(fleet.assessed >= 200.0 && fleet.hallucinated / fleet.assessed > 0.005);

    // The figures on every engine, as soft checks: all are gathered, then asserted together.
    let within = Duration::from_secs(30);
    let mut wrong = Vec::new();
    wrong.extend(check_figures(
        "prometheus",
        main.port,
        &fleet,
        Some(""),
        true,
        within,
    ));
    wrong.extend(check_figures(
        "victoriametrics",
        vm.port,
        &fleet,
        Some(r#"{dc="dc1"}"#),
        true,
        within,
    ));
    wrong.extend(check_figures(
        "central",
        central.port,
        &fleet,
        Some(""),
        false,
        within,
    ));
    wrong.extend(check_figures(
        "global",
        global.port,
        &fleet,
        Some(""),
        false,
        within,
    ));
    for (dc, truth) in [("dc1", truth_a.add(truth_b)), ("dc2", truth_c)] {
        for (_, pooled, value) in truth.figures() {
            let q = per_dc(pooled, dc);
            let got = first(global.port, &q);
            if got != Some(value) {
                wrong.push(format!("global, {dc}: `{q}` = {got:?}, truth {value}"));
            }
        }
    }

    // The datacenters stay apart: the same bridge name is two series, one per dc, each with
    // its own bridge's value.
    let same_name = query(
        global.port,
        &format!(r#"reflexio_facts_24h{{instance="{same}"}}"#),
    )
    .expect("query");
    let mut by_dc: Vec<(String, f64)> = same_name
        .iter()
        .map(|s| {
            (
                s["metric"]["dc"].as_str().unwrap_or("").to_owned(),
                value(s),
            )
        })
        .collect();
    by_dc.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        by_dc,
        [
            ("dc1".to_owned(), truth_a.facts),
            ("dc2".to_owned(), truth_c.facts)
        ],
        "{same_name:?}"
    );

    // A new table's first failed run alerts (the series appeared with it), on c only; b's
    // failure before the first scrape is not new to anyone.
    let mut retention = Vec::new();
    let alerted = eventually(Duration::from_secs(20), || {
        retention = query(
            main.port,
            r#"ALERTS{alertname="RetentionErrors", alertstate="firing"}"#,
        )
        .unwrap_or_default();
        retention.len() == 1
    });
    assert!(alerted, "{retention:?}");
    assert_eq!(retention[0]["metric"]["table"], "audio_cache");
    assert_eq!(retention[0]["metric"]["instance"], c.addr.as_str());

    // The fleet alert fires for the three small bridges; no per-instance alert even starts.
    let fired = eventually(Duration::from_secs(20), || {
        query(
            main.port,
            r#"ALERTS{alertname="FleetHighHallucinationRate", alertstate="firing"}"#,
        )
        .is_ok_and(|r| r.len() == 1)
    });
    if !fired {
        wrong.push(
            "prometheus: FleetHighHallucinationRate did not fire for 21 hallucinated of 320".into(),
        );
    }
    let instance = query(main.port, r#"ALERTS{alertname="HighHallucinationRate"}"#).expect("query");
    assert!(instance.is_empty(), "{instance:?}");

    // The agent stops (as if killed): nothing says up = 0, but the no-data alert fires for
    // each bridge it scraped.
    drop(agent);
    let mut no_data = Vec::new();
    let fired = eventually(Duration::from_secs(30), || {
        no_data = query(
            central.port,
            r#"ALERTS{alertname="ReflexioNoData", alertstate="firing", instance!=""}"#,
        )
        .unwrap_or_default();
        no_data.len() == 3
    });
    assert!(fired, "{no_data:?}");
    for alert in &no_data {
        assert_eq!(alert["metric"]["dc"], "dc1", "{alert}");
    }
    let instances: std::collections::BTreeSet<&str> = no_data
        .iter()
        .filter_map(|a| a["metric"]["instance"].as_str())
        .collect();
    assert_eq!(
        instances,
        [a.addr.as_str(), b.addr.as_str(), c.addr.as_str()].into()
    );
    let up = query(central.port, r#"up{job="reflexio"} == 0"#).expect("query");
    assert!(up.is_empty(), "{up:?}");

    assert!(wrong.is_empty(), "not exact:\n{}", wrong.join("\n"));
    for server in [&main, &central, &dc1, &dc2, &global] {
        let log = server.log();
        assert!(!log.contains("level=error"), "{log}");
    }
}

/// The labels of a Reflexio hallucination-rate alert of `scope` (`fleet` or `instance`) from
/// the Prometheus of `dc`.
fn hallucination_alert(scope: &str, dc: &str, instance: Option<&str>) -> Value {
    let mut labels = json!({
        "alertname": if scope == "fleet" { "FleetHighHallucinationRate" } else { "HighHallucinationRate" },
        "service": "reflexio",
        "severity": "critical",
        "slo": "hallucination_rate",
        "scope": scope,
        "dc": dc,
    });
    if let Some(instance) = instance {
        labels["instance"] = json!(instance);
    }
    json!({ "labels": labels })
}

#[test]
fn the_shipped_alertmanager_pages_once_for_a_breach_seen_in_a_datacenter_and_globally() {
    let shipped = docs().join("alertmanager.yml");
    let am = Server::start("prometheus-alertmanager", move |port, dir| {
        vec![
            format!("--config.file={}", shipped.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ]
    });
    let http = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{}/api/v2/alerts", am.port);
    let post = |alerts: Value| {
        let status = http.post(&url).json(&alerts).send().expect("POST").status();
        assert_eq!(status, 200);
    };
    // (alertname, dc, instance) -> state, `active` or `suppressed`.
    let states = || -> Vec<(String, String, String, String)> {
        let alerts: Vec<Value> = http
            .get(&url)
            .send()
            .and_then(|r| r.json())
            .expect("alerts");
        let mut out: Vec<_> = alerts
            .iter()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
                let state = a["status"]["state"].as_str().unwrap_or("").to_owned();
                (label("alertname"), label("dc"), label("instance"), state)
            })
            .collect();
        out.sort();
        out
    };
    let row = |name: &str, dc: &str, instance: &str, state: &str| {
        (name.into(), dc.into(), instance.into(), state.into())
    };

    // Only the pooled figures breach: the global fleet alert pages; a bridge's own alert in
    // another datacenter is not its business.
    post(json!([
        hallucination_alert("fleet", "global", None),
        hallucination_alert("instance", "dc2", Some("c:8000")),
    ]));
    let mut seen = Vec::new();
    let expected = vec![
        row("FleetHighHallucinationRate", "global", "", "active"),
        row("HighHallucinationRate", "dc2", "c:8000", "active"),
    ];
    let settled = eventually(Duration::from_secs(15), || {
        seen = states();
        seen == expected
    });
    assert!(settled, "{seen:?}\n{}", am.log());

    // dc1 breaches as a fleet: its fleet alert pages, naming dc1; the global one and dc1's
    // per-instance one are held back.
    post(json!([
        hallucination_alert("fleet", "dc1", None),
        hallucination_alert("instance", "dc1", Some("a:8000")),
    ]));
    let expected = vec![
        row("FleetHighHallucinationRate", "dc1", "", "active"),
        row("FleetHighHallucinationRate", "global", "", "suppressed"),
        row("HighHallucinationRate", "dc1", "a:8000", "suppressed"),
        row("HighHallucinationRate", "dc2", "c:8000", "active"),
    ];
    let settled = eventually(Duration::from_secs(15), || {
        seen = states();
        seen == expected
    });
    assert!(settled, "{seen:?}\n{}", am.log());
}
