//! Runs the real `reflexio-bridge` binary on a free loopback port for the end-to-end tests.

#![allow(dead_code, unreachable_pub)]

pub mod otlp;
#[path = "../../../reflexio-otel/tests/support/process.rs"]
pub mod process;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_reflexio-bridge");

/// A running bridge; killed when dropped.
pub struct Bridge {
    child: Option<Child>,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
}

impl Bridge {
    /// Starts `reflexio-bridge serve ARGS --listen 127.0.0.1:0` and waits until it listens.
    pub fn start(args: &[&str]) -> Bridge {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Bridge {
        Self::start_under(&[], args, env)
    }

    /// Starts the bridge through `wrapper` (a command that runs the rest of its arguments, such
    /// as `prlimit --fsize=N --`), which must exec it so that the pid is the bridge's.
    pub fn start_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Bridge {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("serve").args(args);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied()).env("RUST_LOG", "info");
        Self::adopt(&mut cmd)
    }

    /// Starts `cmd` (a `reflexio-bridge serve` command line) and waits until it listens.
    pub fn adopt(cmd: &mut Command) -> Bridge {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reflexio-bridge");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, listening) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening addr=").nth(1) {
                        let _ = found.send(addr.trim().to_owned());
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let addr = match listening.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the bridge did not start:\n{}",
                    log.lock().expect("log").join("\n")
                );
            }
        };
        Bridge {
            child: Some(child),
            addr,
            log,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `GET path` with an optional bearer token: status, headers' content type, body.
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String, String) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("GET");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, content_type, resp.text().expect("body"))
    }

    /// `POST /v1/events`: status and JSON body.
    pub fn post(
        &self,
        body: impl Into<Vec<u8>>,
        content_type: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(self.url("/v1/events"))
            .header("content-type", content_type)
            .body(body.into());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("POST");
        let status = resp.status().as_u16();
        let text = resp.text().expect("body");
        let json =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON body ({e}): {text}"));
        (status, json)
    }

    /// The exposition's samples: `name{labels}` -> value.
    pub fn scrape_with(&self, token: Option<&str>) -> BTreeMap<String, f64> {
        let (status, _, text) = self.get("/metrics/prometheus", token);
        assert_eq!(status, 200, "scrape: {text}");
        samples(&text)
    }

    pub fn scrape(&self) -> BTreeMap<String, f64> {
        self.scrape_with(None)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        child.wait().expect("exit")
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse().expect("number"))
        })
        .collect()
}

/// Waits until `check` holds, for at most `timeout`.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// A fact as the wire format writes it.
pub fn fact(hallucinated: bool, coverage: f64) -> serde_json::Value {
    serde_json::json!({
        "type": "fact",
        "hallucinated": hallucinated,
        "atomic": true,
        "citation_coverage": coverage,
        "cove": {"confidence": 0.9, "rounds": 2}
    })
}

/// Every target expression of a Grafana dashboard, with its panel's title.
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

/// A free port on 127.0.0.1 (for servers that cannot report the one they picked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A server process on a free loopback port (Prometheus, Alertmanager, VictoriaMetrics) with
/// a temporary directory for its files and log; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `program` with `args(port, dir)`; waits until `GET /-/ready` answers 200.
    pub fn start(program: &str, args: impl Fn(u16, &Path) -> Vec<String>) -> Server {
        Server::start_ready(program, "/-/ready", args)
    }

    /// Starts `program` with `args(port, dir)`; waits until `GET ready` answers 200.
    pub fn start_ready(
        program: &str,
        ready: &str,
        args: impl Fn(u16, &Path) -> Vec<String>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new(program)
            .args(args(port, dir.path()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} must be installed (scripts/test installs it): {e}")
            });
        let server = Server { child, port, dir };
        let url = format!("http://127.0.0.1:{port}{ready}");
        let ready = eventually(Duration::from_secs(30), || {
            reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success())
        });
        assert!(ready, "{program} did not start:\n{}", server.log());
        server
    }

    /// Debian's `prometheus` scraping `targets` (`host:port` of bridges, job `reflexio`) every
    /// second, without rules.
    pub fn prometheus(targets: &[&str]) -> Server {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        Server::prometheus_with(&format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reflexio\n    \
             metrics_path: /metrics/prometheus\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ))
    }

    /// Debian's `prometheus` with the configuration file `config` (YAML).
    pub fn prometheus_with(config: &str) -> Server {
        let config = config.to_owned();
        Server::start("prometheus", move |port, dir| {
            let file = dir.join("prometheus.yml");
            std::fs::write(&file, &config).expect("write");
            vec![
                format!("--config.file={}", file.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// The store a stopped bridge left behind at `path`, as a recorder loads it.
pub fn stored(path: &Path) -> reflexio_otel::Snapshot {
    let r = reflexio_otel::Recorder::builder()
        .without_upkeep_thread()
        .store(reflexio_otel::StoreOptions::new(path))
        .build();
    let s = (*r.snapshot()).clone();
    r.shutdown().expect("close");
    s
}

/// An instant query to the Prometheus-compatible server on `port`: the result vector, or the
/// error the server gives.
pub fn query(port: u16, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let response: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
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

/// The value of one sample of a [`query`] result.
pub fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a numeric sample")
}

/// A response read off a raw TCP connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or why it is not.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "not a JSON body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `request` byte for byte on a new connection to `addr` and reads the first response.
/// The request is written whole before anything is read, and a server that closes early does not
/// make the write an error: the answer is what counts.
pub fn raw_exchange(addr: &str, request: &[u8], timeout: Duration) -> Result<RawResponse, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "the connection closed before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(format!(
                    "read: {e} after {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("no content-length in {head:?}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("the body ended early: {head:?}")),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read body: {e}")),
        }
    }
    body.truncate(length);
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// The resident set size of a process, in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
