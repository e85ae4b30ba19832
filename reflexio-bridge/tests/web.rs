//! The bridge as Prometheus, curl, a browser and a load balancer see it: HTTPS and basic auth
//! from a web configuration file (scraped by a real Prometheus), client certificates and the
//! minimum TLS version enforced in real handshakes, certificate rotation, gzip, HEAD, 405,
//! `/metrics`, the landing page in headless Chromium, and the process and build metrics checked
//! by `promtool`.

mod common;
#[path = "../../reflexio-otel/tests/support/promtool.rs"]
mod promtool;

use common::{Bridge, Server, eventually, fact, query, raw_exchange, samples, value};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";

/// A certificate authority made for a test: its certificate as PEM, and what signs with it.
struct Authority {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("CA").pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for the DNS names `dns` (and 127.0.0.1 for a server), signed by this CA:
    /// (certificate, key), as PEM.
    fn sign(&self, dns: &[&str], client: bool) -> (String, String) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = dns.iter().map(|d| (*d).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        if client {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        }
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// A CA, and a server certificate for `localhost` and 127.0.0.1 signed by it, written to `dir`
/// as `ca.pem`, `cert.pem` and `key.pem` (the last two replaced atomically).
fn issue(dir: &Path, ca_name: &str) {
    let ca = Authority::new(ca_name);
    let (cert, key) = ca.sign(&["localhost"], false);
    std::fs::write(dir.join("ca.pem"), &ca.pem).expect("write");
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

/// A web configuration with TLS from `dir` and the user `prometheus`.
fn web_config(dir: &Path, extra: &str) -> PathBuf {
    let hash = bcrypt::hash(PASSWORD, 6).expect("hash");
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  \
             min_version: TLS12\nhttp_server_config:\n  headers:\n    \
             X-Content-Type-Options: nosniff\nbasic_auth_users:\n  prometheus: '{hash}'\n{extra}"
        ),
    )
    .expect("write");
    path
}

/// An HTTPS client trusting only the CA in `ca` (read now).
fn client(ca: &Path) -> reqwest::blocking::Client {
    client_with(ca, |b| b)
}

/// An HTTPS client trusting only the CA in `ca`, with `more` settings.
fn client_with(
    ca: &Path,
    more: impl FnOnce(reqwest::blocking::ClientBuilder) -> reqwest::blocking::ClientBuilder,
) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).expect("CA");
    more(
        reqwest::blocking::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("CA certificates"))
            .timeout(Duration::from_secs(10)),
    )
    .build()
    .expect("client")
}

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, "a-long-enough-bearer-token-0123456789").expect("write");
    let mut perms = std::fs::metadata(&path).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

