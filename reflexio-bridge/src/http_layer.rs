//! The HTTP layer's own refusals. actix-http answers a request it cannot parse (a bad or
//! duplicate Content-Length, Content-Length with Transfer-Encoding, more than 96 headers, a head
//! over 128 KiB, a URL over 64 KiB, a malformed chunk) or whose head does not arrive in time by
//! itself, before any endpoint runs, with an empty body and an ERROR log line.
//!
//! [`Connection`] wraps each accepted connection and gives those answers the JSON body every
//! other error has, saying what was wrong when the request's head shows it; [`Refusals`] counts
//! them (`reflexio_http_malformed_requests_total`) and logs at most one line per [`LOG_EVERY`];
//! [`QuietActix`] drops actix's line, so that one client cannot flood the log.

use crate::answer::with_body;
use crate::telemetry::Stats;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{Event, Level, Subscriber};

/// At most one log line per this long about refused requests.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// The most headers a request may have (actix-http's limit).
pub(crate) const MAX_HEADERS: usize = 96;

/// How many bytes of a request's head are kept to say what was wrong with it.
const SAMPLE: usize = 16 * 1024;

/// The answers actix-http writes for its own refusals, after `HTTP/1.x`: the status, then an
/// empty body. The bridge's endpoints never answer an error without a body.
const REFUSALS: [(&[u8], u16); 3] = [
    (b" 400 Bad Request\r\ncontent-length: 0\r\n", 400),
    (b" 408 Request Timeout\r\ncontent-length: 0\r\n", 408),
    (
        b" 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        431,
    ),
];

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Where an answer of actix-http's own starts in `buf`, and its status. Every write passes
/// here, so it is one vectorised search for the empty body, then a look at the status line
/// before it.
fn find_refusal(buf: &[u8]) -> Option<(usize, u16)> {
    const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";
    for hit in memchr::memmem::find_iter(buf, EMPTY) {
        for (pattern, status) in REFUSALS {
            // `HTTP/1.x`, the status, then the empty body found at `hit`.
            let status_len = pattern.len() - EMPTY.len();
            let Some(at) = hit.checked_sub("HTTP/1.x".len() + status_len) else {
                continue;
            };
            if buf[at..].starts_with(b"HTTP/1.")
                && buf[at + "HTTP/1.x".len()..].starts_with(pattern)
            {
                return Some((at, status));
            }
        }
    }
    None
}

/// What was wrong with a refused request, when its head shows it.
fn diagnose(sample: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(sample) {
        Err(httparse::Error::TooManyHeaders) => {
            return Some(format!("it has more than {MAX_HEADERS} headers"));
        }
        Err(e) => return Some(format!("its request line or a header is malformed ({e})")),
        Ok(httparse::Status::Partial) if sample.len() >= SAMPLE => {
            return Some(if find(sample, b"\r\n").is_none() {
                "its request line (the URL) is too long".into()
            } else {
                "its head is too large".into()
            });
        }
        Ok(httparse::Status::Partial) => return None,
        Ok(httparse::Status::Complete(_)) => {}
    }
    let http10 = request.version == Some(0);
    if request
        .path
        .is_some_and(|p| p.len() > usize::from(u16::MAX) - 1)
    {
        return Some("its URL is longer than 65534 bytes".into());
    }
    let named = |name: &str| -> Vec<String> {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
            .collect()
    };
    let lengths = named("content-length");
    let encodings = named("transfer-encoding");
    if lengths.len() > 1 {
        return Some("it has more than one Content-Length header".into());
    }
    if let Some(length) = lengths.first()
        && (length.is_empty()
            || !length.bytes().all(|b| b.is_ascii_digit())
            || length.parse::<u64>().is_err())
    {
        return Some(format!(
            "its Content-Length `{length}` is not a number of bytes"
        ));
    }
    if encodings.len() > 1 {
        return Some("it has more than one Transfer-Encoding header".into());
    }
    if let Some(encoding) = encodings.first() {
        if http10 {
            return Some("Transfer-Encoding is not allowed in an HTTP/1.0 request".into());
        }
        if !encoding.eq_ignore_ascii_case("chunked") && !encoding.eq_ignore_ascii_case("identity") {
            return Some(format!(
                "its Transfer-Encoding `{encoding}` is not supported: send chunked, or a \
                 Content-Length"
            ));
        }
        if !lengths.is_empty() {
            return Some(
                "it has both Content-Length and Transfer-Encoding: send one of them".into(),
            );
        }
    }
    match named("host").len() {
        0 if !http10 => return Some("an HTTP/1.1 request needs a Host header".into()),
        0 | 1 => {}
        _ => return Some("it has more than one Host header".into()),
    }
    if http10 && request.method == Some("POST") && lengths.is_empty() {
        return Some("an HTTP/1.0 POST needs a Content-Length".into());
    }
    None
}

