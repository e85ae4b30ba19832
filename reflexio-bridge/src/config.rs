//! The bridge's settings: flags, environment and configuration file merged into one validated
//! [`Config`] before anything starts. Every error names the setting and where its value came
//! from.

use crate::cli::ServeArgs;
use crate::legacy::LegacySettings;
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

/// Where OTLP pushes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Otlp {
    /// The full URL: for http/protobuf, including `/v1/metrics`.
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
    pub(crate) interval: Duration,
}

/// The bearer token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(Box<[u8]>);

impl Token {
    pub(crate) fn matches(&self, offered: &[u8]) -> bool {
        constant_time_eq::constant_time_eq(&self.0, offered)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) store: PathBuf,
    pub(crate) flush_interval: Duration,
    pub(crate) demo: bool,
    pub(crate) token: Option<Token>,
    pub(crate) public_metrics: bool,
    pub(crate) insecure_no_auth: bool,
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) max_ingest_bodies: usize,
    pub(crate) stale_lock_after: Duration,
    pub(crate) otlp: Option<Otlp>,
    /// What to follow of an existing deployment, if anything.
    pub(crate) legacy: Option<LegacySettings>,
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
    public_metrics: Option<bool>,
    insecure_no_auth: Option<bool>,
    body_limit: Option<toml::Value>,
    body_timeout: Option<String>,
    max_ingest_bodies: Option<toml::Value>,
    stale_lock_after: Option<String>,
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<String>,
    otlp_interval: Option<String>,
    legacy_db: Option<PathBuf>,
    lock_dir: Option<PathBuf>,
    legacy_tz: Option<String>,
    legacy_poll_interval: Option<String>,
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
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_INGEST_BODIES: usize = 32;
const MAX_MAX_INGEST_BODIES: usize = 65_536;
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

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 15s, 500ms or 1h: {e}"))?;
    if d.is_zero() {
        return Err("it must be longer than zero".into());
    }
    Ok(d)
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
        let legacy = Self::legacy(&args, &file, fp)?;

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
                .unwrap_or(Duration::from_secs(3600)),
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

        let (token, warnings) = match (&args.auth_token_file, &file.auth_token_file) {
            (Some(path), _) => read_token(path)
                .map(|(t, w)| (Some(t), w))
                .map_err(|e| invalid("--auth-token-file", Source::Flag, e))?,
            (None, Some(path)) => read_token(path)
                .map(|(t, w)| (Some(t), w))
                .map_err(|e| invalid("auth_token_file", Source::File(fp), e))?,
            (None, None) => (None, Vec::new()),
        };
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
            public_metrics,
            insecure_no_auth,
            body_limit,
            body_timeout,
            max_ingest_bodies,
            stale_lock_after,
            otlp,
            legacy,
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
        if db.is_none() && lock_dir.is_none() {
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
            zone,
            poll_interval,
        }))
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
        Ok(Some(Otlp {
            endpoint,
            protocol,
            interval,
        }))
    }
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