fn start_tls(dir: &Path, extra: &str) -> Bridge {
    let config = web_config(dir, extra);
    let token = token_file(dir);
    let store = dir.join("metrics.db");
    Bridge::start(&[
        "--web-config-file",
        config.to_str().expect("utf-8"),
        "--auth-token-file",
        token.to_str().expect("utf-8"),
        "--store",
        store.to_str().expect("utf-8"),
    ])
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_from_a_web_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "first CA");
    let bridge = start_tls(dir.path(), "");
    let port = bridge.addr.rsplit(':').next().expect("port");
    std::fs::write(dir.path().join("password"), PASSWORD).expect("write");
    std::fs::write(dir.path().join("wrong"), "not the password").expect("write");
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    metrics_path: /metrics\n    \
             tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: prometheus\n      \
             password_file: {pw}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            ca = dir.path().join("ca.pem").display(),
            pw = dir.path().join(password).display(),
        )
    };
    let prom = Server::prometheus_with(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("reflexio", "password"),
        job("intruder", "wrong")
    ));
    let up = |job: &str| {
        query(prom.port, &format!("up{{job=\"{job}\"}}"))
            .ok()?
            .first()
            .map(value)
    };
    let scraped = eventually(Duration::from_secs(30), || {
        up("reflexio") == Some(1.0) && up("intruder") == Some(0.0)
    });
    assert!(
        scraped,
        "up: reflexio {:?}, intruder {:?}\n{}\n{}",
        up("reflexio"),
        up("intruder"),
        prom.log(),
        bridge.log_text()
    );
    // What Prometheus stored came over TLS with basic auth: the build and process metrics too.
    let build = query(prom.port, "reflexio_bridge_build_info{job=\"reflexio\"}").expect("query");
    assert_eq!(
        build.first().and_then(|s| s["metric"]["version"].as_str()),
        Some(env!("CARGO_PKG_VERSION")),
        "{build:?}"
    );
    let start = query(prom.port, "process_start_time_seconds{job=\"reflexio\"}").expect("query");
    assert!(
        start.first().map(value).is_some_and(|t| t > 1.7e9),
        "{start:?}"
    );

    // The same as curl would see it.
    let https = client(&dir.path().join("ca.pem"));
    let url = format!("https://localhost:{port}/metrics");
    let answer = https
        .get(&url)
        .basic_auth("prometheus", Some(PASSWORD))
        .send()
        .expect("scrape");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer
            .headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "headers of http_server_config"
    );
    let wrong = https
        .get(&url)
        .basic_auth("prometheus", Some("guess"))
        .send()
        .expect("scrape");
    assert_eq!(wrong.status(), 401);
    let challenges: Vec<_> = wrong
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic ")),
        "{challenges:?}"
    );
    let body: serde_json::Value = wrong.json().expect("JSON");
    assert_eq!(body["error"], "the user name or password is wrong");
    // The bearer token keeps working, for scraping and ingest; basic auth is not for ingest.
    let token = std::fs::read_to_string(dir.path().join("token")).expect("token");
    let with_token = https
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .expect("scrape");
    assert_eq!(with_token.status(), 200);
    let ingest =
        |auth: &dyn Fn(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder| {
            auth(
                https
                    .post(format!("https://localhost:{port}/v1/events"))
                    .header("content-type", "application/json")
                    .body(r#"[{"type":"digest"}]"#),
            )
            .send()
            .expect("ingest")
            .status()
        };
    assert_eq!(ingest(&|r| r.bearer_auth(token.trim())), 202);
    assert_eq!(ingest(&|r| r.basic_auth("prometheus", Some(PASSWORD))), 401);

    // Plain HTTP on the TLS port: a clean 400 saying so, then the connection is closed.
    let plain = raw_exchange(
        &bridge.addr,
        b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .expect("an answer in plain HTTP");
    assert_eq!(plain.status, 400);
    let error = plain.json().expect("JSON")["error"].clone();
    assert!(
        error.as_str().is_some_and(|e| e.contains("HTTPS")),
        "{error}"
    );
    let after = https
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .expect("HTTPS after the plain HTTP probe");
    assert_eq!(after.status(), 200, "the bridge still serves TLS after it");
}

#[test]
fn certificates_are_rotated_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "old CA");
    let old_ca = dir.path().join("old-ca.pem");
    std::fs::copy(dir.path().join("ca.pem"), &old_ca).expect("copy");
    let bridge = start_tls(dir.path(), "");
    let port = bridge.addr.rsplit(':').next().expect("port").to_owned();
    let healthz = |ca: &Path| {
        client(ca)
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .map(|r| r.status().as_u16())
    };
    assert_eq!(healthz(&old_ca).ok(), Some(200));
    let pid = bridge.pid();

    issue(dir.path(), "new CA");
    let new_ca = dir.path().join("ca.pem");
    let rotated = eventually(Duration::from_secs(15), || {
        healthz(&new_ca).ok() == Some(200)
    });
    assert!(
        rotated,
        "the new certificate is not served:\n{}",
        bridge.log_text()
    );
    assert!(
        healthz(&old_ca).is_err(),
        "the old certificate is still served"
    );
    assert_eq!(bridge.pid(), pid, "no restart");
    assert!(bridge.log_text().contains("web configuration reloaded"));

    // A broken key is not put in force: the certificate in force stays.
    std::fs::write(dir.path().join("key.pem"), "not a key").expect("write");
    let logged = eventually(Duration::from_secs(10), || {
        bridge
            .log_text()
            .contains("the changed web configuration is not used")
    });
    assert!(logged, "{}", bridge.log_text());
    assert_eq!(healthz(&new_ca).ok(), Some(200));
}