/// The message of a refusal with `status`.
fn message(status: u16, sample: &[u8]) -> String {
    let general = match status {
        408 => "the request's head did not arrive in time",
        431 => "the request's head is too large: at most 96 headers and 128 KiB",
        _ => {
            "the request is not valid HTTP/1.1: its request line, a header, its Content-Length \
             or Transfer-Encoding, or a chunk of its body is malformed"
        }
    };
    match diagnose(sample) {
        Some(why) if status != 408 => format!("{general}; here, {why}"),
        _ => general.to_owned(),
    }
}

/// Counts the HTTP layer's refusals and logs them at a bounded rate.
#[derive(Debug)]
pub(crate) struct Refusals {
    stats: Arc<Stats>,
    log: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    last: Option<Instant>,
    /// Refusals not logged since the last line.
    unlogged: u64,
}

impl Refusals {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            stats,
            log: Mutex::default(),
        }
    }

    /// Counts a connection that spoke plain HTTP to the TLS port (it was answered `400`).
    pub(crate) fn plain_http(&self, peer: Option<SocketAddr>) {
        self.refused(400, "plain HTTP on the HTTPS port", peer, Instant::now());
    }

    /// Counts one refusal; `true` if it was logged.
    fn refused(&self, status: u16, reason: &str, peer: Option<SocketAddr>, now: Instant) -> bool {
        self.stats.malformed_request();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            log.unlogged += 1;
            return false;
        }
        let unlogged = std::mem::take(&mut log.unlogged);
        log.last = Some(now);
        drop(log);
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        tracing::warn!(
            status,
            peer,
            reason,
            unlogged,
            "refused a malformed request (logged at most once per 10 s; `unlogged` since the \
             last line; all are counted in reflexio_http_malformed_requests_total)"
        );
        true
    }
}

/// An accepted connection, as actix-http reads and writes it: answers of actix-http's own get a
/// JSON body. Everything else passes through unchanged.
#[derive(Debug)]
pub(crate) struct Connection<T> {
    io: T,
    peer: Option<SocketAddr>,
    refusals: Arc<Refusals>,
    /// A rewritten answer, from `pending_at` on still to be written.
    pending: Vec<u8>,
    pending_at: usize,
    /// The start of what the client sent since the last answer began: the head of the request
    /// being answered.
    sample: Vec<u8>,
    sample_done: bool,
    /// Something was written since the sample began.
    answered: bool,
}

impl<T> Connection<T> {
    pub(crate) fn new(io: T, peer: Option<SocketAddr>, refusals: Arc<Refusals>) -> Self {
        Self {
            io,
            peer,
            refusals,
            pending: Vec::new(),
            pending_at: 0,
            sample: Vec::new(),
            sample_done: false,
            answered: false,
        }
    }
}

impl<T> Connection<T> {
    /// Keeps the head of the request being read, up to its blank line (the body is of no use
    /// to say what was wrong) and at most [`SAMPLE`] bytes.
    fn sample_head(&mut self, read: &[u8]) {
        const END: &[u8] = b"\r\n\r\n";
        // The blank line may straddle what was kept and what was read.
        let kept = &self.sample[self.sample.len().saturating_sub(END.len() - 1)..];
        let mut joint = [0u8; 2 * (END.len() - 1)];
        let first = read.len().min(END.len() - 1);
        joint[..kept.len()].copy_from_slice(kept);
        joint[kept.len()..kept.len() + first].copy_from_slice(&read[..first]);
        let end = match find(&joint[..kept.len() + first], END) {
            Some(at) => Some(at + END.len() - kept.len()),
            None => find(read, END).map(|at| at + END.len()),
        };
        let take = end.unwrap_or(read.len()).min(SAMPLE - self.sample.len());
        self.sample.extend_from_slice(&read[..take]);
        self.sample_done = end.is_some() || self.sample.len() == SAMPLE;
    }
}

