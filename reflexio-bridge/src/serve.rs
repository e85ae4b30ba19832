//! `serve`: the recorder on its store, the HTTP server, the OTLP push, the demo workload and the
//! legacy poller, started together and stopped gracefully on SIGTERM or SIGINT.

use crate::cli::ServeArgs;
use crate::config::Config;
use crate::http_layer::{Connection, Refusals};
use crate::telemetry::Telemetry;
use crate::{demo, http, legacy, limits};
use actix_service::{ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, web};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// The longest a graceful stop waits for requests in flight (a body is cut at `--body-timeout`
/// before that; a write to a busy store may take longer).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request's head may take to arrive, and an idle connection may stay open.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(args, |var| std::env::var(var).ok())?;
    log_settings(&config);
    // Before the store is opened: a write past the file size limit must fail, not kill.
    limits::watch_file_size_signal()?;
    let recorder = config.recorder()?;
    if let Some(e) = recorder.store_health().and_then(|h| h.last_error) {
        tracing::error!(error = %e, "serving from memory until the store can be written");
    }
    // Built before any async runtime starts: the OTLP/HTTP client blocks. The recorder's store
    // keeps the bridge's service.instance.id.
    let telemetry = Telemetry::new(config.otlp.as_ref(), &recorder)?;
    recorder.register(&telemetry.meter());
    let demo = if config.demo {
        Some(demo::Demo::start(recorder.clone())?)
    } else {
        None
    };
    let cove = legacy::CoveWatch::start(config.cove.clone(), config.cove_file, &recorder);
    let poller = match &config.legacy {
        Some(settings) => {
            let stats = Arc::new(legacy::LegacyStats::default());
            stats.register(&telemetry.meter(), settings);
            Some(legacy::Poller::start(
                settings.clone(),
                recorder.clone(),
                stats,
                Some(cove),
            )?)
        }
        None => None,
    };

    let state = web::Data::new(http::AppState {
        recorder: recorder.clone(),
        registry: telemetry.registry.clone(),
        token: config.token.clone(),
        public_metrics: config.public_metrics,
        body_limit: config.body_limit,
        body_timeout: config.body_timeout,
        bodies: Arc::new(tokio::sync::Semaphore::new(config.max_ingest_bodies)),
        max_bodies: config.max_ingest_bodies,
        stats: telemetry.stats.clone(),
    });
    let refusals = Arc::new(Refusals::new(telemetry.stats.clone()));
    actix_web::rt::System::new().block_on(serve(&config, state, refusals))?;

    // Requests in flight are done; write what is left and push a last time.
    drop(demo);
    drop(poller);
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
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        body_limit = config.body_limit,
        body_timeout = %humantime::format_duration(config.body_timeout),
        max_ingest_bodies = config.max_ingest_bodies,
        "ingest bodies: largest accepted (bytes), time to arrive, how many read at once"
    );
    if let Some(limit) = limits::file_size_limit() {
        tracing::info!(
            limit,
            "file size limit (RLIMIT_FSIZE): the store is full when it reaches it"
        );
    }
    tracing::info!(stale_lock_after = %humantime::format_duration(config.stale_lock_after), "stale lock threshold");
    match config.evict_locks_after {
        Some(after) => {
            tracing::info!(evict_locks_after = %humantime::format_duration(after), "locks of holders not known to be alive are evicted after")
        }
        None => tracing::info!(
            "locks of holders not known to be alive are evicted after 24 times the stale lock threshold"
        ),
    }
    tracing::info!(integrity_check_interval = %humantime::format_duration(config.integrity_check_interval), "store integrity check interval");
    match &config.otlp {
        Some(o) => {
            tracing::info!(
                endpoint = %o.endpoint,
                protocol = o.protocol.as_str(),
                interval = %humantime::format_duration(o.interval),
                timeout = %humantime::format_duration(o.timeout),
                compression = o.compression.as_str(),
                "OTLP push"
            );
            match (&o.tls.ca, &o.tls.client) {
                _ if !o.secure() && !o.tls.is_empty() => {
                    tracing::warn!("OTLP certificate settings unused: the endpoint is not https://")
                }
                _ if !o.secure() => {}
                (ca, client) => tracing::info!(
                    ca = %ca.as_ref().map_or("the system's".into(), |c| c.path.display().to_string()),
                    client_certificate = %client.as_ref().map_or("none".into(), |(c, _)| c.path.display().to_string()),
                    "OTLP over TLS"
                ),
            }
        }
        None if config.otlp_disabled => tracing::info!(
            "OTLP push off (OTEL_SDK_DISABLED=true); /metrics/prometheus serves as usual"
        ),
        None => tracing::info!("OTLP push off (no endpoint configured)"),
    }
    if config.demo {
        tracing::info!("demo workload on");
    }
    if let Some(legacy) = &config.legacy {
        if let Some(db) = &legacy.db {
            tracing::info!(db = %db.display(), zone = legacy.zone.iana_name().unwrap_or("(system)"), "following an application database (read-only)");
        }
        if let Some(dir) = &legacy.lock_dir {
            let names = if legacy.lock_names.is_any() {
                "every .pid file".to_owned()
            } else {
                legacy.lock_names.patterns().join(",")
            };
            tracing::info!(dir = %dir.display(), names = %names, "following a lock directory");
        }
        if let Some(file) = &config.cove.env_file {
            tracing::info!(file = %file.display(), "following the application's .env file (ENABLE_COVE, COVE_CONFIDENCE_THRESHOLD)");
        }
        tracing::info!(poll_interval = %humantime::format_duration(legacy.poll_interval), "legacy poll interval");
    }
}

async fn serve(
    config: &Config,
    state: web::Data<http::AppState>,
    refusals: Arc<Refusals>,
) -> anyhow::Result<()> {
    // Before anything announces the server: a signal arriving earlier must stop it gracefully.
    let stop = stop_signal()?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("the listening address")?;
    let mut builder = actix_server::Server::build();
    let draining = builder.graceful_shutdown_signal();
    // The HTTP/1.1 server of actix-web's `HttpServer`, over connections that give the HTTP
    // layer's own refusals a JSON body.
    builder = builder
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
        .listen("reflexio-bridge", listener, move || {
            let app = App::new()
                .app_data(state.clone())
                .route("/metrics/prometheus", web::get().to(http::metrics))
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(http::readyz))
                .route("/v1/events", web::post().to(http::ingest))
                .default_service(web::to(http::not_found));
            let draining = draining.clone();
            let http = actix_http::HttpService::build()
                .client_request_timeout(HEAD_TIMEOUT)
                .keep_alive(HEAD_TIMEOUT)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let draining = draining.clone();
                    async move { draining.notified().await }
                })
                .h1(map_config(app, |_| AppConfig::default()));
            let refusals = Arc::clone(&refusals);
            fn_service(move |io: actix_web::rt::net::TcpStream| {
                let refusals = Arc::clone(&refusals);
                async move {
                    let peer = io.peer_addr().ok();
                    Ok::<_, actix_http::error::DispatchError>((
                        Connection::new(io, peer, refusals),
                        peer,
                    ))
                }
            })
            .and_then(http)
        })
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(%addr, "listening");
    let server = builder.run();
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
