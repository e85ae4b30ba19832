//! The web configuration file (`--web-config-file`), in the format of Prometheus' exporter-toolkit
//! (`--web.config.file` of every official exporter): `tls_server_config`, `http_server_config`,
//! `basic_auth_users` and `rate_limit`. Parsed into a validated [`WebConfig`]; an unknown key, a
//! value of the wrong type or a setting the bridge cannot honour is an error naming the key.
//! Relative file names are read from the file's directory, as exporter-toolkit does.

use actix_web::http::header::{HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaml_rust2::Yaml;

/// PEM text, from a file or written inline in the configuration.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Pem {
    File(PathBuf),
    Inline(String),
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({})", path.display()),
            Pem::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

impl Pem {
    /// The file, if the PEM text is in one: it is watched for changes.
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            Pem::File(path) => Some(path),
            Pem::Inline(_) => None,
        }
    }

    /// Where it is, for messages.
    pub(crate) fn describe(&self, key: &str) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Inline(_) => format!("the inline `{key}`"),
        }
    }

    pub(crate) fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Pem::File(path) => {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
            Pem::Inline(text) => Ok(text.clone().into_bytes()),
        }
    }
}

/// `client_auth_type`: Go's `tls.ClientAuthType` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified.
    RequireAnyClientCert,
    /// Not required; verified against `client_ca_file` when given.
    VerifyClientCertIfGiven,
    /// Required and verified against `client_ca_file`.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: [(&'static str, ClientAuth); 5] = [
        ("NoClientCert", ClientAuth::NoClientCert),
        ("RequestClientCert", ClientAuth::RequestClientCert),
        ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
        (
            "VerifyClientCertIfGiven",
            ClientAuth::VerifyClientCertIfGiven,
        ),
        (
            "RequireAndVerifyClientCert",
            ClientAuth::RequireAndVerifyClientCert,
        ),
    ];

    pub(crate) fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    pub(crate) fn requires(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// A TLS protocol version rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    Tls12,
    Tls13,
}

/// `tls_server_config`, checked: what the TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) cert: Pem,
    pub(crate) key: Pem,
    pub(crate) client_ca: Option<Pem>,
    pub(crate) client_auth: ClientAuth,
    /// A client certificate must carry one of these as a DNS, IP, e-mail or URI SAN.
    pub(crate) client_allowed_sans: Vec<String>,
    pub(crate) min_version: TlsVersion,
    pub(crate) max_version: TlsVersion,
    /// TLS 1.2 cipher suites by their IANA names, in preference order; empty: rustls' defaults.
    pub(crate) cipher_suites: Vec<String>,
    /// The server's order of cipher suites wins over the client's.
    pub(crate) prefer_server_cipher_suites: bool,
    /// Key exchange groups, in preference order; empty: rustls' defaults.
    pub(crate) curve_preferences: Vec<Curve>,
}

/// `rate_limit`: a token bucket over every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    /// One request per this long, on average.
    pub(crate) interval: Duration,
    /// How many may come at once.
    pub(crate) burst: u32,
}

/// A web configuration file, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct WebConfig {
    pub(crate) tls: Option<TlsSettings>,
    /// User name -> bcrypt hash.
    pub(crate) users: BTreeMap<String, String>,
    /// Headers added to every answer.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) rate_limit: Option<RateLimit>,
    /// Settings accepted that do not do what they say here, to log.
    pub(crate) warnings: Vec<String>,
}

