//! The bridge's settings: flags, environment and configuration file merged into one validated
//! [`Config`] before anything starts, which then builds the recorder. Every error names the
//! setting and where its value came from.

use crate::cli::{ServeArgs, parse_duration};
use crate::legacy::{self, CoveSettings, FileCove, LegacySettings, LockNames};
use crate::web_config::WebConfig;
use reflexio_otel::{Fraction, Recorder, RecorderBuilder, StoreOptions};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A setting that cannot be used: the process exits with code 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// How OTLP pushes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }
}

/// A PEM file read at start: its path, for messages, and what it holds. `Debug` shows the path
/// only (a private key is never printed).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PemFile {
    pub(crate) path: PathBuf,
    pub(crate) pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemFile({})", self.path.display())
    }
}

/// TLS settings for an `https://` collector. Empty: the system's CA certificates, no client
/// certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tls {
    /// The CA certificates that verify the collector, instead of the system's.
    pub(crate) ca: Option<PemFile>,
    /// The client certificate (chain) and its private key, for collectors that ask for one.
    pub(crate) client: Option<(PemFile, PemFile)>,
}

impl Tls {
    pub(crate) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }
}

/// Where OTLP pushes go, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Otlp {
    /// The full URL, `http://` or `https://`: for http/protobuf, including `/v1/metrics`.
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
    pub(crate) interval: Duration,
    /// How long one push may take.
    pub(crate) timeout: Duration,
    pub(crate) compression: Compression,
    pub(crate) tls: Tls,
}

impl Otlp {
    /// Whether the push goes over TLS.
    pub(crate) fn secure(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

/// The bearer token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(Box<[u8]>);

impl Token {
    #[cfg(test)]
    pub(crate) fn new(token: &[u8]) -> Self {
        Self(token.into())
    }

    pub(crate) fn matches(&self, offered: &[u8]) -> bool {
        constant_time_eq::constant_time_eq(&self.0, offered)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The web configuration file, read and checked at start.
#[derive(Debug, Clone)]
pub(crate) struct Web {
    pub(crate) path: PathBuf,
    pub(crate) config: WebConfig,
    /// Built from `config.tls`, its files read: HTTPS is served.
    pub(crate) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) store: PathBuf,
    pub(crate) flush_interval: Duration,
    pub(crate) demo: bool,
    pub(crate) token: Option<Token>,
    pub(crate) web: Option<Web>,
    pub(crate) public_metrics: bool,
    pub(crate) insecure_no_auth: bool,
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) max_ingest_bodies: usize,
    pub(crate) stale_lock_after: Duration,
    pub(crate) otlp: Option<Otlp>,
    /// `OTEL_SDK_DISABLED=true`: no push, whatever else is set.
    pub(crate) otlp_disabled: bool,
    /// What to follow of an existing deployment, if anything.
    pub(crate) legacy: Option<LegacySettings>,
    /// The application's CoVe settings, and what its `.env` file said of them at start.
    pub(crate) cove: CoveSettings,
    pub(crate) cove_file: Option<FileCove>,
    /// `None`: the recorder's default, a multiple of `stale_lock_after`.
    pub(crate) evict_locks_after: Option<Duration>,
    pub(crate) integrity_check_interval: Duration,
    pub(crate) idempotency_window: Duration,
    pub(crate) idempotency_max_keys: u64,
    /// Settings that work but should be changed, to log at start.
    pub(crate) warnings: Vec<String>,
}

/// The configuration file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    store: Option<PathBuf>,
    flush_interval: Option<String>,
    demo: Option<bool>,
    auth_token_file: Option<PathBuf>,
    auth_token_create: Option<bool>,
    web_config_file: Option<PathBuf>,
    public_metrics: Option<bool>,
    insecure_no_auth: Option<bool>,
    body_limit: Option<toml::Value>,
    body_timeout: Option<String>,
    max_ingest_bodies: Option<toml::Value>,
    stale_lock_after: Option<String>,
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<String>,
    otlp_interval: Option<String>,
    otlp_compression: Option<String>,
    otlp_certificate: Option<PathBuf>,
    otlp_client_certificate: Option<PathBuf>,
    otlp_client_key: Option<PathBuf>,
    legacy_db: Option<PathBuf>,
    lock_dir: Option<PathBuf>,
    lock_names: Option<toml::Value>,
    legacy_tz: Option<String>,
    legacy_poll_interval: Option<String>,
    legacy_env_file: Option<PathBuf>,
    cove_enabled: Option<toml::Value>,
    cove_threshold: Option<toml::Value>,
    evict_locks_after: Option<String>,
    integrity_check_interval: Option<String>,
    idempotency_window: Option<String>,
    idempotency_max_keys: Option<toml::Value>,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Flag,
    Env(&'a str),
    File(&'a Path),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("on the command line"),
            Source::Env(var) => write!(f, "in {var}"),
            Source::File(path) => write!(f, "in {}", path.display()),
        }
    }
}

fn invalid(setting: &str, source: Source<'_>, problem: impl fmt::Display) -> UsageError {
    UsageError(format!("invalid {setting} ({source}): {problem}"))
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
const DEFAULT_STORE: &str = "reflexio-metrics.db";
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
const MAX_BODY_LIMIT: usize = 1024 * 1024 * 1024;
const DEFAULT_INTEGRITY_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The tables Reflexio's retention jobs clean.
pub(crate) const RETENTION_TABLES: [&str; 3] = ["transcriptions", "facts", "digests"];
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_INGEST_BODIES: usize = 32;
const MAX_MAX_INGEST_BODIES: usize = 65_536;
/// The environment variable naming the web configuration file (read here, not by clap, so
/// that an error names it).
const WEB_CONFIG_FILE_VAR: &str = "REFLEXIO_BRIDGE_WEB_CONFIG_FILE";
/// Shorter tokens are warned about at start.
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// Parses the number of ingest bodies read at once: 1 to 65536.
fn parse_bodies(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_MAX_INGEST_BODIES).contains(n))
        .ok_or_else(|| format!("`{s}` is not a number from 1 to {MAX_MAX_INGEST_BODIES}"))
}

/// Parses the most idempotency keys kept: 1 to 100 million.
fn parse_max_keys(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=100_000_000).contains(n))
        .ok_or_else(|| format!("`{s}` is not a number from 1 to 100000000"))
}

/// Parses `512KiB`, `1MiB`, `2MB` or a plain number of bytes.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 1MiB, 512KiB or 100000"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1024,
        "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KiB, MiB, KB or MB"
            ));
        }
    };
    let size = number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if size == 0 || size > MAX_BODY_LIMIT {
        return Err(format!("{size} bytes is outside 1 byte to 1GiB"));
    }
    Ok(size)
}

/// Whether a missing token file is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenCreation {
    Never,
    Create,
    /// `--check-config`: a missing file would be created; nothing is written.
    Check,
}

/// The token of `path`: read, or first created with a new random token when `create` says so
/// and the file does not exist.
fn token(path: &Path, create: TokenCreation) -> Result<(Token, Vec<String>), String> {
    if create != TokenCreation::Never && !path.exists() {
        if create == TokenCreation::Check {
            // What would be created: a valid, long token.
            return Ok((Token(vec![b'0'; 64].into()), Vec::new()));
        }
        create_token(path)?;
    }
    read_token(path)
}

/// Creates `path` (mode 600) holding 32 random bytes in hex; a file created meanwhile by another
/// process is kept.
fn create_token(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(32) => {}
        _ => return Err("cannot draw random bytes for a new token".into()),
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    };
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::warn!(path = %path.display(), "created a new bearer token (mode 600): clients and Prometheus need it");
    Ok(())
}

