//! The JSON body of every error the bridge answers, whoever refuses the request (an endpoint or
//! the HTTP layer): `{"error": "...", "index": i, "field": "...", "line": n}`, with `index`,
//! `field` and `line` set when the problem is in one event, one field or one NDJSON line.

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