/// A bridge serving HTTPS with the `tls_server_config` keys `tls` (besides the certificate and
/// key of `dir`), without a token or users.
fn start_tls_only(dir: &Path, tls: &str) -> Bridge {
    let config = dir.join("web.yml");
    std::fs::write(
        &config,
        format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n{tls}"),
    )
    .expect("write");
    let store = dir.join("metrics.db");
    Bridge::start(&[
        "--web-config-file",
        config.to_str().expect("utf-8"),
        "--store",
        store.to_str().expect("utf-8"),
    ])
}

/// A client certificate and its key, as reqwest takes them.
fn identity((cert, key): &(String, String)) -> reqwest::Identity {
    reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity")
}

#[test]
fn client_certificates_are_verified_in_the_handshake() {
    use reqwest::tls::Version;
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "server CA");
    let clients = Authority::new("client CA");
    std::fs::write(dir.path().join("client-ca.pem"), &clients.pem).expect("write");
    let bridge = start_tls_only(
        dir.path(),
        "  client_ca_file: client-ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n  \
         client_allowed_sans: [prometheus.example]\n",
    );
    let port = bridge.addr.rsplit(':').next().expect("port");
    let url = format!("https://localhost:{port}/metrics");
    let ca = dir.path().join("ca.pem");
    let prometheus = clients.sign(&["scraper.example", "prometheus.example"], true);
    let stranger = Authority::new("another CA").sign(&["prometheus.example"], true);
    let intruder = clients.sign(&["intruder.example"], true);
    for version in [Version::TLS_1_2, Version::TLS_1_3] {
        let scrape = |cert: Option<&(String, String)>| {
            client_with(&ca, |b| {
                let b = b.tls_version_min(version).tls_version_max(version);
                match cert {
                    Some(cert) => b.identity(identity(cert)),
                    None => b,
                }
            })
            .get(&url)
            .send()
            .map(|r| r.status().as_u16())
        };
        let admitted = scrape(Some(&prometheus));
        assert_eq!(
            admitted.ok(),
            Some(200),
            "{version:?}: {}",
            bridge.log_text()
        );
        for (who, cert) in [
            ("no client certificate", None),
            ("a certificate of another CA", Some(&stranger)),
            ("a certificate without an allowed SAN", Some(&intruder)),
        ] {
            let refused = scrape(cert);
            assert!(refused.is_err(), "{version:?}, {who}: {refused:?}");
        }
        // The refusals left the listener serving.
        assert_eq!(scrape(Some(&prometheus)).ok(), Some(200), "{version:?}");
    }
}

#[test]
fn a_minimum_tls_version_refuses_older_clients() {
    use reqwest::tls::Version;
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "server CA");
    let bridge = start_tls_only(dir.path(), "  min_version: TLS13\n");
    let port = bridge.addr.rsplit(':').next().expect("port");
    let ca = dir.path().join("ca.pem");
    let healthz = |min: Version, max: Version| {
        client_with(&ca, |b| b.tls_version_min(min).tls_version_max(max))
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .map(|r| r.status().as_u16())
    };
    let old = healthz(Version::TLS_1_2, Version::TLS_1_2);
    assert!(old.is_err(), "a TLS 1.2 client: {old:?}");
    assert_eq!(
        healthz(Version::TLS_1_3, Version::TLS_1_3).ok(),
        Some(200),
        "a TLS 1.3 client"
    );
    // A client offering both gets TLS 1.3.
    assert_eq!(healthz(Version::TLS_1_2, Version::TLS_1_3).ok(), Some(200));
}