/// Reads the token, and says what is weak about it: a file other users can read, a short token.
fn read_token(path: &Path) -> Result<(Token, Vec<String>), String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} must hold one line of visible ASCII characters",
            path.display()
        ));
    }
    let mut warnings = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o004 != 0 {
            warnings.push(format!(
                "the token file {} is readable by every user (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    if token.len() < MIN_TOKEN_LEN {
        warnings.push(format!(
            "the token in {} is {} bytes, shorter than {MIN_TOKEN_LEN} bytes: use a long random \
             one (openssl rand -hex 32)",
            path.display(),
            token.len()
        ));
    }
    Ok((Token(token.into()), warnings))
}

/// Reads and checks a web configuration file, and builds its TLS configuration (reading the
/// certificate, key and CA files) so that a mistake stops the bridge at start.
fn load_web(path: &Path) -> Result<Web, String> {
    let config = WebConfig::load(path)?;
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Web {
        path: path.to_owned(),
        config,
        tls,
    })
}

/// A time zone by its IANA name (`Europe/Berlin`, `UTC`).
fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name)
        .map_err(|e| format!("`{name}` is not a known time zone such as Europe/Berlin or UTC: {e}"))
}

fn load_file(path: &Path) -> Result<FileSettings, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read --config {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| UsageError(format!("invalid --config {}: {e}", path.display())))
}

/// The first of the flag, environment variables and file that holds a value.
fn pick<'a, T>(
    flag: Option<T>,
    env_vars: &[&'a str],
    env: &impl Fn(&str) -> Option<String>,
    file: Option<T>,
    file_path: &'a Path,
) -> Option<(T, Source<'a>)>
where
    T: From<String>,
{
    if let Some(v) = flag {
        return Some((v, Source::Flag));
    }
    for var in env_vars {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            return Some((T::from(v), Source::Env(var)));
        }
    }
    file.map(|v| (v, Source::File(file_path)))
}

impl Config {
    /// The recorder on the configured store: what `serve` and `import` both write through.
    pub(crate) fn recorder(&self) -> anyhow::Result<Recorder> {
        let mut builder = Recorder::builder()
            // The tables Reflexio's retention jobs clean: their series exist before any run, so
            // alerts see even the first failed one.
            .tables(RETENTION_TABLES)?
            .stale_lock_after(self.stale_lock_after)
            .max_future_skew(legacy::MAX_AHEAD)
            .store(
                StoreOptions::new(&self.store)
                    .flush_interval(self.flush_interval)
                    .integrity_check_interval(self.integrity_check_interval)
                    .idempotency_window(self.idempotency_window)
                    .max_idempotency_keys(self.idempotency_max_keys),
            );
        if let Some(after) = self.evict_locks_after {
            builder = builder.evict_locks_after(after);
        }
        Ok(builder.build())
    }

