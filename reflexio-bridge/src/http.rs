//! The HTTP endpoints: `/metrics` and `/metrics/prometheus` (gzip when asked), the landing page
//! `/`, `/healthz`, `/readyz` and `POST /v1/events` (gzip bodies accepted), with credential
//! checks, body limits and timeouts, a bound on the bodies read at once, `405` with `Allow` for
//! a method a path does not take, and a JSON body on every error.

use crate::answer::{Place, error_body};
use crate::auth::{Auth, Denied, Scope};
use crate::compression::{self, BodyDecoder, ContentEncoding, DecodeError};
use crate::ingest::{self, BadEvent, Format};
use crate::landing;
use crate::telemetry::{Outcome, Stats};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use reflexio_otel::{
    DurableError, IdempotencyKey, Keyed, RecordError, Recorder, StoreError, StoreErrorKind,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// What every request handler shares.
pub(crate) struct AppState {
    pub(crate) recorder: Recorder,
    pub(crate) registry: prometheus::Registry,
    pub(crate) auth: Arc<Auth>,
    pub(crate) body_limit: usize,
    /// The time a body has to arrive, from when the bridge starts reading it.
    pub(crate) body_timeout: Duration,
    /// One permit per ingest body that may be read and recorded at once.
    pub(crate) bodies: Arc<Semaphore>,
    /// How many permits `bodies` has.
    pub(crate) max_bodies: usize,
    pub(crate) stats: Arc<Stats>,
}

fn error(status: StatusCode, message: impl std::fmt::Display, at: Place<'_>) -> HttpResponse {
    HttpResponse::build(status).json(error_body(&message.to_string(), at))
}

fn bad_event(bad: &BadEvent) -> HttpResponse {
    let at = Place {
        index: bad.index,
        field: bad.field.as_deref(),
        line: bad.line,
    };
    error(StatusCode::BAD_REQUEST, bad, at)
}

/// A request refused before its events are recorded; rendered by [`Refusal::response`].
#[derive(Debug)]
enum Refusal {
    Unauthorized(Denied),
    UnsupportedMediaType(String),
    UnsupportedEncoding(String),
    BadKey(String),
    TooLarge(usize),
    Unreadable(String),
    TimedOut(Duration),
    Overloaded(usize),
}

/// A `503` the client may send again after a second.
fn retry_later(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

impl Refusal {
    fn response(self) -> HttpResponse {
        let at = Place::default();
        match self {
            Refusal::Unauthorized(denied) => {
                let mut response = error(StatusCode::UNAUTHORIZED, denied.message, at);
                for challenge in denied.challenges {
                    response
                        .headers_mut()
                        .append(header::WWW_AUTHENTICATE, challenge);
                }
                response
            }
            Refusal::BadKey(why) => error(StatusCode::BAD_REQUEST, why, at),
            Refusal::UnsupportedEncoding(encoding) => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content encoding `{encoding}` is not accepted; send the body as it is, or \
                     compressed with Content-Encoding: gzip"
                ),
                at,
            ),
            Refusal::UnsupportedMediaType(content_type) => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type `{content_type}` is not accepted; send application/json (an \
                     array of events) or application/x-ndjson (one event per line)"
                ),
                at,
            ),
            Refusal::TooLarge(limit) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the limit of {limit} bytes; send smaller batches"),
                at,
            ),
            Refusal::Unreadable(e) => error(StatusCode::BAD_REQUEST, e, at),
            Refusal::TimedOut(timeout) => {
                let mut response = error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {}; nothing was recorded, send the batch \
                         again",
                        humantime::format_duration(timeout)
                    ),
                    at,
                );
                // The rest of the body may never come: the connection is not reused.
                response
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                response
            }
            Refusal::Overloaded(slots) => {
                let mut response = retry_later(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{slots} request bodies are being read already; nothing was recorded, \
                         send the batch again"
                    ),
                    at,
                ));
                response
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                response
            }
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Refusal::Unauthorized(_) => Outcome::Unauthorized,
            Refusal::UnsupportedMediaType(_) | Refusal::UnsupportedEncoding(_) => {
                Outcome::UnsupportedMediaType
            }
            Refusal::TooLarge(_) => Outcome::TooLarge,
            Refusal::Unreadable(_) | Refusal::BadKey(_) => Outcome::Invalid,
            Refusal::TimedOut(_) => Outcome::TimedOut,
            Refusal::Overloaded(_) => Outcome::Overloaded,
        }
    }
}