impl<T: AsyncWrite + Unpin> Connection<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_at < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.pending_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_at += n;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.pending_at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            if this.answered {
                this.answered = false;
                this.sample_done = false;
                this.sample.clear();
                this.sample.shrink_to(1024);
            }
            if !this.sample_done {
                this.sample_head(read);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if buf.is_empty() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        this.answered = true;
        let refusal = find_refusal(buf).and_then(|(at, status)| {
            let end = at + find(&buf[at..], b"\r\n\r\n")? + 4;
            Some((at, end, status))
        });
        match refusal {
            None => Pin::new(&mut this.io).poll_write(cx, buf),
            // What comes before it first.
            Some((at, _, _)) if at > 0 => Pin::new(&mut this.io).poll_write(cx, &buf[..at]),
            Some((_, end, status)) => {
                let message = message(status, &this.sample);
                this.refusals
                    .refused(status, &message, this.peer, Instant::now());
                this.pending = with_body(&buf[..end], &message);
                this.pending_at = 0;
                // What is not written now goes out with the next write, flush or shutdown.
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(end))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Drops actix-http's ERROR line for each request it could not parse: [`Refusals`] counts and
/// logs those. actix-http's other lines pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuietActix;

impl<S: Subscriber> tracing_subscriber::Layer<S> for QuietActix {
    fn event_enabled(
        &self,
        event: &Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || meta.target() != "actix_http::h1::dispatcher" {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        !message.0.starts_with("stream error: request parse error")
    }
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BAD: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n";

    #[test]
    fn only_empty_refusals_are_found() {
        assert_eq!(find_refusal(BAD), Some((0, 400)));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 61\r\ncontent-type: application/json\r\n\r\n{}";
        assert_eq!(find_refusal(ours), None);
        let both = [&ours[..], BAD].concat();
        assert_eq!(find_refusal(&both), Some((ours.len(), 400)));
        let slow = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(find_refusal(slow), Some((0, 408)));
        assert_eq!(
            find_refusal(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }

    #[test]
    fn diagnoses_name_the_problem() {
        for (head, expected) in [
            (
                &b"POST / HTTP/1.1\r\ncontent-length: abc\r\n\r\n"[..],
                "Content-Length `abc`",
            ),
            (
                b"POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
                "more than one Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
                "Transfer-Encoding `gzip`",
            ),
            (
                b"POST / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
                "more than one Host",
            ),
            (b"GARBAGE\r\n\r\n", "malformed"),
            (b"GET / HTTP/1.1\r\n\r\n", "needs a Host"),
            (b"POST / HTTP/1.0\r\n\r\n", "needs a Content-Length"),
            (
                b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
                "not allowed in an HTTP/1.0",
            ),
        ] {
            let why = diagnose(head).unwrap_or_default();
            assert!(why.contains(expected), "{why} lacks {expected}");
        }
        let many: String = (0..100).map(|i| format!("x-{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(diagnose(head.as_bytes()).is_some_and(|w| w.contains("more than 96")));
        let long = format!("GET /{} HTTP/1.1\r\n", "u".repeat(SAMPLE));
        assert!(diagnose(&long.as_bytes()[..SAMPLE]).is_some_and(|w| w.contains("URL")));
        assert_eq!(
            diagnose(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\n"),
            None
        );
        assert_eq!(diagnose(b"POST / HTT"), None);
    }

    #[test]
    fn refusals_get_a_json_body_and_keep_their_headers() {
        let answer = with_body(BAD, "why");
        let text = String::from_utf8(answer).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains("\r\nconnection: close") && head.contains("\r\ndate: x"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(!head.contains("content-length: 0"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["error"], "why");
    }

    #[test]
    fn the_log_gets_one_line_per_interval() {
        let stats = Arc::new(Stats::default());
        let refusals = Refusals::new(Arc::clone(&stats));
        let t0 = Instant::now();
        assert!(refusals.refused(400, "x", None, t0));
        for i in 1..100 {
            assert!(!refusals.refused(400, "x", None, t0 + Duration::from_millis(i)));
        }
        assert!(refusals.refused(400, "x", None, t0 + LOG_EVERY));
        assert_eq!(stats.malformed_requests(), 101);
    }

    #[test]
    fn the_sample_is_the_head_however_it_is_split() {
        let head = b"POST / HTTP/1.1\r\nhost: h\r\n\r\n";
        let request = [&head[..], b"[{\"type\":\"digest\"}]"].concat();
        let refusals = Arc::new(Refusals::new(Arc::new(Stats::default())));
        for cut in 1..request.len() {
            let mut conn = Connection::new((), None, Arc::clone(&refusals));
            conn.sample_head(&request[..cut]);
            if !conn.sample_done {
                conn.sample_head(&request[cut..]);
            }
            assert_eq!(conn.sample, head, "cut at {cut}");
            assert!(conn.sample_done);
        }
        let mut conn = Connection::new((), None, refusals);
        conn.sample_head(&vec![b'u'; 2 * SAMPLE]);
        assert_eq!(conn.sample.len(), SAMPLE);
        assert!(conn.sample_done);
    }

    #[tokio::test]
    async fn a_connection_rewrites_refusals_and_passes_the_rest() {
        let (near, mut far) = tokio::io::duplex(64);
        let refusals = Arc::new(Refusals::new(Arc::new(Stats::default())));
        let mut conn = Connection::new(near, None, refusals);
        far.write_all(b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 38];
        conn.read_exact(&mut head).await.expect("read");
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let writer = tokio::spawn(async move {
            conn.write_all(&[&ok[..], BAD].concat())
                .await
                .expect("write");
            conn.shutdown().await.expect("shutdown");
        });
        let mut out = Vec::new();
        far.read_to_end(&mut out).await.expect("read");
        writer.await.expect("writer");
        let text = String::from_utf8(out).expect("text");
        let (first, rest) = text.split_at(ok.len());
        assert_eq!(first.as_bytes(), ok);
        assert!(rest.contains("\"error\""), "{rest}");
        assert!(rest.contains("Content-Length `x`"), "{rest}");
    }
}