#[test]
fn an_unknown_key_in_the_web_config_stops_the_bridge_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, says) in [
        (
            "tls_server_config:\n  cert_fle: x\n",
            "`tls_server_config.cert_fle`: unknown key",
        ),
        ("basic_auth_users:\n  alice: plain\n", "not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n",
            "cannot read",
        ),
    ] {
        let path = dir.path().join("web.yml");
        std::fs::write(&path, text).expect("write");
        let out = Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--web-config-file"])
            .arg(&path)
            .arg("--store")
            .arg(dir.path().join("m.db"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains("invalid --web-config-file") && stderr.contains(says),
            "{text}: {stderr}"
        );
    }
}

fn get(bridge: &Bridge, method: &str, path: &str, headers: &[(&str, &str)]) -> RawAnswer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: x\r\n");
    for (k, v) in headers {
        request += &format!("{k}: {v}\r\n");
    }
    request += "content-length: 0\r\n\r\n";
    if method == "HEAD" || method == "OPTIONS" {
        // No body follows the head of an answer to HEAD: read the head only.
        let mut stream = std::net::TcpStream::connect(&bridge.addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            use std::io::Read;
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                // Anything more would be a body; wait a moment for it.
                std::thread::sleep(Duration::from_millis(200));
                stream.set_nonblocking(true).expect("nonblocking");
                if let Ok(n) = stream.read(&mut chunk) {
                    buf.extend_from_slice(&chunk[..n]);
                }
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        return RawAnswer {
            status: head[9..12].parse().expect("status"),
            headers: head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
    }
    let r =
        raw_exchange(&bridge.addr, request.as_bytes(), Duration::from_secs(10)).expect("answer");
    RawAnswer {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn gunzip(bytes: &[u8]) -> String {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("gzip");
    text
}

#[test]
fn gzip_head_405_and_metrics_answer_as_exporters_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&["--store", store.to_str().expect("utf-8")]);
    let events: Vec<_> = (0..20).map(|i| fact(i == 0, 0.97)).collect();
    let (status, _) = bridge.post(json!(events).to_string(), "application/json", None);
    assert_eq!(status, 202);

    // gzip when asked, as it is otherwise.
    let plain = get(&bridge, "GET", "/metrics", &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let packed = get(&bridge, "GET", "/metrics", &[("accept-encoding", "gzip")]);
    assert_eq!(packed.header("content-encoding"), Some("gzip"));
    assert!(
        packed.body.len() * 3 < plain.body.len(),
        "compressed: {} of {} bytes",
        packed.body.len(),
        plain.body.len()
    );
    let refused = get(
        &bridge,
        "GET",
        "/metrics",
        &[("accept-encoding", "gzip;q=0, br")],
    );
    assert_eq!(refused.header("content-encoding"), None);
    let text = String::from_utf8(plain.body.clone()).expect("text");
    let unpacked = gunzip(&packed.body);
    let stable = |t: &str| {
        samples(t)
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("reflexio_") && !k.contains("store_") && !k.contains("clock")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&unpacked), stable(&text));

    // /metrics and /metrics/prometheus: the same exposition.
    let other = get(&bridge, "GET", "/metrics/prometheus", &[]);
    let other = String::from_utf8(other.body).expect("text");
    assert_eq!(
        samples(&other).keys().collect::<Vec<_>>(),
        samples(&text).keys().collect::<Vec<_>>()
    );
    assert_eq!(stable(&other), stable(&text));
    assert_eq!(samples(&text)["reflexio_facts_total"], 20.0);

    // HEAD: the head of GET, no body.
    for path in [
        "/metrics",
        "/metrics/prometheus",
        "/healthz",
        "/readyz",
        "/",
    ] {
        let head = get(&bridge, "HEAD", path, &[]);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has a body");
        assert!(
            head.header("content-length").is_some_and(|l| l != "0"),
            "HEAD {path}: {:?}",
            head.headers
        );
    }

    // 405 with Allow for a method the path does not take; 404 for no such path.
    for (method, path, allow) in [
        ("POST", "/metrics", "GET, HEAD, OPTIONS"),
        ("DELETE", "/healthz", "GET, HEAD, OPTIONS"),
        ("PUT", "/", "GET, HEAD, OPTIONS"),
        ("GET", "/v1/events", "POST, OPTIONS"),
        ("HEAD", "/v1/events", "POST, OPTIONS"),
    ] {
        let answer = get(&bridge, method, path, &[]);
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
        if method != "HEAD" {
            let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
            assert!(json["error"].as_str().is_some_and(|e| e.contains(allow)));
        }
    }
    let options = get(&bridge, "OPTIONS", "/v1/events", &[]);
    assert_eq!(
        (options.status, options.header("allow")),
        (204, Some("POST, OPTIONS"))
    );
    assert_eq!(get(&bridge, "GET", "/nowhere", &[]).status, 404);
    assert_eq!(get(&bridge, "DELETE", "/nowhere", &[]).status, 404);

    // process_* and the build info, and promtool has nothing to say about the exposition.
    let all = samples(&text);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            all.get(name).is_some_and(|v| *v > 0.0),
            "{name}: {:?}",
            all.get(name)
        );
    }
    let build = all
        .iter()
        .find(|(k, _)| k.starts_with("reflexio_bridge_build_info{"))
        .expect("build info");
    assert_eq!(*build.1, 1.0);
    for label in [
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        "rustc_version=\"1.".to_owned(),
        "target=\"".to_owned(),
    ] {
        assert!(build.0.contains(&label), "{} lacks {label}", build.0);
    }
    let remarks = promtool::check_metrics(&text);
    assert!(remarks.is_empty(), "promtool: {remarks}");
}