/// The headers `http_server_config.headers` may set, and the values each one takes (`None`:
/// any).
const HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// Go's names of the TLS 1.2 ChaCha20 suites, which leave out the hash.
const SUITE_ALIASES: [(&str, &str); 2] = [
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// A cipher suite name as rustls spells it.
pub(crate) fn canonical_suite(name: &str) -> &str {
    SUITE_ALIASES
        .iter()
        .find(|(go, _)| *go == name)
        .map_or(name, |(_, iana)| iana)
}

/// A key of the file and what is wrong with its value.
fn bad(key: &str, problem: impl std::fmt::Display) -> String {
    format!("`{key}`: {problem}")
}

fn kind(y: &Yaml) -> &'static str {
    match y {
        Yaml::Real(_) | Yaml::Integer(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Null => "empty",
        _ => "not a plain value",
    }
}

/// The entries of a mapping, each key checked against `known`. An empty value (`key:` alone) is
/// no mapping at all.
fn mapping<'a>(y: &'a Yaml, at: &str, known: &[&str]) -> Result<Vec<(&'a str, &'a Yaml)>, String> {
    let hash = match y {
        Yaml::Hash(h) => h,
        Yaml::Null => return Ok(Vec::new()),
        other => return Err(bad(at, format!("expected a mapping, got {}", kind(other)))),
    };
    let mut entries = Vec::new();
    for (k, v) in hash {
        let Yaml::String(k) = k else {
            return Err(bad(at, format!("a key is {}, not a name", kind(k))));
        };
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        if !known.is_empty() && !known.contains(&k.as_str()) {
            return Err(bad(
                &path,
                format!("unknown key; expected one of {}", known.join(", ")),
            ));
        }
        entries.push((k.as_str(), v));
    }
    Ok(entries)
}

fn string(y: &Yaml, key: &str) -> Result<String, String> {
    match y {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Integer(i) => Ok(i.to_string()),
        Yaml::Real(r) => Ok(r.clone()),
        other => Err(bad(key, format!("expected a string, got {}", kind(other)))),
    }
}

fn boolean(y: &Yaml, key: &str) -> Result<bool, String> {
    match y {
        Yaml::Boolean(b) => Ok(*b),
        other => Err(bad(
            key,
            format!("expected true or false, got {}", kind(other)),
        )),
    }
}

fn strings(y: &Yaml, key: &str) -> Result<Vec<String>, String> {
    match y {
        Yaml::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| string(item, &format!("{key}[{i}]")))
            .collect(),
        Yaml::Null => Ok(Vec::new()),
        other => Err(bad(key, format!("expected a list, got {}", kind(other)))),
    }
}

/// The value `table` gives `name`, or the names it knows, comma-separated.
fn named<T: Copy>(table: &[(&str, T)], name: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            names.join(", ")
        })
}

fn version(name: &str, key: &str, warnings: &mut Vec<String>) -> Result<TlsVersion, String> {
    match name {
        "TLS13" => Ok(TlsVersion::Tls13),
        "TLS12" => Ok(TlsVersion::Tls12),
        "TLS10" | "TLS11" if key.ends_with("min_version") => {
            warnings.push(format!(
                "web configuration: `{key}: {name}` acts as TLS12: the bridge (rustls) speaks \
                 TLS 1.2 and 1.3 only"
            ));
            Ok(TlsVersion::Tls12)
        }
        "TLS10" | "TLS11" => Err(bad(
            key,
            format!("{name} is not offered: the bridge (rustls) speaks TLS12 and TLS13 only"),
        )),
        other => Err(bad(
            key,
            format!("`{other}`; expected TLS10, TLS11, TLS12 or TLS13"),
        )),
    }
}

/// A key exchange group `curve_preferences` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    X25519,
    P256,
    P384,
    X25519MlKem768,
}

