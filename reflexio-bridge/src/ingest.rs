//! The event wire format of `POST /v1/events`: a JSON array, or one JSON object per line, turned
//! into typed events. Every error names the event (its index) and the field.

use reflexio_otel::{
    CoveConfig, CoveResult, Event, Fact, LockEvent, Name, RetentionRun, ValueError,
};
use serde::Deserialize;
use std::fmt;
use std::time::SystemTime;

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/json`: an array of events.
    JsonArray,
    /// `application/x-ndjson`: one event per line.
    Ndjson,
}

/// A body that is not a valid batch of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadEvent {
    /// The event's position, when the problem is in one event.
    pub(crate) index: Option<usize>,
    /// The field, when the problem is in one field.
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl BadEvent {
    fn at(index: usize, field: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            index: Some(index),
            field: Some(field.into()),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for BadEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.index, &self.field) {
            (Some(i), Some(field)) => write!(f, "event {i}: {field}: {}", self.message),
            (Some(i), None) => write!(f, "event {i}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// One event as it arrives: every field any event type has, checked against its type after.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    time: Option<String>,
    hallucinated: Option<bool>,
    atomic: Option<bool>,
    citation_coverage: Option<f64>,
    cove: Option<WireCove>,
    table: Option<String>,
    deleted_records: Option<u64>,
    dry_run: Option<bool>,
    error: Option<String>,
    name: Option<String>,
    holder: Option<String>,
    pid: Option<u32>,
    host: Option<String>,
    enabled: Option<bool>,
    threshold: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCove {
    confidence: f64,
    rounds: u32,
}

/// The event types and the fields each one takes besides `type` and `time`.
const TYPES: [(&str, &[&str]); 7] = [
    ("transcription", &[]),
    ("digest", &[]),
    (
        "fact",
        &["hallucinated", "atomic", "citation_coverage", "cove"],
    ),
    (
        "retention",
        &["table", "deleted_records", "dry_run", "error"],
    ),
    ("lock_acquired", &["name", "holder", "pid", "host"]),
    ("lock_released", &["name", "holder"]),
    ("cove_config", &["enabled", "threshold"]),
];

impl Wire {
    /// The fields that are present (not absent, not null), in declaration order.
    fn present(&self) -> Vec<&'static str> {
        [
            ("hallucinated", self.hallucinated.is_some()),
            ("atomic", self.atomic.is_some()),
            ("citation_coverage", self.citation_coverage.is_some()),
            ("cove", self.cove.is_some()),
            ("table", self.table.is_some()),
            ("deleted_records", self.deleted_records.is_some()),
            ("dry_run", self.dry_run.is_some()),
            ("error", self.error.is_some()),
            ("name", self.name.is_some()),
            ("holder", self.holder.is_some()),
            ("pid", self.pid.is_some()),
            ("host", self.host.is_some()),
            ("enabled", self.enabled.is_some()),
            ("threshold", self.threshold.is_some()),
        ]
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| name)
        .collect()
    }

    fn into_event(self, i: usize) -> Result<(Event, Option<SystemTime>), BadEvent> {
        let Some((kind, allowed)) = TYPES.iter().find(|(t, _)| *t == self.kind) else {
            let known: Vec<_> = TYPES.iter().map(|(t, _)| *t).collect();
            return Err(BadEvent::at(
                i,
                "type",
                format!(
                    "unknown type `{}`; expected one of {}",
                    self.kind,
                    known.join(", ")
                ),
            ));
        };
        if let Some(field) = self.present().into_iter().find(|f| !allowed.contains(f)) {
            return Err(BadEvent::at(
                i,
                field,
                format!("not a field of a `{kind}` event"),
            ));
        }
        let time = match &self.time {
            None => None,
            Some(t) => Some(parse_time(t).map_err(|e| BadEvent::at(i, "time", e))?),
        };
        let missing = |field: &str| BadEvent::at(i, field, "missing");
        let value = |field: &'static str| move |e: ValueError| BadEvent::at(i, field, e.problem());
        let name = |field: &'static str, v: Option<String>| {
            let v = v.ok_or_else(|| missing(field))?;
            Name::new(&v).map_err(value(field))
        };
        let event = match *kind {
            "transcription" => Event::Transcription,
            "digest" => Event::Digest,
            "fact" => {
                // Each verdict is optional: absent or null, it is not known.
                let mut fact = Fact {
                    hallucinated: self.hallucinated,
                    atomic: self.atomic,
                    ..Fact::unassessed()
                };
                if let Some(coverage) = self.citation_coverage {
                    fact = fact
                        .with_citation_coverage(coverage)
                        .map_err(value("citation_coverage"))?;
                }
                if let Some(c) = self.cove {
                    fact.cove = Some(CoveResult::new(c.confidence, c.rounds).map_err(|e| {
                        let field = format!("cove.{}", e.field());
                        BadEvent::at(i, field, e.problem())
                    })?);
                }
                Event::Fact(fact)
            }
            "retention" => {
                let mut run = RetentionRun::new(
                    name("table", self.table)?.as_str(),
                    self.deleted_records
                        .ok_or_else(|| missing("deleted_records"))?,
                )
                .map_err(value("table"))?
                .dry_run(self.dry_run.unwrap_or(false));
                run.error = self.error;
                Event::Retention(run)
            }
            "lock_acquired" | "lock_released" => {
                let lock = LockEvent {
                    name: name("name", self.name)?,
                    holder: name("holder", self.holder)?,
                    pid: self.pid,
                    host: self
                        .host
                        .map(|h| Name::new(&h))
                        .transpose()
                        .map_err(value("host"))?,
                };
                if *kind == "lock_acquired" {
                    Event::LockAcquired(lock)
                } else {
                    Event::LockReleased(lock)
                }
            }
            "cove_config" => Event::CoveConfig(
                CoveConfig::new(
                    self.enabled.ok_or_else(|| missing("enabled"))?,
                    self.threshold.ok_or_else(|| missing("threshold"))?,
                )
                .map_err(value("threshold"))?,
            ),
            _ => unreachable!("every type in TYPES is handled"),
        };
        Ok((event, time))
    }
}

/// Parses an RFC 3339 time, with any offset.
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("`{s}` is not an RFC 3339 time such as 2026-11-24T09:30:00Z: {e}"))?;
    SystemTime::try_from(ts).map_err(|e| format!("`{s}` is out of range: {e}"))
}

/// Splits a serde path such as `[3].cove.rounds` into the index and the field.
fn split_path(path: &serde_path_to_error::Path) -> (Option<usize>, Option<String>) {
    use serde_path_to_error::Segment;
    let mut index = None;
    let mut field = Vec::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index: i } if index.is_none() && field.is_empty() => index = Some(*i),
            Segment::Map { key } => field.push(key.clone()),
            Segment::Seq { index: i } => field.push(i.to_string()),
            Segment::Enum { variant } => field.push(variant.clone()),
            Segment::Unknown => {}
        }
    }
    (index, (!field.is_empty()).then(|| field.join(".")))
}

/// What serde_json says, without the position when a field already locates it.
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(cut) if e.is_data() => text[..cut].to_owned(),
        _ => text,
    }
}

/// Parses a batch.
pub(crate) fn parse(
    body: &[u8],
    format: Format,
) -> Result<Vec<(Event, Option<SystemTime>)>, BadEvent> {
    let wires: Vec<Wire> = match format {
        Format::JsonArray => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let wires: Vec<Wire> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let (index, field) = split_path(e.path());
                let inner = e.into_inner();
                let message = if inner.is_eof() {
                    format!("the body ends in the middle of the JSON: {inner}")
                } else if index.is_none() && inner.is_data() {
                    format!("the body must be a JSON array of event objects: {inner}")
                } else {
                    serde_message(&inner)
                };
                BadEvent {
                    index,
                    field,
                    message,
                }
            })?;
            de.end().map_err(|e| BadEvent {
                index: None,
                field: None,
                message: format!("trailing characters after the array: {e}"),
            })?;
            wires
        }
        Format::Ndjson => {
            let text = std::str::from_utf8(body).map_err(|e| BadEvent {
                index: None,
                field: None,
                message: format!("the body is not UTF-8: {e}"),
            })?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, line)| {
                    let mut de = serde_json::Deserializer::from_str(line);
                    serde_path_to_error::deserialize::<_, Wire>(&mut de).map_err(|e| {
                        let (_, field) = split_path(e.path());
                        BadEvent {
                            index: Some(i),
                            field,
                            message: serde_message(e.inner()),
                        }
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    wires
        .into_iter()
        .enumerate()
        .map(|(i, w)| w.into_event(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(body: &str, format: Format) -> BadEvent {
        parse(body.as_bytes(), format).expect_err(body)
    }

    #[test]
    fn every_event_type_parses() {
        let body = r#"[
            {"type":"transcription"},
            {"type":"digest","time":"2026-11-24T09:30:00+03:00"},
            {"type":"fact","hallucinated":false,"atomic":true,"citation_coverage":0.98,"cove":{"confidence":0.91,"rounds":1}},
            {"type":"fact","hallucinated":true,"atomic":false,"citation_coverage":1,"cove":null},
            {"type":"retention","table":"facts","deleted_records":5,"dry_run":false,"error":null},
            {"type":"retention","table":"audio","deleted_records":0,"error":"disk I/O error"},
            {"type":"lock_acquired","name":"daily_digest","holder":"worker-1","pid":42},
            {"type":"lock_released","name":"daily_digest","holder":"worker-1"},
            {"type":"cove_config","enabled":true,"threshold":0.7}
        ]"#;
        let events = parse(body.as_bytes(), Format::JsonArray).expect("valid");
        assert_eq!(events.len(), 9);
        assert_eq!(
            events[1].1,
            Some(parse_time("2026-11-24T06:30:00Z").expect("time"))
        );
        match &events[2].0 {
            Event::Fact(f) => {
                assert_eq!(f.citation_coverage.map(|c| c.get()), Some(0.98));
                assert_eq!(f.cove.map(|c| c.rounds.get()), Some(1));
            }
            e => panic!("{e:?}"),
        }
        match &events[5].0 {
            Event::Retention(r) => assert_eq!(r.error.as_deref(), Some("disk I/O error")),
            e => panic!("{e:?}"),
        }
        let array: Vec<serde_json::Value> = serde_json::from_str(body).expect("JSON");
        let ndjson = array
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            parse(ndjson.as_bytes(), Format::Ndjson)
                .expect("valid ndjson")
                .len(),
            9
        );
    }

    #[test]
    fn each_verdict_of_a_fact_is_optional() {
        let body = r#"[
            {"type":"fact","hallucinated":true},
            {"type":"fact","atomic":false,"citation_coverage":null},
            {"type":"fact","citation_coverage":0.5,"hallucinated":null,"atomic":null},
            {"type":"fact","cove":{"confidence":0.8,"rounds":2}},
            {"type":"fact"}
        ]"#;
        let facts: Vec<Fact> = parse(body.as_bytes(), Format::JsonArray)
            .expect("valid")
            .into_iter()
            .map(|(e, _)| match e {
                Event::Fact(f) => f,
                e => panic!("{e:?}"),
            })
            .collect();
        let cove = CoveResult::new(0.8, 2).expect("valid");
        assert_eq!(
            facts,
            [
                Fact::unassessed().hallucinated(true),
                Fact::unassessed().atomic(false),
                Fact::unassessed()
                    .with_citation_coverage(0.5)
                    .expect("valid"),
                Fact {
                    cove: Some(cove),
                    ..Fact::unassessed()
                },
                Fact::unassessed(),
            ]
        );
    }

    #[test]
    fn errors_name_the_event_and_the_field() {
        let cases = [
            (
                r#"[{"type":"digest"},{"type":"fact","hallucinated":false,"atomic":true,"citation_coverage":1.5}]"#,
                Some(1),
                Some("citation_coverage"),
                "1.5 is outside [0, 1]",
            ),
            (
                r#"[{"type":"fact","hallucinated":"no","atomic":true,"citation_coverage":1}]"#,
                Some(0),
                Some("hallucinated"),
                "invalid type: string \"no\", expected a boolean",
            ),
            (
                r#"[{"type":"fact","hallucinated":false,"atomic":true,"citation_coverage":"NaN"}]"#,
                Some(0),
                Some("citation_coverage"),
                "invalid type: string \"NaN\"",
            ),
            (
                r#"[{"type":"retention","table":"facts"}]"#,
                Some(0),
                Some("deleted_records"),
                "missing",
            ),
            (
                r#"[{"type":"fact","hallucinated":false,"atomic":true,"citation_coverage":1,"cove":{"confidence":0.9,"rounds":0}}]"#,
                Some(0),
                Some("cove.rounds"),
                "0 is outside [1, 1000]",
            ),
            (
                r#"[{"type":"meeting"}]"#,
                Some(0),
                Some("type"),
                "unknown type `meeting`",
            ),
            (
                r#"[{"type":"digest","colour":"red"}]"#,
                Some(0),
                Some("colour"),
                "unknown field `colour`",
            ),
            (
                r#"[{"type":"digest","table":"facts"}]"#,
                Some(0),
                Some("table"),
                "not a field of a `digest` event",
            ),
            (
                r#"[{"type":"retention","table":"facts","deleted_records":-1}]"#,
                Some(0),
                Some("deleted_records"),
                "invalid value: integer `-1`",
            ),
            (
                r#"[{"type":"retention","table":"","deleted_records":1}]"#,
                Some(0),
                Some("table"),
                "must not be empty",
            ),
            (
                r#"[{"type":"digest","time":"yesterday"}]"#,
                Some(0),
                Some("time"),
                "not an RFC 3339 time",
            ),
            (
                r#"[{"hallucinated":true}]"#,
                Some(0),
                None,
                "missing field `type`",
            ),
        ];
        for (body, index, field, message) in cases {
            let e = bad(body, Format::JsonArray);
            assert_eq!(e.index, index, "{body}: {e}");
            assert_eq!(e.field.as_deref(), field, "{body}: {e}");
            assert!(
                e.message.contains(message),
                "{body}: `{}` lacks `{message}`",
                e.message
            );
        }
    }

    #[test]
    fn malformed_bodies_are_reported() {
        let e = bad(r#"{"type":"digest"}"#, Format::JsonArray);
        assert!(e.message.contains("must be a JSON array"), "{e}");
        let e = bad(r#"[{"type":"digest"},{"type":"#, Format::JsonArray);
        assert!(e.message.contains("ends in the middle"), "{e}");
        assert_eq!((e.index, e.field.as_deref()), (Some(1), Some("type")));
        let e = bad(r#"[{"type":"digest"}] x"#, Format::JsonArray);
        assert!(e.message.contains("trailing characters"), "{e}");
        let e = bad(r#"[{"type":"digest","n":1e999}]"#, Format::JsonArray);
        assert_eq!(e.index, Some(0), "{e}");
        let e = bad("{\"type\":\"digest\"}\n{\"type\":\n", Format::Ndjson);
        assert_eq!(e.index, Some(1), "{e}");
        assert!(parse(b"[]", Format::JsonArray).expect("empty").is_empty());
        assert!(parse(b"\n\n", Format::Ndjson).expect("empty").is_empty());
    }
}