/// `Ok` if the request may do what `scope` says. A basic-auth password not verified yet is
/// checked with bcrypt off the server's threads.
async fn authorize(req: &HttpRequest, auth: &Arc<Auth>, scope: Scope) -> Result<(), Refusal> {
    let checked = if auth.needs_bcrypt(req.headers(), scope) {
        let (auth, headers) = (Arc::clone(auth), req.headers().clone());
        web::block(move || auth.check(&headers, scope))
            .await
            .unwrap_or_else(|_| {
                Err(Denied {
                    message: "the credentials could not be checked",
                    challenges: Vec::new(),
                })
            })
    } else {
        auth.check(req.headers(), scope)
    };
    checked.map_err(Refusal::Unauthorized)
}

/// The exposition, gzip-compressed when the client accepts it (Prometheus does).
pub(crate) async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = authorize(&req, &state.auth, Scope::Scrape).await {
        return refusal.response();
    }
    let text = match reflexio_otel::encode_text(&state.registry) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the exposition");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e, Place::default());
        }
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type(reflexio_otel::TEXT_CONTENT_TYPE)
        .insert_header((header::VARY, "Accept-Encoding"));
    if compression::accepts_gzip(req.headers()) {
        match compression::gzip(text.as_bytes()) {
            Ok(packed) => {
                return response
                    .insert_header((header::CONTENT_ENCODING, "gzip"))
                    .body(packed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot compress the exposition; sent as it is"),
        }
    }
    response.body(text)
}

/// The landing page: links, and a live summary of the SLA figures and the bridge's health.
pub(crate) async fn landing(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = authorize(&req, &state.auth, Scope::Scrape).await {
        return refusal.response();
    }
    let families = state.registry.gather();
    let trouble = state
        .recorder
        .store_health()
        .and_then(|h| h.last_error)
        .map(|e| store_trouble(e.kind()));
    let store = landing::StoreSummary { trouble };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(landing::page(&families, &store, env!("CARGO_PKG_VERSION")))
}

/// `405`, with the methods the path takes.
pub(crate) fn method_not_allowed(req: &HttpRequest, allow: &'static str) -> HttpResponse {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {}; it takes {allow}",
            req.path(),
            req.method()
        ),
        Place::default(),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `429`: the web configuration's `rate_limit` lets no more requests through for `seconds`.
pub(crate) fn rate_limited(seconds: u64) -> HttpResponse {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many requests (the rate limit of the web configuration); nothing was recorded, \
             send the request again after {seconds} s"
        ),
        Place::default(),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// `OPTIONS`: the methods the path takes.
pub(crate) fn options(allow: &'static str) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ALLOW, allow))
        .finish()
}

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// What a store error is, in words that name neither the file nor SQLite's message: what
/// anyone may be told. The details are in the log, and in `/readyz` for holders of the token.
pub(crate) fn store_trouble(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Busy => "another process holds the store's lock",
        StoreErrorKind::Full => "the store's disk, or the file size limit, is full",
        StoreErrorKind::ReadOnly => "the store cannot be written",
        StoreErrorKind::Corrupt => "the store's file is damaged or not a database",
        StoreErrorKind::Incompatible => "the store was written by an incompatible version",
        StoreErrorKind::Io => "the store's file cannot be opened, read or written",
        StoreErrorKind::Gone => "the store's file was deleted or replaced while in use",
        _ => "the store failed",
    }
}

/// Ready when the store is open and its last flush succeeded. Anyone is told the kind of
/// trouble and a short reason; holders of the token (when one is configured) also get the
/// store's path and the error as SQLite gave it.
pub(crate) async fn readyz(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(health) = state.recorder.store_health() else {
        return HttpResponse::Ok().json(json!({ "status": "ready" }));
    };
    let detailed = state.auth.holds_token(req.headers());
    let last_flush = health
        .last_success
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    let kind = health.last_error.as_ref().map(StoreError::kind);
    let mut store = json!({
        "kind": kind.map(StoreErrorKind::as_str),
        "last_flush_unix_seconds": last_flush,
        "flushes": health.flushes,
    });
    if detailed {
        store["path"] = json!(health.path.display().to_string());
        store["error"] = json!(health.last_error.as_ref().map(ToString::to_string));
    }
    if health.is_healthy() {
        HttpResponse::Ok().json(json!({ "status": "ready", "store": store }))
    } else {
        let reason = kind.map_or("the store has not been read yet", store_trouble);
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "not ready",
            "reason": reason,
            "store": store,
        }))
    }
}

pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {} {}", req.method(), req.path()),
        Place::default(),
    )
}

/// The body's framing, from its content type.
fn format_of(req: &HttpRequest) -> Result<Format, Refusal> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::JsonArray),
        "application/x-ndjson" | "application/ndjson" => Ok(Format::Ndjson),
        _ => Err(Refusal::UnsupportedMediaType(content_type.to_owned())),
    }
}

/// Reads the body as its bytes arrive (memory follows what was received, not what the
/// Content-Length declares), refusing it as soon as it passes `limit`. The chunks are kept as
/// they come and joined once at the end. A gzip body is decompressed as it arrives, and refused
/// as soon as what it decompresses to passes `limit`.
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    encoding: ContentEncoding,
) -> Result<web::Bytes, Refusal> {
    let mut chunks = Vec::new();
    let mut received = 0;
    let mut decoder = (encoding == ContentEncoding::Gzip).then(|| BodyDecoder::gzip(limit));
    let decoded = |e: DecodeError| match e {
        DecodeError::TooLarge => Refusal::TooLarge(limit),
        DecodeError::Invalid(why) => Refusal::Unreadable(why),
    };
    while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
        let chunk = chunk.map_err(|e| Refusal::Unreadable(unreadable(&e)))?;
        received += chunk.len();
        if received > limit {
            return Err(Refusal::TooLarge(limit));
        }
        match &mut decoder {
            Some(d) => d.push(&chunk).map_err(decoded)?,
            None => chunks.push(chunk),
        }
    }
    if let Some(d) = decoder {
        return d.finish().map(web::Bytes::from).map_err(decoded);
    }
    Ok(match chunks.as_slice() {
        [] => web::Bytes::new(),
        [one] => one.clone(),
        _ => {
            let mut body = web::BytesMut::with_capacity(received);
            for chunk in &chunks {
                body.extend_from_slice(chunk);
            }
            body.freeze()
        }
    })
}

/// Why a body could not be read, in the client's terms.
fn unreadable(e: &actix_web::error::PayloadError) -> String {
    use actix_web::error::PayloadError;
    match e {
        PayloadError::Incomplete(_) => "the body ended before it was complete: fewer bytes than \
            its Content-Length, or a malformed chunk"
            .into(),
        PayloadError::EncodingCorrupted => "a chunk of the body is malformed".into(),
        e => format!("the body cannot be read: {e}"),
    }
}

/// The field a refused event's problem is in.
fn record_error_field(e: &RecordError) -> &'static str {
    match e {
        RecordError::FutureTime { .. } | RecordError::BeforeEpoch => "time",
        _ => "name",
    }
}

pub(crate) async fn ingest(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (outcome, events, response) = ingest_batch(&req, payload, &state).await;
    state.stats.request(outcome, events);
    response
}

/// The request's `Idempotency-Key`, if it has one: 1 to 255 visible ASCII characters, once.
fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, Refusal> {
    let mut values = req.headers().get_all("idempotency-key");
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::BadKey(
            "more than one Idempotency-Key header; send one per request".into(),
        ));
    }
    let text = value.to_str().map_err(|_| {
        Refusal::BadKey(
            "the Idempotency-Key holds characters other than visible ASCII; use 1 to 255 of \
             `!` to `~`, such as a random UUID"
                .into(),
        )
    })?;
    IdempotencyKey::new(text).map(Some).map_err(|e| {
        Refusal::BadKey(format!(
            "the Idempotency-Key is not valid: {}; use 1 to 255 visible ASCII characters, such \
             as a random UUID",
            e.problem()
        ))
    })
}

/// What identifies a batch under its key: SHA-256 of its framing and decoded body.
fn fingerprint(format: Format, body: &[u8]) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(match format {
        Format::JsonArray => b"json\n",
        Format::Ndjson => b"ndjson",
    });
    ctx.update(body);
    ctx.finish().as_ref().to_vec()
}