impl Curve {
    /// Every group, by its name in Go's `tls` package (as exporter-toolkit takes them).
    const ALL: [(&'static str, Curve); 4] = [
        ("X25519", Curve::X25519),
        ("CurveP256", Curve::P256),
        ("CurveP384", Curve::P384),
        ("X25519MLKEM768", Curve::X25519MlKem768),
    ];
}

impl WebConfig {
    /// Reads and checks the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a web configuration file whose relative file names are under `dir`.
    pub(crate) fn parse(text: &str, dir: &Path) -> Result<Self, String> {
        let docs = yaml_rust2::YamlLoader::load_from_str(text)
            .map_err(|e| format!("not valid YAML: {e}"))?;
        let mut config = WebConfig::default();
        let root = match docs.as_slice() {
            [] => return Ok(config),
            [one] => one,
            _ => return Err("holds more than one YAML document".into()),
        };
        let entries = mapping(
            root,
            "",
            &[
                "tls_server_config",
                "http_server_config",
                "basic_auth_users",
                "rate_limit",
            ],
        )?;
        for (key, value) in entries {
            match key {
                "tls_server_config" => {
                    config.tls = Self::tls(value, dir, &mut config.warnings)?;
                }
                "http_server_config" => {
                    for (k, v) in mapping(value, key, &["http2", "headers"])? {
                        match k {
                            "http2" => {
                                if boolean(v, "http_server_config.http2")? {
                                    config.warnings.push(
                                        "web configuration: `http_server_config.http2: true` has \
                                         no effect: the bridge serves HTTP/1.1"
                                            .into(),
                                    );
                                }
                            }
                            _ => config.headers = Self::headers(v)?,
                        }
                    }
                }
                "basic_auth_users" => {
                    for (user, hash) in mapping(value, key, &[])? {
                        let at = format!("basic_auth_users.{user}");
                        let hash = string(hash, &at)?;
                        hash.parse::<bcrypt::HashParts>().map_err(|e| {
                            bad(&at, format!("not a bcrypt hash such as $2y$10$...: {e}"))
                        })?;
                        if user.contains(':') {
                            return Err(bad(&at, "a user name cannot contain `:`"));
                        }
                        config.users.insert(user.to_owned(), hash);
                    }
                }
                _ => config.rate_limit = Self::rate_limit(value)?,
            }
        }
        Ok(config)
    }

