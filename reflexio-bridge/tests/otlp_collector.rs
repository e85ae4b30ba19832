//! Two bridges behind a real OpenTelemetry collector, rotel (`pip install rotel`, which
//! `scripts/test` does into `target/venv`): one pushes http/protobuf, the other gRPC, to its
//! receivers; rotel forwards over OTLP/gRPC with gzip and TLS (a CA and certificates generated
//! here, the receiver asking for a client certificate) to a receiver decoding with the official
//! `opentelemetry-proto` types. Every contract metric of both bridges arrives, the two stay
//! apart by `service.instance.id`, and a restarted bridge keeps its id.

mod common;

use common::otlp::{Certs, Export, Received, Receiver, full_batch, text};
use common::{Bridge, free_port};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The rotel collector binary: `$ROTEL_AGENT`, else the one `scripts/test` installs into
/// `target/venv`.
fn rotel_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("ROTEL_AGENT") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|pythons| {
        pythons
            .filter_map(Result::ok)
            .map(|p| p.path().join("site-packages/rotel/rotel-agent"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "rotel-agent not found under {}: run scripts/test, which installs it with \
             `pip install rotel` into target/venv (or set ROTEL_AGENT to the binary)",
            venv.display()
        )
    })
}

/// A running rotel; killed when dropped.
struct Rotel {
    child: Child,
    grpc: u16,
    http: u16,
}

impl Rotel {
    /// Receives OTLP on two free ports and forwards to `https://localhost:{port}` over gRPC,
    /// gzip-compressed. rotel (0.0.1a15 and earlier) refuses to start with any of its TLS
    /// client settings ("Either both or neither of cert and key must be provided", even for a
    /// CA alone), so it connects over TLS without verifying the receiver's certificate; the
    /// bridge's own verification, CA and client certificate are tested in `otlp.rs`.
    fn start(dir: &Path, port: u16) -> Rotel {
        let (grpc, http) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("rotel.log")).expect("log file");
        let child = Command::new(rotel_agent())
            .args(["start", "--otlp-grpc-endpoint"])
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http}"))
            .args(["--exporter", "otlp", "--otlp-exporter-endpoint"])
            .arg(format!("https://localhost:{port}"))
            .args(["--otlp-exporter-protocol", "grpc"])
            .args(["--otlp-exporter-compression", "gzip"])
            .arg("--otlp-exporter-tls-skip-verify")
            .args(["--batch-timeout", "100ms"])
            .args([
                "--otlp-receiver-traces-disabled",
                "--otlp-receiver-logs-disabled",
            ])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start rotel-agent");
        let mut rotel = Rotel { child, grpc, http };
        let deadline = Instant::now() + Duration::from_secs(20);
        while [grpc, http]
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            if let Ok(Some(status)) = rotel.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("rotel.log")).unwrap_or_default();
                panic!("rotel-agent exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "rotel-agent did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        rotel
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What arrived, by `service.instance.id`.
#[derive(Default)]
struct ByInstance {
    instances: BTreeMap<String, Received>,
    exports: usize,
    gzip: usize,
}

impl ByInstance {
    fn take(&mut self, export: Export) {
        self.exports += 1;
        self.gzip += usize::from(export.gzip);
        for rm in export.request.resource_metrics {
            let id = rm
                .resource
                .as_ref()
                .and_then(|r| {
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == "service.instance.id")
                })
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            self.instances.entry(id).or_default().take_resource(rm);
        }
    }

    /// Takes pushes until every one of `ids` is complete or 30 seconds pass.
    fn collect(&mut self, rx: &mpsc::Receiver<Export>, ids: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && !ids
                .iter()
                .all(|id| self.instances.get(*id).is_some_and(Received::complete))
        {
            if let Ok(export) = rx.recv_timeout(Duration::from_millis(200)) {
                self.take(export);
            }
        }
    }
}

/// The `service.instance.id` a bridge logged at start.
fn logged_instance_id(bridge: &Bridge) -> String {
    let log = bridge.log_text();
    log.lines()
        .find(|l| l.contains("OTLP resource"))
        .and_then(|l| l.split("service.instance.id=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no OTLP resource line: {log}"))
        .to_owned()
}