/// A request's body, read, with what its head says of it.
struct CheckedBody {
    format: Format,
    key: Option<IdempotencyKey>,
    body: web::Bytes,
    /// Its slot among the bodies read at once, held until the batch is answered.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Checks what the head says, waits for a slot, and reads the body within the body timeout.
async fn checked_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<CheckedBody, Refusal> {
    authorize(req, &state.auth, Scope::Ingest).await?;
    let key = idempotency_key(req)?;
    let format = format_of(req)?;
    let encoding = ContentEncoding::of(req.headers()).map_err(Refusal::UnsupportedEncoding)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.body_limit) {
        return Err(Refusal::TooLarge(state.body_limit));
    }
    // No waiting for a slot: a request that waited would have its body buffered meanwhile.
    let permit = Arc::clone(&state.bodies)
        .try_acquire_owned()
        .map_err(|_| Refusal::Overloaded(state.max_bodies))?;
    let body = tokio::time::timeout(
        state.body_timeout,
        read_body(payload, state.body_limit, encoding),
    )
    .await
    .map_err(|_| Refusal::TimedOut(state.body_timeout))??;
    Ok(CheckedBody {
        format,
        key,
        body,
        _permit: permit,
    })
}

async fn ingest_batch(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> (Outcome, usize, HttpResponse) {
    let CheckedBody {
        format,
        key,
        body,
        _permit,
    } = match checked_body(req, payload, state).await {
        Ok(checked) => checked,
        Err(refusal) => return (refusal.outcome(), 0, refusal.response()),
    };
    let ingest::Batch { events, lines } = match ingest::parse(&body, format) {
        Ok(batch) => batch,
        Err(bad) => return (Outcome::Invalid, 0, bad_event(&bad)),
    };
    let key = key.map(|k| k.with_fingerprint(fingerprint(format, &body)));
    drop(body);
    let n = events.len();
    if n == 0 && key.is_none() {
        return (
            Outcome::Accepted,
            0,
            HttpResponse::Accepted().json(json!({ "accepted": 0 })),
        );
    }
    let recorder = state.recorder.clone();
    let committed = web::block(move || match &key {
        Some(key) => recorder.record_durable_keyed(&events, key),
        None => recorder.record_durable(&events).map(|()| Keyed::Recorded),
    })
    .await;
    let unavailable = |message: String, kind: Option<StoreErrorKind>| {
        let mut body = error_body(
            &format!("nothing was recorded; send the batch again: {message}"),
            Place::default(),
        );
        if let Some(kind) = kind {
            body["kind"] = json!(kind.as_str());
        }
        retry_later(HttpResponse::ServiceUnavailable().json(body))
    };
    match committed {
        Ok(Ok(Keyed::Recorded)) => (
            Outcome::Accepted,
            n,
            HttpResponse::Accepted().json(json!({ "accepted": n })),
        ),
        Ok(Ok(Keyed::Replayed { accepted, .. })) => (
            Outcome::Replayed,
            0,
            HttpResponse::Accepted()
                .insert_header(("idempotent-replayed", "true"))
                .json(json!({ "accepted": accepted })),
        ),
        Ok(Ok(Keyed::Conflict { at })) => {
            let when = jiff::Timestamp::try_from(at)
                .map(|t| format!("{t:.0}"))
                .unwrap_or_default();
            let response = error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "this Idempotency-Key was used at {when} for another batch (another body); \
                     nothing was recorded: send each batch with a key of its own"
                ),
                Place::default(),
            );
            (Outcome::Conflict, 0, response)
        }
        Ok(Err(DurableError::Invalid { index, error: e })) => {
            let mut bad = BadEvent::at(index, record_error_field(&e), &e);
            if let Some(line) = lines.get(index) {
                bad = bad.on_line(*line);
            }
            (Outcome::Invalid, 0, bad_event(&bad))
        }
        Ok(Err(DurableError::Store(e))) => {
            let kind = e.kind();
            let r = unavailable(store_trouble(kind).to_owned(), Some(kind));
            (Outcome::Unavailable, 0, r)
        }
        Ok(Err(e)) => (Outcome::Unavailable, 0, unavailable(e.to_string(), None)),
        Err(e) => {
            tracing::error!(error = %e, "the durable write did not run");
            let r = unavailable("the write did not run".to_owned(), None);
            (Outcome::Unavailable, 0, r)
        }
    }
}
