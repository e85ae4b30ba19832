//! `serve`: the recorder on its store, the HTTP server, the OTLP push, the demo workload and the
//! legacy poller, started together and stopped gracefully on SIGTERM or SIGINT.

use crate::auth::Auth;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::http_layer::{Connection, Refusals};
use crate::telemetry::Telemetry;
use crate::tls::{AcceptError, Acceptor, Stream};
use crate::web::Web;
use crate::{demo, http, legacy, limits};
use actix_service::{ServiceFactoryExt, fn_service, map_config};
use actix_web::body::BoxBody;
use actix_web::dev::{AppConfig, Service, ServiceRequest, ServiceResponse};
use actix_web::{App, web};
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a graceful stop waits for requests in flight (a body is cut at `--body-timeout`
/// before that; a write to a busy store may take longer).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request's head may take to arrive, and an idle connection may stay open.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let check_only = args.check_config;
    let config = Config::resolve(args, |var| std::env::var(var).ok())?;
    log_settings(&config);
    if check_only {
        println!("reflexio-bridge: the settings are valid");
        return Ok(());
    }
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

    let users = config
        .web
        .as_ref()
        .map(|w| w.config.users.clone())
        .unwrap_or_default();
    let auth = Arc::new(Auth::new(
        config.token.clone(),
        config.public_metrics,
        users,
    ));
    let web_state = Arc::new(Web::new(
        config.web.as_ref().map(|w| &w.config),
        config
            .web
            .as_ref()
            .and_then(|w| w.tls.clone())
            .map(Acceptor::new),
    ));
    // Stopped when dropped, at the end of serving.
    let _web_watch = match &config.web {
        Some(w) => Some(
            crate::web::watch(
                w.path.clone(),
                w.config.clone(),
                Arc::clone(&web_state),
                Arc::clone(&auth),
            )
            .context("cannot start the web configuration watcher")?,
        ),
        None => None,
    };
    let state = web::Data::new(http::AppState {
        recorder: recorder.clone(),
        registry: telemetry.registry.clone(),
        auth,
        body_limit: config.body_limit,
        body_timeout: config.body_timeout,
        bodies: Arc::new(tokio::sync::Semaphore::new(config.max_ingest_bodies)),
        max_bodies: config.max_ingest_bodies,
        stats: telemetry.stats.clone(),
    });
    let refusals = Arc::new(Refusals::new(telemetry.stats.clone()));
    actix_web::rt::System::new().block_on(serve(&config, state, refusals, web_state))?;

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
    if let Some(web) = &config.web {
        let tls = web.config.tls.as_ref().map_or("off".to_owned(), |t| {
            format!(
                "on (client certificates: {:?}, TLS {:?} to {:?})",
                t.client_auth, t.min_version, t.max_version
            )
        });
        tracing::info!(
            path = %web.path.display(),
            tls = %tls,
            basic_auth_users = web.config.users.len(),
            headers = web.config.headers.len(),
            rate_limit = ?web.config.rate_limit,
            "web configuration (reloaded when it or its certificate files change)"
        );
    }
    let basic = config
        .web
        .as_ref()
        .is_some_and(|w| !w.config.users.is_empty());
    let scraping = match (config.public_metrics, basic, &config.token) {
        (true, _, _) => "scraping is public",
        (false, true, Some(_)) => "scraping takes basic auth or the bearer token",
        (false, true, None) => "scraping takes basic auth",
        (false, false, Some(_)) => "scraping takes the bearer token",
        (false, false, None) => "scraping is open",
    };
    match &config.token {
        Some(_) => tracing::info!("bearer token required for ingest; {scraping}"),
        None if config.insecure_no_auth => {
            tracing::warn!("no authentication for ingest (--insecure-no-auth); {scraping}")
        }
        None => tracing::info!("no authentication for ingest (loopback only); {scraping}"),
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

/// The methods each path takes (`OPTIONS` answers them; others get `405`).
const GET: &str = "GET, HEAD, OPTIONS";
const POST: &str = "POST, OPTIONS";

/// A path taking GET (and so HEAD: the same answer without its body) and OPTIONS.
fn get<F, Args>(paths: &[&str], handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(paths.to_vec())
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .route(
            web::route()
                .method(actix_web::http::Method::OPTIONS)
                .to(|| async { http::options(GET) }),
        )
        .default_service(web::to(|req: actix_web::HttpRequest| async move {
            http::method_not_allowed(&req, GET)
        }))
}

/// The endpoints, each path with the methods it takes.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get(&["/metrics", "/metrics/prometheus"], http::metrics))
        .service(get(&["/"], http::landing))
        .service(get(&["/healthz"], http::healthz))
        .service(get(&["/readyz"], http::readyz))
        .service(
            web::resource("/v1/events")
                .route(web::post().to(http::ingest))
                .route(
                    web::route()
                        .method(actix_web::http::Method::OPTIONS)
                        .to(|| async { http::options(POST) }),
                )
                .default_service(web::to(|req: actix_web::HttpRequest| async move {
                    http::method_not_allowed(&req, POST)
                })),
        )
        .default_service(web::to(http::not_found));
}

/// The web configuration's rate limit and headers, around every endpoint.
fn policy<S>(
    web: &Web,
    req: ServiceRequest,
    next: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
{
    use futures_util::future::{Either, ready};
    let policy = web.policy.load_full();
    let limited = policy
        .rate_limit
        .as_ref()
        .and_then(|b| b.take(Instant::now()).err());
    let answer = match limited {
        Some(wait) => {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            Either::Left(ready(Ok(req.into_response(http::rate_limited(seconds)))))
        }
        None => Either::Right(next.call(req)),
    };
    async move {
        let mut response = answer.await?;
        for (name, value) in &policy.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(response)
    }
}

async fn serve(
    config: &Config,
    state: web::Data<http::AppState>,
    refusals: Arc<Refusals>,
    web_state: Arc<Web>,
) -> anyhow::Result<()> {
    // Before anything announces the server: a signal arriving earlier must stop it gracefully.
    let stop = stop_signal()?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("the listening address")?;
    let mut builder = actix_server::Server::build();
    let draining = builder.graceful_shutdown_signal();
    let secure = web_state.acceptor.is_some();
    // The HTTP/1.1 server of actix-web's `HttpServer`, over connections (TLS first, when
    // configured) that give the HTTP layer's own refusals a JSON body.
    builder = builder
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
        .listen("reflexio-bridge", listener, move || {
            let web_for_app = Arc::clone(&web_state);
            let app = App::new()
                .app_data(state.clone())
                .wrap_fn(move |req, srv| policy(&web_for_app, req, srv))
                .configure(routes);
            let draining = draining.clone();
            let mut http = actix_http::HttpService::build();
            if secure {
                http = http.secure();
            }
            let http = http
                .client_request_timeout(HEAD_TIMEOUT)
                .keep_alive(HEAD_TIMEOUT)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let draining = draining.clone();
                    async move { draining.notified().await }
                })
                .h1(map_config(app, |_| AppConfig::default()));
            let refusals = Arc::clone(&refusals);
            let web = Arc::clone(&web_state);
            fn_service(move |io: actix_web::rt::net::TcpStream| {
                let refusals = Arc::clone(&refusals);
                let web = Arc::clone(&web);
                async move {
                    let peer = io.peer_addr().ok();
                    let stream = match &web.acceptor {
                        None => Stream::Plain(io),
                        Some(acceptor) => {
                            match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(io)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(AcceptError::PlainHttp)) => {
                                    refusals.plain_http(peer);
                                    return Err(actix_http::error::DispatchError::Io(
                                        std::io::Error::new(
                                            std::io::ErrorKind::InvalidData,
                                            AcceptError::PlainHttp,
                                        ),
                                    ));
                                }
                                Ok(Err(AcceptError::Io(e))) => {
                                    tracing::debug!(error = %e, ?peer, "TLS handshake failed");
                                    return Err(actix_http::error::DispatchError::Io(e));
                                }
                                Err(_) => {
                                    tracing::debug!(?peer, "TLS handshake timed out");
                                    return Err(
                                        actix_http::error::DispatchError::SlowRequestTimeout,
                                    );
                                }
                            }
                        }
                    };
                    Ok::<_, actix_http::error::DispatchError>((
                        Connection::new(stream, peer, refusals),
                        peer,
                    ))
                }
            })
            .and_then(http)
        })
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    if secure {
        tracing::info!("serving HTTPS only (tls_server_config of the web configuration)");
    }
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