#[test]
fn two_bridges_stay_apart_through_a_real_collector_and_keep_their_ids_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut certs = Certs::generate(dir.path(), "collector");
    certs.client_auth = false;
    let receiver = Receiver::grpc(Some(&certs), 0);
    let rotel = Rotel::start(dir.path(), receiver.port);

    let start = |protocol: &str, port: u16, store: &Path| {
        let bridge = Bridge::start(&[
            "--store",
            store.to_str().expect("path"),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-protocol",
            protocol,
            "--otlp-interval",
            "300ms",
        ]);
        let (status, body) = bridge.post(full_batch(), "application/json", None);
        assert_eq!(status, 202, "{body}");
        bridge
    };
    let http_store = dir.path().join("http.db");
    let grpc_store = dir.path().join("grpc.db");
    let http_bridge = start("http/protobuf", rotel.http, &http_store);
    let grpc_bridge = start("grpc", rotel.grpc, &grpc_store);
    let http_id = logged_instance_id(&http_bridge);
    let grpc_id = logged_instance_id(&grpc_bridge);
    assert_ne!(http_id, grpc_id, "two bridges, one service.instance.id");

    let mut got = ByInstance::default();
    got.collect(&receiver.rx, &[&http_id, &grpc_id]);
    for (who, id) in [("http/protobuf", &http_id), ("grpc", &grpc_id)] {
        let received = got
            .instances
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{who}: nothing from {id}: {:?}", got.instances.keys()));
        received.assert_complete(who);
    }
    assert_eq!(
        got.instances.keys().collect::<Vec<_>>(),
        {
            let mut ids = vec![&http_id, &grpc_id];
            ids.sort();
            ids
        },
        "resources other than the two bridges'"
    );
    assert!(got.exports >= 1);
    assert_eq!(
        got.gzip, got.exports,
        "the collector did not forward with gzip"
    );

    // A restarted bridge keeps its id, and goes on from its store.
    assert!(http_bridge.terminate().success());
    let restarted = Bridge::start(&[
        "--store",
        http_store.to_str().expect("path"),
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{}", rotel.http),
        "--otlp-interval",
        "300ms",
    ]);
    assert_eq!(logged_instance_id(&restarted), http_id);
    while receiver.rx.try_recv().is_ok() {}
    let mut after = ByInstance::default();
    after.collect(&receiver.rx, &[&http_id]);
    let received = after
        .instances
        .get(http_id.as_str())
        .unwrap_or_else(|| panic!("nothing from the restarted bridge"));
    received.assert_complete("restarted");
    drop(grpc_bridge);
    drop(restarted);
    drop(rotel);
}

/// The id comes from OTEL_RESOURCE_ATTRIBUTES when set there, and is then not kept.
#[test]
fn otel_resource_attributes_override_the_kept_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::http(None, 0);
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start_with_env(
        &[
            "--store",
            store.to_str().expect("path"),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", receiver.port),
            "--otlp-interval",
            "200ms",
        ],
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.instance.id=bridge-eu-1,deployment.environment.name=prod",
            ),
            ("OTEL_SERVICE_NAME", "reflexio-eu"),
        ],
    );
    assert_eq!(logged_instance_id(&bridge), "bridge-eu-1");
    let got = common::otlp::collect(&receiver.rx, Duration::from_secs(10), |g| g.requests > 0);
    assert_eq!(got.resource["service.instance.id"], "bridge-eu-1");
    assert_eq!(got.resource["service.name"], "reflexio-eu");
    assert_eq!(got.resource["deployment.environment.name"], "prod");
    assert_eq!(got.resource["service.version"], env!("CARGO_PKG_VERSION"));
    drop(bridge);
    // Without the override, the store's own id, generated now, and the same at the next start.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let bridge = Bridge::start(&[
            "--store",
            store.to_str().expect("path"),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", receiver.port),
        ]);
        ids.push(logged_instance_id(&bridge));
        assert!(bridge.terminate().success());
    }
    assert_ne!(ids[0], "bridge-eu-1");
    assert_eq!(ids[0], ids[1]);
}
