//! The command line, as clap parses it: raw values, not yet merged with the environment's
//! OpenTelemetry variables and the configuration file (see `config`). Imports nothing from the
//! rest of the bridge.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Serves Reflexio metrics to Prometheus (`/metrics`, the same at `/metrics/prometheus`) and
/// OpenTelemetry collectors (OTLP push), and takes events from applications over HTTP
/// (`POST /v1/events`).
///
/// Settings come from flags, then environment variables, then the configuration file
/// (`--config`), then defaults: a flag wins over the environment, the environment over the file.
#[derive(Debug, Parser)]
#[command(
    name = "reflexio-bridge",
    version,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve metrics and take events (the default).
    Serve(Box<ServeArgs>),
    /// Backfill the store from an existing deployment's database and exit: every row counts in
    /// the totals, the last 7 days also in the windows. Idempotent: rows already read, by this
    /// command or by a running bridge, count once.
    Import(ImportArgs),
}

#[derive(Debug, Default, Clone, Args)]
pub(crate) struct ImportArgs {
    /// A TOML file with settings (the same as serve's; store, legacy_db and legacy_tz apply).
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// The application's SQLite database (required, here or in the configuration).
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_LEGACY_DB")]
    pub(crate) legacy_db: Option<PathBuf>,

    /// The store to fill [default: ./reflexio-metrics.db].
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_STORE")]
    pub(crate) store: Option<PathBuf>,

    /// The time zone of times the application wrote without an offset, such as Europe/Berlin
    /// [default: the system's].
    #[arg(long, value_name = "ZONE", env = "REFLEXIO_BRIDGE_LEGACY_TZ")]
    pub(crate) legacy_tz: Option<String>,
}

impl From<ImportArgs> for ServeArgs {
    fn from(a: ImportArgs) -> Self {
        ServeArgs {
            config: a.config,
            legacy_db: a.legacy_db,
            store: a.store,
            legacy_tz: a.legacy_tz,
            ..ServeArgs::default()
        }
    }
}

