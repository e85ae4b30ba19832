//! `reflexio-bridge`: serves Reflexio metrics to Prometheus (`/metrics/prometheus`) and
//! OpenTelemetry collectors (OTLP push), takes events from applications in any language over
//! HTTP (`POST /v1/events`), committing them to a SQLite store before acknowledging them, and
//! follows existing deployments that do not send events: their database and lock directory.
//!
//! - `cli`: the command line, as clap parses it;
//! - `config`: flags, environment and configuration file merged into one validated `Config`;
//! - `serve`: the `serve` command, everything started and stopped together;
//! - `import`: the `import` command, a one-shot backfill from an existing deployment;
//! - `telemetry`: the meter provider, with the Prometheus exporter and the OTLP push;
//! - `http`: the endpoints;
//! - `http_layer`: the HTTP layer's own refusals, with JSON bodies, counted and rate-limited in
//!   the log;
//! - `answer`: the JSON body of every error;
//! - `ingest`: the wire format of events;
//! - `limits`: process limits (the file size limit);
//! - [`legacy`]: reading an existing deployment's database and lock directory;
//! - `demo`: the `--demo` workload.

mod answer;
mod cli;
mod config;
mod demo;
mod http;
mod http_layer;
mod import;
mod ingest;
pub mod legacy;
mod limits;
mod serve;
mod telemetry;

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

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .finish()
        .with(http_layer::QuietActix)
        .init();
}
