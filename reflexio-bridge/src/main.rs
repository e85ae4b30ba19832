//! `reflexio-bridge`: serves Reflexio metrics to Prometheus (`/metrics/prometheus`) and
//! OpenTelemetry collectors (OTLP push), and takes events from applications in any language
//! over HTTP (`POST /v1/events`), committing them to a SQLite store before acknowledging them.
//!
//! - `cli`: the command line, as clap parses it;
//! - `config`: flags, environment and configuration file merged into one validated `Config`;
//! - `telemetry`: the meter provider, with the Prometheus exporter and the OTLP push;
//! - `http`: the endpoints;
//! - `ingest`: the wire format of events;
//! - `demo`: the `--demo` workload.

mod cli;
mod config;
mod demo;
mod http;
mod ingest;
mod telemetry;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use config::{Config, UsageError};
use reflexio_otel::{Recorder, StoreOptions};
use std::process::ExitCode;
use telemetry::Telemetry;

/// The tables Reflexio's retention jobs clean.
const RETENTION_TABLES: [&str; 3] = ["transcriptions", "facts", "digests"];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    init_logging();
    match run(args) {
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn run(args: cli::ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(args, |var| std::env::var(var).ok())?;
    log_settings(&config);
    // Built before any async runtime starts: the OTLP/HTTP client blocks.
    let telemetry = Telemetry::new(config.otlp.as_ref())?;
    let recorder = Recorder::builder()
        // The tables Reflexio's retention jobs clean: their series exist before any run, so
        // alerts see even the first failed one.
        .tables(RETENTION_TABLES)?
        .stale_lock_after(config.stale_lock_after)
        .store(StoreOptions::new(&config.store).flush_interval(config.flush_interval))
        .build();
    if let Some(e) = recorder.store_health().and_then(|h| h.last_error) {
        tracing::error!(error = %e, "serving from memory until the store can be written");
    }
    recorder.register(&telemetry.meter());
    let demo = if config.demo {
        Some(demo::Demo::start(recorder.clone())?)
    } else {
        None
    };

    let state = web::Data::new(http::AppState {
        recorder: recorder.clone(),
        registry: telemetry.registry.clone(),
        token: config.token.clone(),
        public_metrics: config.public_metrics,
        body_limit: config.body_limit,
        stats: telemetry.stats.clone(),
    });
    actix_web::rt::System::new().block_on(serve(&config, state))?;

    // Requests in flight are done; write what is left and push a last time.
    drop(demo);
    match recorder.shutdown() {
        Ok(()) => tracing::info!("store flushed"),
        Err(e) => tracing::error!(error = %e, "the final write to the store failed"),
    }
    telemetry.shutdown();
    tracing::info!("stopped");
    Ok(())
}

fn log_settings(config: &Config) {
    tracing::info!(store = %config.store.display(), flush_interval = %humantime::format_duration(config.flush_interval), "store");
    match (&config.token, config.public_metrics) {
        (Some(_), false) => tracing::info!("bearer token required for ingest and scraping"),
        (Some(_), true) => tracing::info!("bearer token required for ingest; scraping is public"),
        (None, _) if config.insecure_no_auth => {
            tracing::warn!("no authentication (--insecure-no-auth)")
        }
        (None, _) => tracing::info!("no authentication (loopback only)"),
    }
    tracing::info!(
        body_limit = config.body_limit,
        "largest accepted ingest body, in bytes"
    );
    tracing::info!(stale_lock_after = %humantime::format_duration(config.stale_lock_after), "stale lock threshold");
    match &config.otlp {
        Some(o) => tracing::info!(
            endpoint = %o.endpoint,
            protocol = o.protocol.as_str(),
            interval = %humantime::format_duration(o.interval),
            "OTLP push"
        ),
        None => tracing::info!("OTLP push off (no endpoint configured)"),
    }
    if config.demo {
        tracing::info!("demo workload on");
    }
}

async fn serve(config: &Config, state: web::Data<http::AppState>) -> anyhow::Result<()> {
    // Before anything announces the server: a signal arriving earlier must stop it gracefully.
    let stop = stop_signal()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics/prometheus", web::get().to(http::metrics))
            .route("/healthz", web::get().to(http::healthz))
            .route("/readyz", web::get().to(http::readyz))
            .route("/v1/events", web::post().to(http::ingest))
            .default_service(web::to(http::not_found))
    })
    .disable_signals()
    .shutdown_timeout(30)
    .bind(config.listen)
    .with_context(|| format!("cannot listen on {}", config.listen))?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
    }
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let signal = stop.await;
        tracing::info!(
            signal,
            "stopping: refusing new connections, finishing requests in flight"
        );
        handle.stop(true).await;
    });
    server.await.context("the HTTP server failed")
}

/// Listens for SIGTERM and SIGINT now; the future resolves when one arrives.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