#[derive(Debug, Default, Clone, Args)]
pub(crate) struct ServeArgs {
    /// A TOML file with any of the settings below (keys: listen, store, flush_interval, demo,
    /// auth_token_file, auth_token_create, web_config_file, public_metrics, insecure_no_auth, body_limit, body_timeout,
    /// max_ingest_bodies, stale_lock_after, otlp_endpoint, otlp_protocol, otlp_interval,
    /// otlp_compression, otlp_certificate, otlp_client_certificate, otlp_client_key, legacy_db,
    /// lock_dir, lock_names, legacy_tz, legacy_poll_interval, legacy_env_file, cove_enabled,
    /// cove_threshold, evict_locks_after, integrity_check_interval, idempotency_window,
    /// idempotency_max_keys).
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8000]. A non-loopback address needs
    /// --auth-token-file (or --insecure-no-auth). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR", env = "REFLEXIO_BRIDGE_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,

    /// The SQLite store holding windows and totals [default: ./reflexio-metrics.db].
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_STORE")]
    pub(crate) store: Option<PathBuf>,

    /// How often events recorded without the durable path are written to the store
    /// [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "REFLEXIO_BRIDGE_FLUSH_INTERVAL")]
    pub(crate) flush_interval: Option<Duration>,

    /// Emit a built-in demo workload, so that every metric moves at once.
    #[arg(long, env = "REFLEXIO_BRIDGE_DEMO")]
    pub(crate) demo: bool,

    /// A file holding the bearer token that clients must send (`Authorization: Bearer ...`).
    /// Ingest always needs it once set; scraping too, unless --public-metrics.
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_AUTH_TOKEN_FILE")]
    pub(crate) auth_token_file: Option<PathBuf>,

    /// With --auth-token-file: if the file does not exist, create it (mode 600) holding a new
    /// random token (256 bits, hex), and use it. The container image starts this way.
    #[arg(long, env = "REFLEXIO_BRIDGE_AUTH_TOKEN_CREATE")]
    pub(crate) auth_token_create: bool,

    /// Check the settings (and the files they name) and exit: 0 if the bridge would start,
    /// 2 with the reason if not. Nothing is created, opened for writing or listened on.
    #[arg(long)]
    pub(crate) check_config: bool,

    /// A web configuration file in the format of Prometheus' exporter-toolkit
    /// (`--web.config.file`): `tls_server_config` (HTTPS, client certificates),
    /// `basic_auth_users` (bcrypt), `http_server_config.headers` and `rate_limit`. Reloaded when
    /// it or its certificate files change [env: REFLEXIO_BRIDGE_WEB_CONFIG_FILE].
    #[arg(long, value_name = "PATH")]
    pub(crate) web_config_file: Option<PathBuf>,

    /// Serve /metrics, /metrics/prometheus and the landing page to anyone: no token, no basic
    /// auth.
    #[arg(long, env = "REFLEXIO_BRIDGE_PUBLIC_METRICS")]
    pub(crate) public_metrics: bool,

    /// Allow listening on a non-loopback address without a token.
    #[arg(long, env = "REFLEXIO_BRIDGE_INSECURE_NO_AUTH")]
    pub(crate) insecure_no_auth: bool,

    /// Largest accepted request body, such as 1MiB, 512KiB or 100000 [default: 1MiB].
    #[arg(long, value_name = "SIZE", env = "REFLEXIO_BRIDGE_BODY_LIMIT")]
    pub(crate) body_limit: Option<String>,

    /// How long an ingest body may take to arrive once the bridge starts reading it; a slower
    /// one is answered 408 and nothing of it is recorded [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "REFLEXIO_BRIDGE_BODY_TIMEOUT")]
    pub(crate) body_timeout: Option<Duration>,

    /// How many ingest bodies may be read and recorded at once; a request finding none free
    /// is answered 503 with Retry-After at once [default: 32].
    #[arg(long, value_name = "N", env = "REFLEXIO_BRIDGE_MAX_INGEST_BODIES")]
    pub(crate) max_ingest_bodies: Option<String>,

    /// How long a process lock may be held before it counts as stale [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "REFLEXIO_BRIDGE_STALE_LOCK_AFTER")]
    pub(crate) stale_lock_after: Option<Duration>,

    /// Push metrics over OTLP to this collector. For http/protobuf, `/v1/metrics` is appended
    /// unless the URL already ends with it [env: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (used as
    /// is), OTEL_EXPORTER_OTLP_ENDPOINT]. No push without an endpoint.
    #[arg(long, value_name = "URL")]
    pub(crate) otlp_endpoint: Option<String>,

    /// OTLP transport: grpc or http/protobuf [default: http/protobuf; env:
    /// OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL].
    #[arg(long, value_name = "PROTOCOL")]
    pub(crate) otlp_protocol: Option<String>,

    /// Time between OTLP pushes [default: 15s; env: OTEL_METRIC_EXPORT_INTERVAL, in ms]. The
    /// push timeout is OTEL_EXPORTER_OTLP_TIMEOUT (default 10s); headers come from
    /// OTEL_EXPORTER_OTLP_HEADERS, the resource from OTEL_SERVICE_NAME and
    /// OTEL_RESOURCE_ATTRIBUTES. OTEL_SDK_DISABLED=true turns the push off.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) otlp_interval: Option<Duration>,

    /// Compress OTLP pushes: gzip or none [default: none; env:
    /// OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION].
    #[arg(long, value_name = "ALGORITHM")]
    pub(crate) otlp_compression: Option<String>,

    /// PEM file of the CA certificates that verify an https:// collector, instead of the
    /// system's [env: OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE].
    #[arg(long, value_name = "PATH")]
    pub(crate) otlp_certificate: Option<PathBuf>,

    /// PEM file of the client certificate (chain) the bridge shows an https:// collector that
    /// asks for one (mTLS); needs --otlp-client-key [env:
    /// OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE].
    #[arg(long, value_name = "PATH")]
    pub(crate) otlp_client_certificate: Option<PathBuf>,

    /// PEM file of the client certificate's private key [env:
    /// OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY, OTEL_EXPORTER_OTLP_CLIENT_KEY].
    #[arg(long, value_name = "PATH")]
    pub(crate) otlp_client_key: Option<PathBuf>,

    /// Follow an existing Reflexio deployment's SQLite database: read-only, reading only new
    /// rows each poll. The first poll counts every row in the totals, and its last 7 days in
    /// the windows.
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_LEGACY_DB")]
    pub(crate) legacy_db: Option<PathBuf>,

    /// Follow an existing deployment's lock directory: a file `{name}.pid` holding a process
    /// id is a held lock.
    #[arg(long, value_name = "DIR", env = "REFLEXIO_BRIDGE_LOCK_DIR")]
    pub(crate) lock_dir: Option<PathBuf>,

    /// The application's lock names in --lock-dir, or globs of them (`*`, `?`, `[a-z]`),
    /// comma-separated or repeated: only their `{name}.pid` files are locks. Reflexio's is
    /// `daily_digest`. Required when --lock-dir is a shared directory (/tmp, /var/tmp, /run,
    /// /dev/shm) [default: every .pid file].
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        env = "REFLEXIO_BRIDGE_LOCK_NAMES"
    )]
    pub(crate) lock_names: Vec<String>,

    /// The time zone of times the application wrote without an offset, such as Europe/Berlin
    /// [default: the system's].
    #[arg(long, value_name = "ZONE", env = "REFLEXIO_BRIDGE_LEGACY_TZ")]
    pub(crate) legacy_tz: Option<String>,

    /// The application's `.env` file: its ENABLE_COVE and COVE_CONFIDENCE_THRESHOLD are read as
    /// the application reads them, and again whenever the file changes.
    #[arg(long, value_name = "PATH", env = "REFLEXIO_BRIDGE_LEGACY_ENV_FILE")]
    pub(crate) legacy_env_file: Option<PathBuf>,

    /// Whether the application runs CoVe: true or false (also 1/0, yes/no, on/off); alone, true.
    /// Wins over --legacy-env-file [env: REFLEXIO_BRIDGE_COVE_ENABLED; default with --legacy-db:
    /// the application's, false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) cove_enabled: Option<String>,

    /// The application's CoVe confidence threshold, in [0, 1]. Wins over --legacy-env-file
    /// [env: REFLEXIO_BRIDGE_COVE_THRESHOLD; default with --legacy-db: the application's, 0.7].
    #[arg(long, value_name = "FRACTION")]
    pub(crate) cove_threshold: Option<String>,

    /// Time between polls of --legacy-db, --lock-dir and --legacy-env-file [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "REFLEXIO_BRIDGE_LEGACY_POLL_INTERVAL")]
    pub(crate) legacy_poll_interval: Option<Duration>,

    /// How long a lock whose holder is not known to be alive (no pid and host, another host,
    /// or a process of this host that is gone) is kept before it is evicted [default: 24 times
    /// --stale-lock-after].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "REFLEXIO_BRIDGE_EVICT_LOCKS_AFTER")]
    pub(crate) evict_locks_after: Option<Duration>,

    /// How often the store's file is checked for damage (SQLite's quick_check, off the ingest
    /// path) [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "REFLEXIO_BRIDGE_INTEGRITY_CHECK_INTERVAL")]
    pub(crate) integrity_check_interval: Option<Duration>,

    /// How long the Idempotency-Key of an ingested batch is kept: the same key sent again
    /// within it is answered with the original result and records nothing [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "REFLEXIO_BRIDGE_IDEMPOTENCY_WINDOW")]
    pub(crate) idempotency_window: Option<Duration>,

    /// The most Idempotency-Keys kept (about 150 bytes of store each); past it the oldest are
    /// forgotten first, even within the window [default: 100000].
    #[arg(long, value_name = "N", env = "REFLEXIO_BRIDGE_IDEMPOTENCY_MAX_KEYS")]
    pub(crate) idempotency_max_keys: Option<String>,
}

/// Parses a duration such as `15s`, `500ms` or `1h`, longer than zero (flags, environment and the
/// configuration file alike).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 15s, 500ms or 1h: {e}"))?;
    if d.is_zero() {
        return Err("it must be longer than zero".into());
    }
    Ok(d)
}