#[test]
fn compressed_bodies_are_taken_and_bombs_refused_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&[
        "--body-limit",
        "64KiB",
        "--store",
        store.to_str().expect("utf-8"),
    ]);
    let client = reqwest::blocking::Client::new();
    let post = |body: Vec<u8>, encoding: &str| {
        let answer = client
            .post(bridge.url("/v1/events"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .expect("POST");
        let status = answer.status().as_u16();
        (status, answer.json::<serde_json::Value>().expect("JSON"))
    };
    let gzip = |text: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text).expect("write");
        e.finish().expect("finish")
    };
    let batch = json!(
        (0..500)
            .map(|_| json!({"type":"digest"}))
            .collect::<Vec<_>>()
    )
    .to_string();
    assert!(batch.len() < 64 << 10);
    let (status, body) = post(gzip(batch.as_bytes()), "gzip");
    assert_eq!((status, body), (202, json!({"accepted": 500})));
    let (status, body) = post(batch.clone().into_bytes(), "br");
    assert_eq!(status, 415, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("`br`")));
    let (status, _) = post(b"not gzip".to_vec(), "gzip");
    assert_eq!(status, 400);
    // Within the limit on the wire, past it decompressed: 413.
    let bomb = gzip(&[b"[".as_slice(), &vec![b' '; 8 << 20], b"]"].concat());
    assert!(bomb.len() < 64 << 10);
    let (status, body) = post(bomb, "gzip");
    assert_eq!(status, 413, "{body}");
    assert_eq!(bridge.scrape()["reflexio_digests_total"], 500.0);
}

/// Headless Chromium, as the test command installs it.
fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().expect("tempdir");
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium must be installed (scripts/test installs it: apt-get install chromium)")
}

/// The figures of the landing page's DOM: (series, value) for each value and sample count.
fn page_figures(dom: &str) -> Vec<(String, String)> {
    let attr = |s: &str, name: &str| -> Option<String> {
        let at = s.find(&format!("{name}=\""))? + name.len() + 2;
        Some(s[at..at + s[at..].find('"')?].to_owned())
    };
    let text_of = |s: &str, class: &str| -> Option<String> {
        let at = s.find(&format!("class=\"{class}\""))?;
        let start = at + s[at..].find('>')? + 1;
        Some(s[start..start + s[start..].find('<')?].to_owned())
    };
    let mut out = Vec::new();
    for row in dom.split("<tr data-metric=").skip(1) {
        let row = &row[..row.find("</tr>").unwrap_or(row.len())];
        let metric = attr(&format!(" data-metric={row}"), "data-metric").expect("metric");
        out.push((metric, text_of(row, "value").expect("value")));
        let samples_at = row.find("class=\"samples\"").expect("samples");
        let samples_metric = attr(&row[samples_at..], "data-metric").expect("samples metric");
        out.push((
            samples_metric,
            text_of(row, "samples").expect("samples value"),
        ));
    }
    out
}

