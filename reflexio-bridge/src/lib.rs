//! `reflexio-bridge`: serves Reflexio metrics to Prometheus (`/metrics`, also at
//! `/metrics/prometheus`; over HTTPS with basic auth from a web configuration file) and
//! OpenTelemetry collectors (OTLP push), with an HTML landing page at `/`; takes events from
//! applications in any language over HTTP (`POST /v1/events`), committing them to a SQLite store
//! before acknowledging them; and follows existing deployments that do not send events: their
//! database and lock directory.
//!
//! - `cli`: the command line, as clap parses it;
//! - `config`: flags, environment and configuration file merged into one validated `Config`;
//! - `serve`: the `serve` command, everything started and stopped together;
//! - `import`: the `import` command, a one-shot backfill from an existing deployment;
//! - `telemetry`: the meter provider, with the Prometheus exporter and the OTLP push;
//! - `web_config`: the web configuration file (`--web-config-file`, exporter-toolkit's format);
//! - `web`: the web configuration in force, reloaded when its files change; rate limit, headers;
//! - `tls`: the HTTPS listener's rustls configuration and connections;
//! - `auth`: the bearer token and basic-auth users, and what each may call;
//! - `http`: the endpoints;
//! - `compression`: gzip answers (`Accept-Encoding`) and gzip request bodies;
//! - `landing`: the HTML landing page at `/`;
//! - `http_layer`: the HTTP layer's own refusals, with JSON bodies, counted and rate-limited in
//!   the log;
//! - `answer`: the JSON body of every error;
//! - `pem`: certificates and keys read from PEM text (TLS of the OTLP push and of the listener);
//! - `ingest`: the wire format of events;
//! - `limits`: process limits (the file size limit);
//! - `process`: the `process_*` metrics of the scrape;
//! - [`legacy`]: reading an existing deployment's database and lock directory;
//! - `demo`: the `--demo` workload;
//! - `worker`: the background thread that `demo`, the legacy poller and the web configuration
//!   watcher run in.

mod answer;
mod auth;
mod cli;
mod compression;
mod config;
mod demo;
mod http;
mod http_layer;
mod import;
mod ingest;
mod landing;
pub mod legacy;
mod limits;
mod pem;
mod process;
mod serve;
mod telemetry;
mod tls;
mod web;
mod web_config;
mod worker;

use clap::Parser;
use cli::{Cli, Command};
use config::UsageError;
use std::process::ExitCode;

/// Runs the command line: parses it, runs the command, and turns the outcome into an exit code
/// (2 for an unusable setting).
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve::run(*args),
        Some(Command::Import(args)) => import::run(args),
        None => serve::run(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<UsageError>() => {
            eprintln!("reflexio-bridge: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "reflexio-bridge failed");
            eprintln!("reflexio-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log's timestamps: read from the clock the recorder uses (its coarse real-time clock), so
/// that the log, the recorder and the legacy follower never disagree about when something
/// happened. RFC 3339 in UTC, to the microsecond.
struct LogTime<C>(C);

impl<C: reflexio_otel::Clock> tracing_subscriber::fmt::time::FormatTime for LogTime<C> {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match jiff::Timestamp::try_from(self.0.now()) {
            Ok(t) => write!(w, "{t:.6}"),
            Err(_) => w.write_str("(the clock is out of range)"),
        }
    }
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_new(&rust_log)
        .ok()
        .filter(|_| !rust_log.trim().is_empty())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    if !telemetry::sdk_logs_shown(&rust_log)
        && let Ok(off) = telemetry::SDK_LOGS_OFF.parse()
    {
        filter = filter.add_directive(off);
    }
    tracing_subscriber::fmt()
        .with_timer(LogTime(reflexio_otel::SystemClock))
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .finish()
        .with(http_layer::QuietActix)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflexio_otel::ManualClock;
    use std::time::{Duration, UNIX_EPOCH};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;

    #[test]
    fn log_lines_are_stamped_by_the_clock_given() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_millis(1_767_225_600_250));
        let mut line = String::new();
        LogTime(clock.clone())
            .format_time(&mut Writer::new(&mut line))
            .expect("formatted");
        assert_eq!(line, "2026-01-01T00:00:00.250000Z");
        clock.advance(Duration::from_secs(90));
        line.clear();
        LogTime(clock)
            .format_time(&mut Writer::new(&mut line))
            .expect("formatted");
        assert_eq!(line, "2026-01-01T00:01:30.250000Z");
    }
}
