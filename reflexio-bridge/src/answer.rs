//! The JSON body of every error the bridge answers, whoever refuses the request (an endpoint or
//! the HTTP layer): `{"error": "...", "index": i, "field": "...", "line": n}`, with `index`,
//! `field` and `line` set when the problem is in one event, one field or one NDJSON line; and the
//! whole answer for refusals written below actix-web (the HTTP layer, the HTTPS port).

use serde_json::{Value, json};

/// Where in a batch a problem is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Place<'a> {
    /// The event's position in the batch.
    pub(crate) index: Option<usize>,
    /// The field, such as `cove.rounds`.
    pub(crate) field: Option<&'a str>,
    /// The NDJSON line, from 1.
    pub(crate) line: Option<usize>,
}

/// The error body.
pub(crate) fn error_body(message: &str, at: Place<'_>) -> Value {
    json!({
        "error": message,
        "index": at.index,
        "field": at.field,
        "line": at.line,
    })
}

/// An answer written on the connection itself: `head` (a status line and headers, without a
/// body, as actix-http writes them) with the JSON error body saying `message`.
pub(crate) fn with_body(head: &[u8], message: &str) -> Vec<u8> {
    let body = error_body(message, Place::default()).to_string();
    let text = String::from_utf8_lossy(head);
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let mut answer = String::new();
    answer += lines.next().unwrap_or("HTTP/1.1 400 Bad Request");
    answer += "\r\ncontent-type: application/json\r\n";
    answer += &format!("content-length: {}\r\n", body.len());
    for line in lines.filter(|l| !l.to_ascii_lowercase().starts_with("content-length:")) {
        answer += line;
        answer += "\r\n";
    }
    answer += "\r\n";
    answer += &body;
    answer.into_bytes()
}