#[test]
fn the_landing_page_in_chromium_shows_the_scraped_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_dir = dir.path().join("locks");
    std::fs::create_dir(&lock_dir).expect("mkdir");
    let store = dir.path().join("metrics.db");
    let bridge = Bridge::start(&[
        "--lock-dir",
        lock_dir.to_str().expect("utf-8"),
        "--store",
        store.to_str().expect("utf-8"),
    ]);
    // 1% hallucinated over 300 facts (a breach of the 0.5% target), coverage and CoVe fine,
    // one failed retention run, a held lock.
    let mut events: Vec<_> = (0..300).map(|i| fact(i % 100 == 0, 0.97)).collect();
    events.push(json!({"type":"retention","table":"facts","deleted_records":4,"error":"locked"}));
    events.push(json!({"type":"retention","table":"digests","deleted_records":2}));
    events.push(json!({"type":"lock_acquired","name":"daily_digest","holder":"w1"}));
    let (status, body) = bridge.post(json!(events).to_string(), "application/json", None);
    assert_eq!(status, 202, "{body}");
    let url = bridge.url("/");
    // Let the lock directory's first poll land, so that its health is known.
    assert!(eventually(Duration::from_secs(15), || {
        bridge
            .scrape()
            .get("reflexio_legacy_healthy{source=\"lock_dir\"}")
            == Some(&1.0)
    }));

    let out = chromium(&["--dump-dom"], &url);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).expect("UTF-8");
    let scrape = bridge.scrape();
    let figures = page_figures(&dom);
    assert_eq!(figures.len(), 10, "five figures with their samples: {dom}");
    for (metric, shown) in &figures {
        match scrape.get(metric) {
            Some(v) => assert_eq!(shown.parse::<f64>().ok(), Some(*v), "{metric}: {shown}"),
            // Named by the rules, not exported by this version.
            None => assert_eq!(shown, "—", "{metric}"),
        }
    }
    assert_eq!(
        scrape["reflexio_hallucination_rate_24h"],
        0.01,
        "{:?}",
        scrape
            .iter()
            .filter(|(k, _)| k.contains("facts"))
            .collect::<Vec<_>>()
    );
    let row = |metric: &str| {
        let at = dom
            .find(&format!("<tr data-metric=\"{metric}\""))
            .expect(metric);
        dom[at..at + dom[at..].find("</tr>").expect("row end")].to_owned()
    };
    assert!(row("reflexio_hallucination_rate_24h").contains("class=\"breach\">BREACH<"));
    assert!(row("reflexio_cove_avg_confidence_24h").contains("class=\"ok\">ok<"));
    assert!(row("reflexio_retention_errors_7d").contains("class=\"breach\">BREACH<"));
    assert!(row("reflexio_hallucination_rate_24h").contains("≤ 0.5%"));
    assert!(dom.contains(&format!(
        "<span id=\"version\">{}</span>",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(dom.contains("id=\"store\">ok<"), "{dom}");
    assert!(dom.contains("id=\"legacy-lock_dir\">ok<"), "{dom}");
    assert!(
        dom.contains("id=\"legacy-database\">not followed<"),
        "{dom}"
    );
    for link in [
        "href=\"metrics\"",
        "href=\"metrics/prometheus\"",
        "href=\"healthz\"",
        "href=\"readyz\"",
    ] {
        assert!(dom.contains(link), "{link}");
    }

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/landing-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,900",
            "--hide-scrollbars",
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