    fn headers(y: &Yaml) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let known: Vec<&str> = HEADERS.iter().map(|(h, _)| *h).collect();
        let mut headers = Vec::new();
        for (name, value) in mapping(y, "http_server_config.headers", &known)? {
            let at = format!("http_server_config.headers.{name}");
            let value = string(value, &at)?;
            if value.is_empty() {
                continue;
            }
            let allowed = HEADERS.iter().find(|(h, _)| *h == name).and_then(|h| h.1);
            if let Some(allowed) = allowed
                && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value))
            {
                return Err(bad(
                    &at,
                    format!("`{value}`; expected {}", allowed.join(" or ")),
                ));
            }
            let header_value =
                HeaderValue::from_str(&value).map_err(|_| bad(&at, "not a valid header value"))?;
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(&at, "not a valid header name"))?;
            headers.push((header_name, header_value));
        }
        Ok(headers)
    }

    fn rate_limit(y: &Yaml) -> Result<Option<RateLimit>, String> {
        let mut interval = Duration::ZERO;
        let mut burst = 0;
        for (k, v) in mapping(y, "rate_limit", &["interval", "burst"])? {
            match k {
                "interval" => {
                    let text = string(v, "rate_limit.interval")?;
                    interval = if text.trim() == "0" {
                        Duration::ZERO
                    } else {
                        humantime::parse_duration(&text).map_err(|e| {
                            bad(
                                "rate_limit.interval",
                                format!("`{text}` is not a duration like 100ms or 1s: {e}"),
                            )
                        })?
                    };
                }
                _ => {
                    burst = match v {
                        Yaml::Integer(n) => u32::try_from(*n).ok(),
                        _ => None,
                    }
                    .ok_or_else(|| bad("rate_limit.burst", "expected a whole number"))?;
                }
            }
        }
        if interval.is_zero() {
            return Ok(None);
        }
        if burst == 0 {
            return Err(bad(
                "rate_limit.burst",
                "must be at least 1 when an interval is set (no request could pass)",
            ));
        }
        Ok(Some(RateLimit { interval, burst }))
    }

    fn tls(
        y: &Yaml,
        dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<Option<TlsSettings>, String> {
        const KEYS: [&str; 14] = [
            "cert",
            "key",
            "client_ca",
            "cert_file",
            "key_file",
            "client_auth_type",
            "client_ca_file",
            "client_allowed_sans",
            "min_version",
            "max_version",
            "cipher_suites",
            "prefer_server_cipher_suites",
            "curve_preferences",
            // Accepted by exporter-toolkit's older versions; ignored there too.
            "session_tickets",
        ];
        let entries = mapping(y, "tls_server_config", &KEYS)?;
        if entries.is_empty() {
            return Ok(None);
        }
        let mut get = BTreeMap::new();
        for (k, v) in entries {
            get.insert(k, v);
        }
        let key_path = |k: &str| format!("tls_server_config.{k}");
        let text = |k: &str| -> Result<Option<String>, String> {
            get.get(k)
                .map(|v| string(v, &key_path(k)))
                .transpose()
                .map(|s| s.filter(|s| !s.is_empty()))
        };
        let pem = |inline: &str, file: &str| -> Result<Option<Pem>, String> {
            match (text(inline)?, text(file)?) {
                (Some(_), Some(_)) => Err(bad(
                    &key_path(file),
                    format!("give `{inline}` or `{file}`, not both"),
                )),
                (Some(pem), None) => Ok(Some(Pem::Inline(pem))),
                (None, Some(path)) => Ok(Some(Pem::File(dir.join(path)))),
                (None, None) => Ok(None),
            }
        };
        let cert = pem("cert", "cert_file")?;
        let key = pem("key", "key_file")?;
        let client_ca = pem("client_ca", "client_ca_file")?;
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c, k),
            (None, _) => {
                return Err(bad(
                    "tls_server_config.cert_file",
                    "missing: TLS needs a certificate (`cert_file` or `cert`)",
                ));
            }
            (_, None) => {
                return Err(bad(
                    "tls_server_config.key_file",
                    "missing: TLS needs the certificate's key (`key_file` or `key`)",
                ));
            }
        };
        let client_auth = match text("client_auth_type")? {
            None => ClientAuth::NoClientCert,
            Some(name) => named(&ClientAuth::NAMES, &name).map_err(|names| {
                bad(
                    &key_path("client_auth_type"),
                    format!("`{name}`; expected one of {names}"),
                )
            })?,
        };
        if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
            return Err(bad(
                &key_path("client_ca_file"),
                "a client CA is given but `client_auth_type` is NoClientCert; set it to \
                 RequireAndVerifyClientCert (or VerifyClientCertIfGiven)",
            ));
        }
        if client_auth.verifies() && client_ca.is_none() {
            return Err(bad(
                &key_path("client_auth_type"),
                "verifying client certificates needs `client_ca_file` (or `client_ca`): the CA \
                 certificates that signed them",
            ));
        }
        let client_allowed_sans = match get.get("client_allowed_sans") {
            Some(v) => strings(v, &key_path("client_allowed_sans"))?,
            None => Vec::new(),
        };
        if !client_allowed_sans.is_empty() && !client_auth.requires() {
            return Err(bad(
                &key_path("client_allowed_sans"),
                "needs `client_auth_type` RequireAnyClientCert or RequireAndVerifyClientCert: \
                 otherwise a client may connect without a certificate to match",
            ));
        }
        let min_version = match text("min_version")? {
            Some(v) => version(&v, &key_path("min_version"), warnings)?,
            None => TlsVersion::Tls12,
        };
        let max_version = match text("max_version")? {
            Some(v) => version(&v, &key_path("max_version"), warnings)?,
            None => TlsVersion::Tls13,
        };
        if max_version < min_version {
            return Err(bad(&key_path("max_version"), "is lower than `min_version`"));
        }
        let cipher_suites = match get.get("cipher_suites") {
            Some(v) => strings(v, &key_path("cipher_suites"))?,
            None => Vec::new(),
        };
        let prefer_server_cipher_suites = match get.get("prefer_server_cipher_suites") {
            Some(v) => boolean(v, &key_path("prefer_server_cipher_suites"))?,
            None => true,
        };
        let curve_preferences = match get.get("curve_preferences") {
            Some(v) => strings(v, &key_path("curve_preferences"))?,
            None => Vec::new(),
        };
        let curve_preferences = curve_preferences
            .iter()
            .map(|name| {
                named(&Curve::ALL, name).map_err(|offered| {
                    bad(
                        &key_path("curve_preferences"),
                        format!("`{name}` is not offered; the bridge (rustls) offers {offered}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(TlsSettings {
            cert,
            key,
            client_ca,
            client_auth,
            client_allowed_sans,
            min_version,
            max_version,
            cipher_suites,
            prefer_server_cipher_suites,
            curve_preferences,
        }))
    }

    /// The files the configuration reads, besides itself: watched for changes.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(Pem::path)
            .map(Path::to_path_buf)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/bridge"))
    }

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    #[test]
    fn the_exporter_toolkit_format_is_read() {
        let text = format!(
            "tls_server_config:
  cert_file: server.crt
  key_file: /abs/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  client_allowed_sans: [prometheus.example, 10.0.0.1]
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Content-Security-Policy: \"default-src 'self'\"
    X-XSS-Protection: ''
basic_auth_users:
  prometheus: {HASH}
rate_limit:
  interval: 100ms
  burst: 20
"
        );
        let c = parse(&text).expect("valid");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cert, Pem::File("/etc/bridge/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/bridge/ca.crt".into())));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(tls.client_allowed_sans, ["prometheus.example", "10.0.0.1"]);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert!(!tls.prefer_server_cipher_suites);
        assert_eq!(tls.curve_preferences, [Curve::X25519, Curve::P256]);
        assert_eq!(c.users.get("prometheus").map(String::as_str), Some(HASH));
        let headers: Vec<_> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            headers,
            [
                "x-frame-options",
                "x-content-type-options",
                "content-security-policy"
            ],
            "a blank header is unset"
        );
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                interval: Duration::from_millis(100),
                burst: 20
            })
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(parse("").expect("empty"), WebConfig::default());
        assert_eq!(
            parse("tls_server_config:\n").expect("empty"),
            WebConfig::default()
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, expected) in [
            (
                "tls_server_config:\n  cert_fil: x\n",
                "`tls_server_config.cert_fil`: unknown key",
            ),
            ("colour: red\n", "`colour`: unknown key"),
            (
                "tls_server_config:\n  cert_file: a\n",
                "`tls_server_config.key_file`: missing",
            ),
            (
                "tls_server_config:\n  key_file: a\n",
                "`tls_server_config.cert_file`: missing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  cert: b\n  key_file: k\n",
                "not both",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_auth_type: Sometimes\n",
                "`Sometimes`; expected one of NoClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_ca_file: ca\n",
                "a client CA is given but",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs `client_ca_file`",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_allowed_sans: [x]\n",
                "needs `client_auth_type` RequireAnyClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  max_version: TLS11\n",
                "TLS11 is not offered",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
                "lower than `min_version`",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  curve_preferences: [CurveP521]\n",
                "`CurveP521` is not offered",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  prefer_server_cipher_suites: yes please\n",
                "expected true or false",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "`allow`; expected deny or sameorigin",
            ),
            (
                "http_server_config:\n  headers:\n    Server: bridge\n",
                "`http_server_config.headers.Server`: unknown key",
            ),
            ("basic_auth_users:\n  alice: secret\n", "not a bcrypt hash"),
            (
                "basic_auth_users: [alice]\n",
                "expected a mapping, got a list",
            ),
            (
                "rate_limit:\n  interval: 1s\n",
                "`rate_limit.burst`: must be at least 1",
            ),
            (
                "rate_limit:\n  interval: soon\n  burst: 1\n",
                "not a duration",
            ),
            ("a: [\n", "not valid YAML"),
            ("--- {}\n--- {}\n", "more than one YAML document"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(expected), "{text:?}: `{e}` lacks `{expected}`");
        }
    }

    #[test]
    fn what_rustls_cannot_do_is_warned_about_or_refused() {
        let c = parse(
            "tls_server_config:\n  cert_file: a\n  key_file: k\n  min_version: TLS10\n\
             http_server_config:\n  http2: true\n",
        )
        .expect("valid");
        assert_eq!(c.tls.map(|t| t.min_version), Some(TlsVersion::Tls12));
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert_eq!(
            canonical_suite("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"),
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(
            parse("rate_limit:\n  interval: 0\n  burst: 0\n").map(|c| c.rate_limit),
            Ok(None)
        );
    }
}