    /// Merges `args` (flags, and the environment variables clap reads) with the OpenTelemetry
    /// environment variables from `env` and the configuration file, and validates the result.
    pub(crate) fn resolve(
        args: ServeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, UsageError> {
        let file_path = args.config.clone().unwrap_or_default();
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileSettings::default(),
        };
        let fp = file_path.as_path();
        let otlp = Self::otlp(&args, &file, fp, &env)?;
        let otlp_disabled = env_bool("OTEL_SDK_DISABLED", &env)?.unwrap_or(false);
        let otlp = otlp.filter(|_| !otlp_disabled);
        let legacy = Self::legacy(&args, &file, fp)?;
        let (cove, cove_file) = Self::cove(&args, &file, fp, &env)?;

        let listen = match (args.listen, file.listen) {
            (Some(addr), _) => addr,
            (None, Some(s)) => s
                .parse()
                .map_err(|e| invalid("listen", Source::File(fp), format!("`{s}`: {e}")))?,
            (None, None) => DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!()),
        };
        let store = args
            .store
            .or(file.store)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE));
        let file_duration = |value: Option<String>, setting: &str| {
            value
                .map(|s| parse_duration(&s).map_err(|e| invalid(setting, Source::File(fp), e)))
                .transpose()
        };
        let flush_interval = match args.flush_interval {
            Some(d) => d,
            None => file_duration(file.flush_interval, "flush_interval")?
                .unwrap_or(Duration::from_secs(1)),
        };
        let stale_lock_after = match args.stale_lock_after {
            Some(d) => d,
            None => file_duration(file.stale_lock_after, "stale_lock_after")?
                .unwrap_or(RecorderBuilder::DEFAULT_STALE_LOCK_AFTER),
        };
        let evict_locks_after = match args.evict_locks_after {
            Some(d) => Some(d),
            None => file_duration(file.evict_locks_after, "evict_locks_after")?,
        };
        let integrity_check_interval = match args.integrity_check_interval {
            Some(d) => d,
            None => file_duration(file.integrity_check_interval, "integrity_check_interval")?
                .unwrap_or(DEFAULT_INTEGRITY_CHECK_INTERVAL),
        };
        let idempotency_window = match args.idempotency_window {
            Some(d) => d,
            None => file_duration(file.idempotency_window, "idempotency_window")?
                .unwrap_or(StoreOptions::DEFAULT_IDEMPOTENCY_WINDOW),
        };
        let idempotency_max_keys = match (&args.idempotency_max_keys, file.idempotency_max_keys) {
            (Some(s), _) => {
                parse_max_keys(s).map_err(|e| invalid("--idempotency-max-keys", Source::Flag, e))?
            }
            (None, Some(toml::Value::Integer(n))) => parse_max_keys(&n.to_string())
                .map_err(|e| invalid("idempotency_max_keys", Source::File(fp), e))?,
            (None, Some(other)) => {
                return Err(invalid(
                    "idempotency_max_keys",
                    Source::File(fp),
                    format!("expected a number, got {other}"),
                ));
            }
            (None, None) => StoreOptions::DEFAULT_MAX_IDEMPOTENCY_KEYS,
        };
        let demo = args.demo || file.demo.unwrap_or(false);
        let public_metrics = args.public_metrics || file.public_metrics.unwrap_or(false);
        let insecure_no_auth = args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false);

        let body_limit = match (args.body_limit, file.body_limit) {
            (Some(s), _) => parse_size(&s).map_err(|e| invalid("--body-limit", Source::Flag, e))?,
            (None, Some(toml::Value::Integer(n))) => usize::try_from(n)
                .map_err(|e| e.to_string())
                .and_then(|n| parse_size(&n.to_string()))
                .map_err(|e| invalid("body_limit", Source::File(fp), e))?,
            (None, Some(toml::Value::String(s))) => {
                parse_size(&s).map_err(|e| invalid("body_limit", Source::File(fp), e))?
            }
            (None, Some(other)) => {
                return Err(invalid(
                    "body_limit",
                    Source::File(fp),
                    format!("expected a size such as \"1MiB\" or a number of bytes, got {other}"),
                ));
            }
            (None, None) => DEFAULT_BODY_LIMIT,
        };

        let body_timeout = match args.body_timeout {
            Some(d) => d,
            None => {
                file_duration(file.body_timeout, "body_timeout")?.unwrap_or(DEFAULT_BODY_TIMEOUT)
            }
        };
        let max_ingest_bodies = match (args.max_ingest_bodies, file.max_ingest_bodies) {
            (Some(s), _) => {
                parse_bodies(&s).map_err(|e| invalid("--max-ingest-bodies", Source::Flag, e))?
            }
            (None, Some(toml::Value::Integer(n))) => parse_bodies(&n.to_string())
                .map_err(|e| invalid("max_ingest_bodies", Source::File(fp), e))?,
            (None, Some(other)) => {
                return Err(invalid(
                    "max_ingest_bodies",
                    Source::File(fp),
                    format!("expected a number, got {other}"),
                ));
            }
            (None, None) => DEFAULT_MAX_INGEST_BODIES,
        };

        let create = match (args.auth_token_create, args.check_config) {
            (_, true) => TokenCreation::Check,
            (true, false) => TokenCreation::Create,
            (false, false) if file.auth_token_create == Some(true) => TokenCreation::Create,
            (false, false) => TokenCreation::Never,
        };
        let (token, warnings) = match (&args.auth_token_file, &file.auth_token_file) {
            (Some(path), _) => token(path, create)
                .map(|(t, w)| (Some(t), w))
                .map_err(|e| invalid("--auth-token-file", Source::Flag, e))?,
            (None, Some(path)) => token(path, create)
                .map(|(t, w)| (Some(t), w))
                .map_err(|e| invalid("auth_token_file", Source::File(fp), e))?,
            (None, None) => (None, Vec::new()),
        };
        let web = pick(
            args.web_config_file.clone(),
            &[WEB_CONFIG_FILE_VAR],
            &env,
            file.web_config_file.clone(),
            fp,
        )
        .map(|(path, source)| {
            let setting = match source {
                Source::File(_) => "web_config_file",
                Source::Flag | Source::Env(_) => "--web-config-file",
            };
            load_web(&path).map_err(|e| invalid(setting, source, e))
        })
        .transpose()?;
        let mut warnings = warnings;
        if let Some(web) = &web {
            warnings.extend(web.config.warnings.iter().cloned());
        }
        if !listen.ip().is_loopback() && token.is_none() && !insecure_no_auth {
            return Err(UsageError(format!(
                "invalid --listen {listen}: a non-loopback address needs --auth-token-file, \
                 or --insecure-no-auth to serve without authentication"
            )));
        }

        Ok(Config {
            listen,
            store,
            flush_interval,
            demo,
            token,
            web,
            public_metrics,
            insecure_no_auth,
            body_limit,
            body_timeout,
            max_ingest_bodies,
            stale_lock_after,
            otlp,
            otlp_disabled,
            legacy,
            cove,
            cove_file,
            evict_locks_after,
            integrity_check_interval,
            idempotency_window,
            idempotency_max_keys,
            warnings,
        })
    }

    fn legacy(
        args: &ServeArgs,
        file: &FileSettings,
        fp: &Path,
    ) -> Result<Option<LegacySettings>, UsageError> {
        let db = args.legacy_db.clone().or_else(|| file.legacy_db.clone());
        let lock_dir = args.lock_dir.clone().or_else(|| file.lock_dir.clone());
        let zone = match (&args.legacy_tz, &file.legacy_tz) {
            (Some(name), _) => {
                Some(zone(name).map_err(|e| invalid("--legacy-tz", Source::Flag, e))?)
            }
            (None, Some(name)) => {
                Some(zone(name).map_err(|e| invalid("legacy_tz", Source::File(fp), e))?)
            }
            (None, None) => None,
        };
        let poll_interval = match args.legacy_poll_interval {
            Some(d) => d,
            None => file
                .legacy_poll_interval
                .as_deref()
                .map(|s| {
                    parse_duration(s)
                        .map_err(|e| invalid("legacy_poll_interval", Source::File(fp), e))
                })
                .transpose()?
                .unwrap_or(Duration::from_secs(5)),
        };
        let lock_names = match (&args.lock_names, &file.lock_names) {
            (names, _) if !names.is_empty() => LockNames::new(names.iter().map(String::as_str))
                .map_err(|e| invalid("--lock-names", Source::Flag, e))?,
            (_, Some(value)) => file_names(value)
                .and_then(|names| LockNames::new(names.iter().map(String::as_str)))
                .map_err(|e| invalid("lock_names", Source::File(fp), e))?,
            (_, None) => LockNames::any(),
        };
        match &lock_dir {
            None if !lock_names.is_any() => {
                return Err(UsageError(
                    "invalid --lock-names: it names lock files in --lock-dir, which is not set"
                        .into(),
                ));
            }
            Some(dir) if lock_names.is_any() => {
                if let Some(shared) = legacy::shared_system_dir(dir) {
                    return Err(UsageError(format!(
                        "invalid --lock-dir {}: it is {shared}, a directory every program writes \
                         its .pid files into, and each would count as a lock of the \
                         application's; name the application's locks with --lock-names \
                         (Reflexio's: --lock-names daily_digest)",
                        dir.display()
                    )));
                }
            }
            _ => {}
        }
        let env_file = args
            .legacy_env_file
            .clone()
            .or_else(|| file.legacy_env_file.clone());
        if db.is_none() && lock_dir.is_none() && env_file.is_none() {
            return Ok(None);
        }
        let zone = zone.unwrap_or_else(|| {
            jiff::tz::TimeZone::try_system().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot tell the system's time zone; reading the application's times without an offset as UTC (set --legacy-tz)");
                jiff::tz::TimeZone::UTC
            })
        });
        Ok(Some(LegacySettings {
            db,
            lock_dir,
            lock_names,
            zone,
            poll_interval,
        }))
    }

    /// The CoVe settings: `--cove-enabled` and `--cove-threshold` (flag, environment, file), and
    /// `--legacy-env-file`, read now: a value the application could not use stops the bridge.
    fn cove(
        args: &ServeArgs,
        file: &FileSettings,
        fp: &Path,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(CoveSettings, Option<FileCove>), UsageError> {
        const ENABLED_VAR: &str = "REFLEXIO_BRIDGE_COVE_ENABLED";
        const THRESHOLD_VAR: &str = "REFLEXIO_BRIDGE_COVE_THRESHOLD";
        let as_text = |v: &Option<toml::Value>| match v {
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        let described = |source: Source<'_>, flag: &str, key: &str| match source {
            Source::Flag => flag.to_owned(),
            Source::Env(var) => var.to_owned(),
            Source::File(path) => format!("{key} in {}", path.display()),
        };
        let enabled = pick(
            args.cove_enabled.clone(),
            &[ENABLED_VAR],
            env,
            as_text(&file.cove_enabled),
            fp,
        )
        .map(|(v, source)| {
            legacy::pydantic_bool(v.trim())
                .map(|b| (b, described(source, "--cove-enabled", "cove_enabled")))
                .ok_or_else(|| {
                    invalid(
                        "--cove-enabled",
                        source,
                        format!("`{v}` is not true or false (1/0, yes/no, on/off)"),
                    )
                })
        })
        .transpose()?;
        let threshold = pick(
            args.cove_threshold.clone(),
            &[THRESHOLD_VAR],
            env,
            as_text(&file.cove_threshold),
            fp,
        )
        .map(|(v, source)| {
            v.trim()
                .parse::<f64>()
                .ok()
                .and_then(|t| Fraction::new(t).ok())
                .map(|t| (t, described(source, "--cove-threshold", "cove_threshold")))
                .ok_or_else(|| {
                    invalid(
                        "--cove-threshold",
                        source,
                        format!("`{v}` is not a number from 0 to 1"),
                    )
                })
        })
        .transpose()?;
        let env_file = args
            .legacy_env_file
            .clone()
            .or_else(|| file.legacy_env_file.clone());
        let cove = CoveSettings {
            enabled,
            threshold,
            app_defaults: args.legacy_db.is_some()
                || file.legacy_db.is_some()
                || env_file.is_some(),
            env_file,
        };
        let source = if args.legacy_env_file.is_some() {
            Source::Flag
        } else {
            Source::File(fp)
        };
        let read = cove
            .read_env_file()
            .map_err(|e| invalid("--legacy-env-file", source, e))?;
        Ok((cove, read))
    }

    fn otlp(
        args: &ServeArgs,
        file: &FileSettings,
        fp: &Path,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Otlp>, UsageError> {
        let protocol = match pick(
            args.otlp_protocol.clone(),
            &[
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
            env,
            file.otlp_protocol.clone(),
            fp,
        ) {
            None => Protocol::HttpProtobuf,
            Some((p, source)) => match p.as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                other => {
                    return Err(invalid(
                        "--otlp-protocol",
                        source,
                        format!("`{other}`; use grpc or http/protobuf"),
                    ));
                }
            },
        };
        let interval = match args.otlp_interval {
            Some(d) => d,
            None => match pick(
                None::<String>,
                &["OTEL_METRIC_EXPORT_INTERVAL"],
                env,
                None,
                fp,
            ) {
                Some((ms, source)) => ms
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        invalid(
                            "--otlp-interval",
                            source,
                            format!("`{ms}` is not a positive number of milliseconds"),
                        )
                    })?,
                None => match &file.otlp_interval {
                    Some(s) => parse_duration(s)
                        .map_err(|e| invalid("otlp_interval", Source::File(fp), e))?,
                    None => Duration::from_secs(15),
                },
            },
        };

        // A signal-specific endpoint is used as given; a general one is a base URL.
        let (endpoint, source, as_given) = match (
            &args.otlp_endpoint,
            env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").filter(|v| !v.is_empty()),
        ) {
            (Some(e), _) => (e.clone(), Source::Flag, false),
            (None, Some(e)) => (e, Source::Env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"), true),
            (None, None) => match pick(
                None::<String>,
                &["OTEL_EXPORTER_OTLP_ENDPOINT"],
                env,
                file.otlp_endpoint.clone(),
                fp,
            ) {
                Some((e, source)) => (e, source, false),
                None => return Ok(None),
            },
        };
        let endpoint = match (protocol, endpoint.contains("://")) {
            // gRPC takes `host:port`: TLS unless OTEL_EXPORTER_OTLP_INSECURE=true.
            (Protocol::Grpc, false) if !endpoint.is_empty() => {
                let insecure = env_bool("OTEL_EXPORTER_OTLP_METRICS_INSECURE", env)?
                    .or(env_bool("OTEL_EXPORTER_OTLP_INSECURE", env)?)
                    .unwrap_or(false);
                let scheme = if insecure { "http" } else { "https" };
                format!("{scheme}://{endpoint}")
            }
            _ => endpoint,
        };
        let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !scheme_ok || endpoint.len() <= "https://".len() {
            return Err(invalid(
                "--otlp-endpoint",
                source,
                format!("`{endpoint}` is not an http:// or https:// URL"),
            ));
        }
        let endpoint = match protocol {
            Protocol::HttpProtobuf if !as_given && !endpoint.ends_with("/v1/metrics") => {
                format!("{}/v1/metrics", endpoint.trim_end_matches('/'))
            }
            _ => endpoint,
        };

        let timeout = match pick(
            None::<String>,
            &[
                "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
            env,
            None,
            fp,
        ) {
            Some((ms, source)) => positive_millis(&ms).ok_or_else(|| {
                invalid(
                    "the OTLP timeout",
                    source,
                    format!("`{ms}` is not a positive number of milliseconds"),
                )
            })?,
            None => DEFAULT_OTLP_TIMEOUT,
        };
        let compression = match pick(
            args.otlp_compression.clone(),
            &[
                "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ],
            env,
            file.otlp_compression.clone(),
            fp,
        ) {
            None => Compression::None,
            Some((c, source)) => match c.to_ascii_lowercase().as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => {
                    return Err(invalid(
                        "--otlp-compression",
                        source,
                        format!("`{c}`; use gzip or none"),
                    ));
                }
            },
        };
        check_temporality(env)?;
        let tls = Self::otlp_tls(args, file, fp, env)?;
        Ok(Some(Otlp {
            endpoint,
            protocol,
            interval,
            timeout,
            compression,
            tls,
        }))
    }

    /// The CA and client certificate files, read and checked now.
    fn otlp_tls(
        args: &ServeArgs,
        file: &FileSettings,
        fp: &Path,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Tls, UsageError> {
        let read = |flag: &str, (path, source): (PathBuf, Source<'_>), kind: PemKind| {
            read_pem(&path, kind).map_err(|e| invalid(flag, source, e))
        };
        let ca = pick(
            args.otlp_certificate.clone(),
            &[
                "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ],
            env,
            file.otlp_certificate.clone(),
            fp,
        )
        .map(|v| read("--otlp-certificate", v, PemKind::Certificates))
        .transpose()?;
        let cert = pick(
            args.otlp_client_certificate.clone(),
            &[
                "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            ],
            env,
            file.otlp_client_certificate.clone(),
            fp,
        );
        let key = pick(
            args.otlp_client_key.clone(),
            &[
                "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ],
            env,
            file.otlp_client_key.clone(),
            fp,
        );
        let client = match (cert, key) {
            (None, None) => None,
            (Some((_, source)), None) => {
                return Err(invalid(
                    "--otlp-client-certificate",
                    source,
                    "a client certificate needs its private key (--otlp-client-key, \
                     OTEL_EXPORTER_OTLP_CLIENT_KEY)",
                ));
            }
            (None, Some((_, source))) => {
                return Err(invalid(
                    "--otlp-client-key",
                    source,
                    "a private key needs its client certificate (--otlp-client-certificate, \
                     OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)",
                ));
            }
            (Some(cert), Some(key)) => Some((
                read("--otlp-client-certificate", cert, PemKind::Certificates)?,
                read("--otlp-client-key", key, PemKind::PrivateKey)?,
            )),
        };
        Ok(Tls { ca, client })
    }
}

const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);

fn positive_millis(ms: &str) -> Option<Duration> {
    ms.trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// Lock names from the configuration file: an array of strings, or one comma-separated string.
fn file_names(value: &toml::Value) -> Result<Vec<String>, String> {
    match value {
        toml::Value::String(s) => Ok(s.split(',').map(str::to_owned).collect()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!("expected lock names as strings, got {other}")),
            })
            .collect(),
        other => Err(format!(
            "expected an array of lock names, or a comma-separated string, got {other}"
        )),
    }
}

/// A boolean OpenTelemetry variable: `true` or `false` in any case; unset or empty is `None`.
fn env_bool(var: &str, env: &impl Fn(&str) -> Option<String>) -> Result<Option<bool>, UsageError> {
    match env(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) if v.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(UsageError(format!(
            "invalid {var}: `{v}`; use true or false"
        ))),
    }
}

/// The push is cumulative, always. Counters continue from the store across restarts, and the
/// SDK gives every series the process's start as its start time (a wrapper around its OTLP
/// exporters cannot change it: they take the SDK's `ResourceMetrics`, which cannot be changed),
/// so the first delta after a restart would be the whole lifetime total.
fn check_temporality(env: &impl Fn(&str) -> Option<String>) -> Result<(), UsageError> {
    const VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
    let Some(value) = env(VAR).filter(|v| !v.trim().is_empty()) else {
        return Ok(());
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "cumulative" => Ok(()),
        "delta" | "lowmemory" => Err(UsageError(format!(
            "invalid {VAR}=`{value}`: the bridge pushes cumulative temporality only. Its \
             counters continue from the store across restarts, so the first delta after a \
             restart would be the whole lifetime total; unset it or set it to cumulative"
        ))),
        _ => Err(UsageError(format!(
            "invalid {VAR}: `{value}`; the bridge pushes cumulative temporality only"
        ))),
    }
}

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy)]
enum PemKind {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file and checks that it holds what it must.
fn read_pem(path: &Path, kind: PemKind) -> Result<PemFile, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let what = path.display().to_string();
    match kind {
        PemKind::Certificates => crate::pem::certificates(&pem, &what).map(drop)?,
        PemKind::PrivateKey => crate::pem::private_key(&pem, &what).map(drop)?,
    }
    Ok(PemFile {
        path: path.to_owned(),
        pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    fn resolve(args: ServeArgs, vars: &[(&str, &str)]) -> Result<Config, UsageError> {
        Config::resolve(args, env(vars))
    }

    #[test]
    fn defaults_are_loopback_and_no_push() {
        let c = resolve(ServeArgs::default(), &[]).expect("valid");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, PathBuf::from("reflexio-metrics.db"));
        assert_eq!(c.body_limit, 1 << 20);
        assert_eq!(c.body_timeout, Duration::from_secs(5));
        assert_eq!(c.max_ingest_bodies, 32);
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert!(c.otlp.is_none() && c.token.is_none() && !c.demo);
    }

    #[test]
    fn flags_win_over_env_and_env_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            "otlp_endpoint = \"http://file:4318\"\notlp_protocol = \"grpc\"\n\
             otlp_interval = \"30s\"\nbody_limit = \"2MiB\"\ndemo = true\nstore = \"file.db\"\n\
             body_timeout = \"2s\"\nmax_ingest_bodies = 8\n",
        )
        .expect("write");
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let c = resolve(from_file.clone(), &[]).expect("valid");
        let otlp = c.otlp.expect("push");
        assert_eq!(otlp.endpoint, "http://file:4318");
        assert_eq!(otlp.protocol, Protocol::Grpc);
        assert_eq!(otlp.interval, Duration::from_secs(30));
        assert_eq!(c.body_limit, 2 << 20);
        assert_eq!(c.body_timeout, Duration::from_secs(2));
        assert_eq!(c.max_ingest_bodies, 8);
        assert!(c.demo);
        assert_eq!(c.store, PathBuf::from("file.db"));

        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ];
        let otlp = resolve(from_file.clone(), &vars)
            .expect("valid")
            .otlp
            .expect("push");
        assert_eq!(otlp.endpoint, "http://env:4318/v1/metrics");
        assert_eq!(otlp.protocol, Protocol::HttpProtobuf);
        assert_eq!(otlp.interval, Duration::from_millis(500));

        let flags = ServeArgs {
            otlp_endpoint: Some("http://flag:4317".into()),
            otlp_protocol: Some("grpc".into()),
            otlp_interval: Some(Duration::from_secs(2)),
            store: Some("flag.db".into()),
            ..from_file
        };
        let c = resolve(flags, &vars).expect("valid");
        let otlp = c.otlp.expect("push");
        assert_eq!(otlp.endpoint, "http://flag:4317");
        assert_eq!(otlp.protocol, Protocol::Grpc);
        assert_eq!(otlp.interval, Duration::from_secs(2));
        assert_eq!(c.store, PathBuf::from("flag.db"));
    }

    #[test]
    fn signal_specific_endpoints_are_used_as_given() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://c:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
        ];
        let otlp = resolve(ServeArgs::default(), &vars)
            .expect("valid")
            .otlp
            .expect("push");
        assert_eq!(otlp.endpoint, "http://c:4318/custom");
    }

    #[test]
    fn invalid_settings_name_the_setting_and_its_source() {
        type Case<'a> = (ServeArgs, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                ServeArgs {
                    otlp_endpoint: Some("collector:4317".into()),
                    ..Default::default()
                },
                vec![],
                "invalid --otlp-endpoint (on the command line)",
            ),
            (
                ServeArgs::default(),
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ],
                "invalid --otlp-protocol (in OTEL_EXPORTER_OTLP_PROTOCOL)",
            ),
            (
                ServeArgs::default(),
                vec![("OTEL_METRIC_EXPORT_INTERVAL", "soon")],
                "invalid --otlp-interval (in OTEL_METRIC_EXPORT_INTERVAL)",
            ),
            (
                ServeArgs {
                    body_limit: Some("lots".into()),
                    ..Default::default()
                },
                vec![],
                "invalid --body-limit",
            ),
            (
                ServeArgs {
                    max_ingest_bodies: Some("0".into()),
                    ..Default::default()
                },
                vec![],
                "invalid --max-ingest-bodies (on the command line): `0` is not a number from 1",
            ),
            (
                ServeArgs {
                    max_ingest_bodies: Some("many".into()),
                    ..Default::default()
                },
                vec![],
                "invalid --max-ingest-bodies",
            ),
            (
                ServeArgs {
                    listen: Some("0.0.0.0:8000".parse().expect("addr")),
                    ..Default::default()
                },
                vec![],
                "invalid --listen 0.0.0.0:8000: a non-loopback address needs --auth-token-file",
            ),
            (
                ServeArgs {
                    auth_token_file: Some("/nonexistent/token".into()),
                    ..Default::default()
                },
                vec![],
                "invalid --auth-token-file (on the command line): cannot read /nonexistent/token",
            ),
        ];
        for (args, vars, expected) in cases {
            let err = resolve(args, &vars).expect_err(expected);
            assert!(
                err.0.starts_with(expected),
                "{err} does not start with {expected}"
            );
        }
    }

    #[test]
    fn file_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bridge.toml");
        for (text, expected) in [
            ("listen = \"nowhere\"\n", "invalid listen (in "),
            (
                "flush_interval = \"often\"\n",
                "invalid flush_interval (in ",
            ),
            ("colour = \"blue\"\n", "unknown field `colour`"),
            ("body_timeout = \"0s\"\n", "invalid body_timeout (in "),
            (
                "max_ingest_bodies = \"8\"\n",
                "invalid max_ingest_bodies (in ",
            ),
            (
                "max_ingest_bodies = 100000\n",
                "invalid max_ingest_bodies (in ",
            ),
            (
                "legacy_db = \"x.db\"\nlegacy_tz = \"Nowhere/City\"\n",
                "invalid legacy_tz (in ",
            ),
            (
                "legacy_db = \"x.db\"\nlegacy_poll_interval = \"0s\"\n",
                "invalid legacy_poll_interval (in ",
            ),
        ] {
            std::fs::write(&file, text).expect("write");
            let args = ServeArgs {
                config: Some(file.clone()),
                ..Default::default()
            };
            let err = resolve(args, &[]).expect_err(text);
            assert!(err.0.contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn the_web_config_file_comes_from_flag_env_or_file_and_a_bad_one_names_its_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let web = dir.path().join("web.yml");
        std::fs::write(&web, "rate_limit:\n  interval: 1s\n  burst: 5\n").expect("write");
        let other = dir.path().join("other.yml");
        std::fs::write(&other, "rate_limit:\n  interval: 2s\n  burst: 1\n").expect("write");
        let file = dir.path().join("bridge.toml");
        let toml_of = |path: &Path| format!("web_config_file = \"{}\"\n", path.display());
        std::fs::write(&file, toml_of(&web)).expect("write");
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let loaded = |c: Config| {
            let web = c.web.expect("a web configuration");
            (
                web.path,
                web.config.rate_limit.map(|r| (r.interval, r.burst)),
            )
        };
        let one_s = Some((Duration::from_secs(1), 5));
        let two_s = Some((Duration::from_secs(2), 1));
        assert_eq!(
            loaded(resolve(from_file.clone(), &[]).expect("valid")),
            (web.clone(), one_s)
        );
        let env_path = other.to_str().expect("utf-8");
        let from_env = [(WEB_CONFIG_FILE_VAR, env_path)];
        assert_eq!(
            loaded(resolve(ServeArgs::default(), &from_env).expect("valid")),
            (other.clone(), two_s)
        );
        // The environment wins over the file, the flag over both.
        assert_eq!(
            loaded(resolve(from_file.clone(), &from_env).expect("valid")),
            (other.clone(), two_s)
        );
        let flag = ServeArgs {
            web_config_file: Some(web.clone()),
            ..from_file.clone()
        };
        assert_eq!(
            loaded(resolve(flag, &from_env).expect("valid")),
            (web.clone(), one_s)
        );
        assert_eq!(
            resolve(ServeArgs::default(), &[])
                .expect("valid")
                .web
                .map(|w| w.path),
            None
        );

        // A bad file stops the bridge (a UsageError: exit code 2) naming the setting, where it
        // was given, the file and the key.
        let bad = dir.path().join("bad.yml");
        std::fs::write(&bad, "tls_server_config:\n  cert_fle: x\n").expect("write");
        let bad_path = bad.to_str().expect("utf-8");
        std::fs::write(&file, toml_of(&bad)).expect("write");
        let key = "`tls_server_config.cert_fle`: unknown key";
        let cases = [
            (
                ServeArgs {
                    config: Some(file.clone()),
                    ..ServeArgs::default()
                },
                vec![],
                format!(
                    "invalid web_config_file (in {}): {bad_path}: {key}",
                    file.display()
                ),
            ),
            (
                ServeArgs::default(),
                vec![(WEB_CONFIG_FILE_VAR, bad_path)],
                format!(
                    "invalid --web-config-file (in REFLEXIO_BRIDGE_WEB_CONFIG_FILE): {bad_path}: \
                     {key}"
                ),
            ),
            (
                ServeArgs {
                    web_config_file: Some(bad.clone()),
                    ..ServeArgs::default()
                },
                vec![],
                format!("invalid --web-config-file (on the command line): {bad_path}: {key}"),
            ),
            (
                ServeArgs::default(),
                vec![(WEB_CONFIG_FILE_VAR, "/nonexistent/web.yml")],
                "invalid --web-config-file (in REFLEXIO_BRIDGE_WEB_CONFIG_FILE): cannot read \
                 /nonexistent/web.yml"
                    .to_owned(),
            ),
        ];
        for (args, vars, expected) in cases {
            let err = resolve(args, &vars).expect_err(&expected);
            assert!(
                err.0.starts_with(&expected),
                "{err} does not start with {expected}"
            );
        }
    }

    #[test]
    fn legacy_settings_come_from_flags_or_the_file() {
        assert!(
            resolve(ServeArgs::default(), &[])
                .expect("valid")
                .legacy
                .is_none()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            "legacy_db = \"/srv/reflexio.db\"\nlock_dir = \"/srv/locks\"\n\
             legacy_tz = \"Asia/Kolkata\"\nlegacy_poll_interval = \"30s\"\n",
        )
        .expect("write");
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let legacy = resolve(from_file.clone(), &[])
            .expect("valid")
            .legacy
            .expect("legacy");
        assert_eq!(legacy.db, Some(PathBuf::from("/srv/reflexio.db")));
        assert_eq!(legacy.lock_dir, Some(PathBuf::from("/srv/locks")));
        assert_eq!(legacy.zone.iana_name(), Some("Asia/Kolkata"));
        assert_eq!(legacy.poll_interval, Duration::from_secs(30));
        let flags = ServeArgs {
            legacy_db: Some("flag.db".into()),
            legacy_tz: Some("UTC".into()),
            legacy_poll_interval: Some(Duration::from_secs(1)),
            ..from_file
        };
        let legacy = resolve(flags, &[]).expect("valid").legacy.expect("legacy");
        assert_eq!(legacy.db, Some(PathBuf::from("flag.db")));
        assert_eq!(legacy.zone.iana_name(), Some("UTC"));
        assert_eq!(legacy.poll_interval, Duration::from_secs(1));

        // Only the lock directory; the zone defaults to the system's.
        let locks = ServeArgs {
            lock_dir: Some("/run/locks".into()),
            ..ServeArgs::default()
        };
        let legacy = resolve(locks, &[]).expect("valid").legacy.expect("legacy");
        assert_eq!(
            (legacy.db, legacy.poll_interval),
            (None, Duration::from_secs(5))
        );
    }

    #[test]
    fn lock_names_pick_the_applications_files_and_are_needed_in_shared_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = |args: ServeArgs| resolve(args, &[]).map(|c| c.legacy.expect("legacy"));
        let flags = ServeArgs {
            lock_dir: Some(dir.path().to_owned()),
            lock_names: vec!["daily_digest".into(), "retention_*".into()],
            ..ServeArgs::default()
        };
        let names = locks(flags).expect("valid").lock_names;
        assert!(names.matches("daily_digest") && names.matches("retention_facts"));
        assert!(!names.matches("sshd"));
        // None given: every .pid file, except in a shared directory.
        let any = ServeArgs {
            lock_dir: Some(dir.path().to_owned()),
            ..ServeArgs::default()
        };
        assert!(locks(any).expect("valid").lock_names.is_any());
        for shared in ["/tmp", "/var/tmp", "/run", "/dev/shm", "/tmp/"] {
            let args = ServeArgs {
                lock_dir: Some(shared.into()),
                ..ServeArgs::default()
            };
            let err = locks(args).expect_err(shared);
            assert!(
                err.0
                    .starts_with(&format!("invalid --lock-dir {shared}: it is "))
                    && err
                        .0
                        .contains("name the application's locks with --lock-names")
                    && err.0.contains("--lock-names daily_digest"),
                "{err}"
            );
        }
        let args = ServeArgs {
            lock_dir: Some("/tmp".into()),
            lock_names: vec!["daily_digest".into()],
            ..ServeArgs::default()
        };
        assert!(locks(args).is_ok(), "named locks in /tmp");
        // From the file: an array or a comma-separated string; checked like the flag.
        let file = dir.path().join("bridge.toml");
        for (text, ok) in [
            (
                "lock_dir = \"/tmp\"\nlock_names = [\"daily_digest\", \"job_*\"]\n",
                true,
            ),
            (
                "lock_dir = \"/tmp\"\nlock_names = \"daily_digest,job_*\"\n",
                true,
            ),
            (
                "lock_dir = \"/tmp\"\nlock_names = [\"daily_digest.pid\"]\n",
                false,
            ),
            ("lock_dir = \"/tmp\"\nlock_names = 3\n", false),
        ] {
            std::fs::write(&file, text).expect("write");
            let args = ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            };
            match locks(args) {
                Ok(legacy) => {
                    assert!(ok, "{text}");
                    assert_eq!(legacy.lock_names.patterns(), ["daily_digest", "job_*"]);
                }
                Err(e) => {
                    assert!(!ok, "{text}: {e}");
                    assert!(e.0.starts_with("invalid lock_names (in "), "{e}");
                }
            }
        }
        let err = locks(ServeArgs {
            lock_names: vec!["daily_digest".into()],
            ..ServeArgs::default()
        })
        .expect_err("no directory");
        assert!(err.0.contains("--lock-dir, which is not set"), "{err}");
        let err = locks(ServeArgs {
            lock_dir: Some(dir.path().to_owned()),
            lock_names: vec!["w[0-9".into()],
            ..ServeArgs::default()
        })
        .expect_err("malformed");
        assert!(
            err.0
                .starts_with("invalid --lock-names (on the command line): "),
            "{err}"
        );
    }

    #[test]
    fn cove_settings_come_from_flags_env_file_and_the_apps_env_file() {
        use crate::legacy::Origin;
        let dir = tempfile::tempdir().expect("tempdir");
        let env_file = dir.path().join(".env");
        std::fs::write(
            &env_file,
            "ENABLE_COVE=true\nCOVE_CONFIDENCE_THRESHOLD=0.85\n",
        )
        .expect("write");
        let toml = dir.path().join("bridge.toml");
        std::fs::write(&toml, "cove_enabled = false\ncove_threshold = 0.6\n").expect("write");
        let cove = |args: ServeArgs, vars: &[(&str, &str)]| {
            let c = resolve(args, vars).expect("valid");
            let resolved = c.cove.resolve(c.cove_file.as_ref());
            resolved.map(|r| {
                (
                    r.config.enabled,
                    r.config.threshold.get(),
                    r.enabled_from.to_string(),
                    r.threshold_from.to_string(),
                )
            })
        };
        // Nothing given, not following: nothing recorded.
        assert_eq!(cove(ServeArgs::default(), &[]), None);
        // Following a database: the application's defaults.
        let follow = ServeArgs {
            legacy_db: Some("app.db".into()),
            ..ServeArgs::default()
        };
        let default = "the application's default".to_owned();
        assert_eq!(
            cove(follow.clone(), &[]),
            Some((false, 0.7, default.clone(), default.clone()))
        );
        // The app's .env file.
        let with_file = ServeArgs {
            legacy_env_file: Some(env_file.clone()),
            ..follow.clone()
        };
        let in_file = |key: &str| format!("{key} in {}", env_file.display());
        assert_eq!(
            cove(with_file.clone(), &[]),
            Some((
                true,
                0.85,
                in_file("ENABLE_COVE"),
                in_file("COVE_CONFIDENCE_THRESHOLD")
            ))
        );
        // The configuration file wins over the .env file, the environment over the
        // configuration file, a flag over everything.
        let configured = ServeArgs {
            config: Some(toml.clone()),
            ..with_file.clone()
        };
        let in_toml = |key: &str| format!("{key} in {}", toml.display());
        assert_eq!(
            cove(configured.clone(), &[]),
            Some((
                false,
                0.6,
                in_toml("cove_enabled"),
                in_toml("cove_threshold")
            ))
        );
        let vars = [
            ("REFLEXIO_BRIDGE_COVE_ENABLED", "on"),
            ("REFLEXIO_BRIDGE_COVE_THRESHOLD", "0.75"),
        ];
        assert_eq!(
            cove(configured.clone(), &vars),
            Some((
                true,
                0.75,
                "REFLEXIO_BRIDGE_COVE_ENABLED".into(),
                "REFLEXIO_BRIDGE_COVE_THRESHOLD".into()
            ))
        );
        let flags = ServeArgs {
            cove_enabled: Some("false".into()),
            cove_threshold: Some("0.9".into()),
            ..configured
        };
        assert_eq!(
            cove(flags, &vars),
            Some((
                false,
                0.9,
                "--cove-enabled".into(),
                "--cove-threshold".into()
            ))
        );
        // Outside follow mode a flag alone is recorded, with the app's other default.
        let alone = ServeArgs {
            cove_enabled: Some("true".into()),
            ..ServeArgs::default()
        };
        assert_eq!(
            cove(alone, &[]),
            Some((true, 0.7, "--cove-enabled".into(), default))
        );
        let c = resolve(with_file, &[]).expect("valid");
        assert_eq!(c.cove.env_file.as_deref(), Some(env_file.as_path()));
        assert!(c.legacy.is_some(), "the .env file is followed");
        let resolved = c.cove.resolve(c.cove_file.as_ref()).expect("configured");
        assert!(matches!(resolved.enabled_from, Origin::EnvFile(..)));
    }

    #[test]
    fn cove_settings_the_application_could_not_use_stop_the_bridge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env_file = dir.path().join(".env");
        std::fs::write(&env_file, "ENABLE_COVE=perhaps\n").expect("write");
        type Case<'a> = (ServeArgs, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                ServeArgs {
                    cove_enabled: Some("sometimes".into()),
                    ..ServeArgs::default()
                },
                vec![],
                "invalid --cove-enabled (on the command line): `sometimes` is not true or false",
            ),
            (
                ServeArgs::default(),
                vec![("REFLEXIO_BRIDGE_COVE_THRESHOLD", "1.2")],
                "invalid --cove-threshold (in REFLEXIO_BRIDGE_COVE_THRESHOLD): `1.2` is not a \
                 number from 0 to 1",
            ),
            (
                ServeArgs {
                    legacy_env_file: Some(env_file.clone()),
                    ..ServeArgs::default()
                },
                vec![],
                "invalid --legacy-env-file (on the command line): ENABLE_COVE=\"perhaps\" in ",
            ),
            (
                ServeArgs {
                    legacy_env_file: Some(dir.path().join("missing.env")),
                    ..ServeArgs::default()
                },
                vec![],
                "invalid --legacy-env-file (on the command line): cannot read ",
            ),
        ];
        for (args, vars, expected) in cases {
            let err = resolve(args, &vars).expect_err(expected);
            assert!(
                err.0.starts_with(expected),
                "{err}\ndoes not start with {expected}"
            );
        }
        // A key given elsewhere is not read from the file: its invalid value does not matter.
        let args = ServeArgs {
            legacy_env_file: Some(env_file),
            cove_enabled: Some("1".into()),
            ..ServeArgs::default()
        };
        assert!(resolve(args, &[]).is_ok());
    }

    #[test]
    fn lock_eviction_and_integrity_check_settings_come_from_flags_or_the_file() {
        let c = resolve(ServeArgs::default(), &[]).expect("valid");
        assert_eq!(
            (c.evict_locks_after, c.integrity_check_interval),
            (None, Duration::from_secs(60)),
            "the recorder's default eviction age, a check a minute"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            "evict_locks_after = \"6h\"\nintegrity_check_interval = \"10m\"\n",
        )
        .expect("write");
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let c = resolve(from_file.clone(), &[]).expect("valid");
        assert_eq!(
            (c.evict_locks_after, c.integrity_check_interval),
            (
                Some(Duration::from_secs(6 * 3600)),
                Duration::from_secs(600)
            )
        );
        let flags = ServeArgs {
            evict_locks_after: Some(Duration::from_secs(60)),
            integrity_check_interval: Some(Duration::from_secs(5)),
            ..from_file
        };
        let c = resolve(flags, &[]).expect("valid");
        assert_eq!(
            (c.evict_locks_after, c.integrity_check_interval),
            (Some(Duration::from_secs(60)), Duration::from_secs(5))
        );
        std::fs::write(&file, "integrity_check_interval = \"often\"\n").expect("write");
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        let err = resolve(args, &[]).expect_err("invalid");
        assert!(
            err.0.contains("invalid integrity_check_interval (in "),
            "{err}"
        );
    }

    #[test]
    fn tokens_are_trimmed_checked_and_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token\n").expect("write");
        let args = ServeArgs {
            auth_token_file: Some(path.clone()),
            listen: Some("0.0.0.0:9000".parse().expect("addr")),
            ..Default::default()
        };
        let c = resolve(args, &[]).expect("valid with a token");
        let token = c.token.clone().expect("token");
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-token\n"));
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(&path, "  \n").expect("write");
        let args = ServeArgs {
            auth_token_file: Some(path),
            ..Default::default()
        };
        assert!(resolve(args, &[]).is_err());
    }

    #[test]
    fn the_config_builds_the_recorder_on_its_store_with_the_declared_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = ServeArgs {
            store: Some(dir.path().join("m.db")),
            ..ServeArgs::default()
        };
        let config = resolve(args, &[]).expect("valid");
        assert_eq!(
            config.stale_lock_after,
            RecorderBuilder::DEFAULT_STALE_LOCK_AFTER
        );
        let recorder = config.recorder().expect("built");
        let tables: Vec<_> = recorder
            .snapshot()
            .retention_by_table
            .iter()
            .map(|(label, runs)| (label.clone(), runs.operations))
            .collect();
        let declared = RETENTION_TABLES.map(|t| {
            let name = reflexio_otel::Name::new(t).expect("valid");
            (reflexio_otel::TableLabel::Table(name), 0)
        });
        assert_eq!(tables, declared);
        assert!(recorder.store_health().is_some_and(|h| h.is_healthy()));
        recorder.shutdown().expect("closed");
    }

    #[test]
    fn otlp_transport_settings_follow_the_opentelemetry_variables() {
        let push = |vars: &[(&str, &str)]| {
            resolve(ServeArgs::default(), vars)
                .expect("valid")
                .otlp
                .expect("push")
        };
        let grpc = [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"), grpc[0]];
        let otlp = push(&base);
        // host:port over gRPC is TLS unless OTEL_EXPORTER_OTLP_INSECURE=true.
        assert_eq!(otlp.endpoint, "https://collector:4317");
        assert!(otlp.secure());
        assert_eq!(
            (otlp.compression, otlp.timeout),
            (Compression::None, DEFAULT_OTLP_TIMEOUT)
        );
        let otlp = push(&[
            base[0],
            base[1],
            ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]);
        assert_eq!(otlp.endpoint, "http://collector:4317");
        assert_eq!(
            otlp.compression,
            Compression::None,
            "the metrics variable wins"
        );
        assert_eq!(otlp.timeout, Duration::from_millis(2500));
        let otlp = push(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "Cumulative",
            ),
        ]);
        assert_eq!(otlp.compression, Compression::Gzip);
        assert!(otlp.tls.is_empty());

        // OTEL_SDK_DISABLED turns the push off; the other settings are still checked.
        let c = resolve(
            ServeArgs::default(),
            &[base[0], base[1], ("OTEL_SDK_DISABLED", "true")],
        )
        .expect("valid");
        assert!(c.otlp.is_none() && c.otlp_disabled);
        assert!(
            resolve(
                ServeArgs::default(),
                &[
                    base[0],
                    ("OTEL_SDK_DISABLED", "true"),
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
                ],
            )
            .is_err()
        );
    }

    #[test]
    fn otlp_certificates_are_read_and_checked_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.to_str().expect("utf-8").to_owned()
        };
        let (ca, client, client_key, junk) = (
            write("ca.pem", cert),
            write("client.pem", cert),
            write("client-key.pem", key),
            write("junk.pem", "not a certificate\n"),
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318");
        let otlp = resolve(
            ServeArgs::default(),
            &[
                endpoint,
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &junk),
                ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", &ca),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &client),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &client_key),
            ],
        )
        .expect("valid")
        .otlp
        .expect("push");
        assert_eq!(
            otlp.tls.ca.as_ref().map(|c| c.pem.as_slice()),
            Some(cert.as_bytes())
        );
        let (c, k) = otlp.tls.client.as_ref().expect("client certificate");
        assert_eq!(
            (c.pem.as_slice(), k.pem.as_slice()),
            (cert.as_bytes(), key.as_bytes())
        );
        assert!(
            !format!("{otlp:?}").contains("PRIVATE KEY"),
            "a key in Debug"
        );

        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_CERTIFICATE", &junk)],
                "invalid --otlp-certificate (in OTEL_EXPORTER_OTLP_CERTIFICATE): ",
            ),
            (
                vec![
                    endpoint,
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
                ],
                "invalid --otlp-certificate (in OTEL_EXPORTER_OTLP_CERTIFICATE): cannot read",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &client)],
                "invalid --otlp-client-certificate (in OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE): \
                 a client certificate needs its private key",
            ),
            (
                vec![
                    endpoint,
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &client),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &ca),
                ],
                "invalid --otlp-client-key (in OTEL_EXPORTER_OTLP_CLIENT_KEY): ",
            ),
            (
                vec![
                    endpoint,
                    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
                ],
                "invalid OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=`delta`",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0")],
                "invalid the OTLP timeout (in OTEL_EXPORTER_OTLP_METRICS_TIMEOUT)",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
                "invalid --otlp-compression (in OTEL_EXPORTER_OTLP_COMPRESSION): `zstd`",
            ),
            (
                vec![endpoint, ("OTEL_SDK_DISABLED", "1")],
                "invalid OTEL_SDK_DISABLED",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_INSECURE", "yes"),
                ],
                "invalid OTEL_EXPORTER_OTLP_INSECURE",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")],
                "invalid --otlp-endpoint (in OTEL_EXPORTER_OTLP_ENDPOINT)",
            ),
        ];
        for (vars, expected) in cases {
            let err = resolve(ServeArgs::default(), &vars).expect_err(expected);
            assert!(
                err.0.starts_with(expected),
                "{err} does not start with {expected}"
            );
        }
        // Without an endpoint nothing OTLP is read: no push, nothing to refuse.
        let c = resolve(
            ServeArgs::default(),
            &[("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")],
        )
        .expect("valid");
        assert!(c.otlp.is_none());
    }

    #[test]
    fn a_missing_token_file_is_created_once_when_asked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let args = |create: bool, check: bool| ServeArgs {
            auth_token_file: Some(path.clone()),
            auth_token_create: create,
            check_config: check,
            listen: Some("0.0.0.0:8000".parse().expect("addr")),
            ..Default::default()
        };
        assert!(
            resolve(args(false, false), &[]).is_err(),
            "not created unasked"
        );
        assert!(resolve(args(true, true), &[]).is_ok(), "the check passes");
        assert!(!path.exists(), "the check creates nothing");
        let c = resolve(args(true, false), &[]).expect("created");
        let text = std::fs::read_to_string(&path).expect("token");
        assert_eq!(text.trim().len(), 64);
        assert!(c.token.expect("token").matches(text.trim().as_bytes()));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = resolve(args(true, false), &[]).expect("read");
        assert!(
            again.token.expect("token").matches(text.trim().as_bytes()),
            "kept"
        );
        let elsewhere = ServeArgs {
            auth_token_file: Some(dir.path().join("missing/dir/token")),
            auth_token_create: true,
            ..Default::default()
        };
        let e = resolve(elsewhere, &[]).expect_err("cannot create");
        assert!(e.0.contains("cannot create"), "{e}");
    }

    #[test]
    fn weak_tokens_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let warnings = |text: &str, mode: u32| {
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let args = ServeArgs {
                auth_token_file: Some(path.clone()),
                ..Default::default()
            };
            resolve(args, &[]).expect("valid").warnings
        };
        assert!(warnings(&"k".repeat(MIN_TOKEN_LEN), 0o600).is_empty());
        let w = warnings("short\n", 0o600);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("5 bytes, shorter than 16"), "{w:?}");
        assert!(!w[0].contains("short\n"), "the token is in {w:?}");
        let w = warnings(&"k".repeat(32), 0o644);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("readable by every user (mode 644)"), "{w:?}");
        assert_eq!(warnings("short", 0o604).len(), 2);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("100000"), Ok(100_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2TiB").is_err());
        assert!(parse_size("-5").is_err());
    }
}
