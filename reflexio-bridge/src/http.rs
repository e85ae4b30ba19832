//! The HTTP endpoints: `/metrics/prometheus`, `/healthz`, `/readyz` and `POST /v1/events`,
//! with bearer-token checks, body limits, and a JSON body on every error.

use crate::config::Token;
use crate::ingest::{self, BadEvent, Format};
use crate::telemetry::{Outcome, Stats};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use reflexio_otel::{DurableError, RecordError, Recorder};
use serde_json::json;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

/// What every request handler shares.
pub(crate) struct AppState {
    pub(crate) recorder: Recorder,
    pub(crate) registry: prometheus::Registry,
    pub(crate) token: Option<Token>,
    pub(crate) public_metrics: bool,
    pub(crate) body_limit: usize,
    pub(crate) stats: Arc<Stats>,
}

fn error(
    status: StatusCode,
    message: impl std::fmt::Display,
    index: Option<usize>,
    field: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": message.to_string(),
        "index": index,
        "field": field,
    }))
}

/// A request refused before its events are recorded; rendered by [`Refusal::response`].
#[derive(Debug)]
enum Refusal {
    Unauthorized(&'static str),
    UnsupportedMediaType(String),
    TooLarge(usize),
    Unreadable(String),
}

impl Refusal {
    fn response(self) -> HttpResponse {
        match self {
            Refusal::Unauthorized(message) => {
                let mut response = error(StatusCode::UNAUTHORIZED, message, None, None);
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"reflexio-bridge\""),
                );
                response
            }
            Refusal::UnsupportedMediaType(content_type) => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type `{content_type}` is not accepted; send application/json (an \
                     array of events) or application/x-ndjson (one event per line)"
                ),
                None,
                None,
            ),
            Refusal::TooLarge(limit) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the limit of {limit} bytes; send smaller batches"),
                None,
                None,
            ),
            Refusal::Unreadable(e) => error(StatusCode::BAD_REQUEST, e, None, None),
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Refusal::Unauthorized(_) => Outcome::Unauthorized,
            Refusal::UnsupportedMediaType(_) => Outcome::UnsupportedMediaType,
            Refusal::TooLarge(_) => Outcome::TooLarge,
            Refusal::Unreadable(_) => Outcome::Invalid,
        }
    }
}

/// `Ok` if the request may proceed.
fn authorize(req: &HttpRequest, token: Option<&Token>) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Ok(());
    };
    let offered = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        });
    match offered {
        Some(t) if token.matches(t) => Ok(()),
        Some(_) => Err(Refusal::Unauthorized(
            "the bearer token is not the one configured",
        )),
        None => Err(Refusal::Unauthorized(
            "an `Authorization: Bearer <token>` header is required",
        )),
    }
}

pub(crate) async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let token = state.token.as_ref().filter(|_| !state.public_metrics);
    if let Err(refusal) = authorize(&req, token) {
        return refusal.response();
    }
    match reflexio_otel::encode_text(&state.registry) {
        Ok(text) => HttpResponse::Ok()
            .content_type(reflexio_otel::TEXT_CONTENT_TYPE)
            .body(text),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the exposition");
            error(StatusCode::INTERNAL_SERVER_ERROR, e, None, None)
        }
    }
}

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the store is open and its last flush succeeded.
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let Some(health) = state.recorder.store_health() else {
        return HttpResponse::Ok().json(json!({ "status": "ready" }));
    };
    let last_flush = health
        .last_success
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    let store = json!({
        "path": health.path.display().to_string(),
        "kind": health.last_error.as_ref().map(|e| e.kind().as_str()),
        "last_flush_unix_seconds": last_flush,
        "flushes": health.flushes,
    });
    if health.is_healthy() {
        HttpResponse::Ok().json(json!({ "status": "ready", "store": store }))
    } else {
        let reason = match &health.last_error {
            Some(e) => e.to_string(),
            None => "the store has not been read yet".to_owned(),
        };
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
        None,
        None,
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

/// Reads the body, refusing it as soon as it passes `limit`.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, Refusal> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Refusal::TooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
        let chunk = chunk.map_err(|e| Refusal::Unreadable(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(Refusal::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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

async fn ingest_batch(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> (Outcome, usize, HttpResponse) {
    let checked = match (authorize(req, state.token.as_ref()), format_of(req)) {
        (Ok(()), Ok(format)) => read_body(req, payload, state.body_limit)
            .await
            .map(|body| (format, body)),
        (Err(refusal), _) | (Ok(()), Err(refusal)) => Err(refusal),
    };
    let (format, body) = match checked {
        Ok(checked) => checked,
        Err(refusal) => return (refusal.outcome(), 0, refusal.response()),
    };
    let events = match ingest::parse(&body, format) {
        Ok(events) => events,
        Err(bad) => {
            let r = error(
                StatusCode::BAD_REQUEST,
                &bad,
                bad.index,
                bad.field.as_deref(),
            );
            return (Outcome::Invalid, 0, r);
        }
    };
    let n = events.len();
    if n == 0 {
        return (
            Outcome::Accepted,
            0,
            HttpResponse::Accepted().json(json!({ "accepted": 0 })),
        );
    }
    let recorder = state.recorder.clone();
    let committed = web::block(move || recorder.record_durable(&events)).await;
    match committed {
        Ok(Ok(())) => (
            Outcome::Accepted,
            n,
            HttpResponse::Accepted().json(json!({ "accepted": n })),
        ),
        Ok(Err(DurableError::Invalid { index, error: e })) => {
            let field = record_error_field(&e);
            let bad = BadEvent {
                index: Some(index),
                field: Some(field.to_owned()),
                message: e.to_string(),
            };
            let r = error(StatusCode::BAD_REQUEST, &bad, Some(index), Some(field));
            (Outcome::Invalid, 0, r)
        }
        Ok(Err(e)) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("nothing was recorded; send the batch again: {e}"),
                None,
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            (Outcome::Unavailable, 0, r)
        }
        Err(e) => {
            tracing::error!(error = %e, "the durable write did not run");
            let r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "nothing was recorded; send the batch again",
                None,
                None,
            );
            (Outcome::Unavailable, 0, r)
        }
    }
}
