//! The monitoring stack end to end, with the real servers (Debian's Prometheus 2.42 and
//! Alertmanager 0.25) on free loopback ports: two bridges are scraped together, the
//! documented rules are evaluated, a copy of the hallucination alert with a short `for` fires
//! and Alertmanager delivers it to a webhook inside the test, and every expression of the
//! dashboard and of the PromQL cookbook runs.

mod common;

use common::{Bridge, dashboard_exprs, eventually, fact, free_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring")
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `program` with `args(port, dir)`; waits until `GET /-/ready` answers 200.
    fn start(program: &str, args: impl Fn(u16, &Path) -> Vec<String>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new(program)
            .args(args(port, dir.path()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} must be installed (the README's test command installs it): {e}")
            });
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let url = format!("http://127.0.0.1:{port}/-/ready");
        let ready = eventually(Duration::from_secs(30), || {
            reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success())
        });
        let log = std::fs::read_to_string(server._dir.path().join("log")).unwrap_or_default();
        assert!(ready, "{program} did not start:\n{log}");
        server
    }
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

/// The documented alerts, plus a copy of HighHallucinationRate that fires after one second.
fn rule_files(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(docs().join("rules/reflexio-alerts.yml")).expect("read");
    let doc = YamlLoader::load_from_str(&text).expect("YAML").remove(0);
    let rule = doc["groups"][0]["rules"]
        .as_vec()
        .expect("rules")
        .iter()
        .find(|r| r["alert"].as_str() == Some("HighHallucinationRate"))
        .expect("HighHallucinationRate")
        .clone();
    let mut fast = rule.into_hash().expect("a rule is a map");
    fast.insert(Yaml::String("for".into()), Yaml::String("1s".into()));
    let mut copy = yaml_rust2::yaml::Hash::new();
    let mut group = yaml_rust2::yaml::Hash::new();
    group.insert(
        Yaml::String("name".into()),
        Yaml::String("short-for".into()),
    );
    group.insert(
        Yaml::String("rules".into()),
        Yaml::Array(vec![Yaml::Hash(fast)]),
    );
    copy.insert(
        Yaml::String("groups".into()),
        Yaml::Array(vec![Yaml::Hash(group)]),
    );
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&Yaml::Hash(copy))
        .expect("emit");
    let fast_file = dir.join("fast.yml");
    std::fs::write(&fast_file, out).expect("write");
    vec![
        docs().join("rules/reflexio-recording.yml"),
        docs().join("rules/reflexio-alerts.yml"),
        fast_file,
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

/// An instant query: the result vector, or the error Prometheus gives.
fn query(prometheus: u16, expr: &str) -> Result<Vec<Value>, String> {
    let response: Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .and_then(|r| r.json())
        .map_err(|e| e.to_string())?;
    if response["status"] != "success" {
        return Err(response.to_string());
    }
    Ok(response["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a numeric sample")
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
    // scraped before the batches: increase() sees a series' growth, not the value it appears
    // with.
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

    // The fleet rule pools the two bridges. increase() extrapolates each bridge's counters to
    // the end of the range by up to a scrape interval, so allow for that: a few percent, far
    // from the 5% a mean of the ratios would give.
    let pooled = 30.0 / 1002.0;
    let mut fleet = f64::NAN;
    let close = eventually(Duration::from_secs(40), || {
        if let Ok(r) = query(prom.port, "reflexio:hallucination_rate:ratio24h")
            && let Some(s) = r.first()
        {
            fleet = value(s);
        }
        (fleet - pooled).abs() < 0.0015
    });
    assert!(close, "fleet hallucination rate {fleet}, pooled {pooled}");
    let per_instance = query(prom.port, "reflexio_hallucination_rate_24h").expect("query");
    let mean_of_ratios: f64 =
        per_instance.iter().map(value).sum::<f64>() / per_instance.len() as f64;
    assert!(
        (mean_of_ratios - (30.0 / 301.0) / 2.0).abs() < 1e-12,
        "{mean_of_ratios}"
    );
    // The extrapolation shrinks as the series grow.
    let mut facts = f64::NAN;
    let close = eventually(Duration::from_secs(60), || {
        if let Ok(r) = query(prom.port, "reflexio:facts:increase24h")
            && let Some(s) = r.first()
        {
            facts = value(s);
        }
        (facts - 1002.0).abs() < 0.03 * 1002.0
    });
    assert!(close, "fleet facts {facts}, recorded 1002");
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
        let ok = eventually(Duration::from_secs(10), || {
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
