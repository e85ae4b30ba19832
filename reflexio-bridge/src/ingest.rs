//! The event wire format of `POST /v1/events`: a JSON array, or one JSON object per line, turned
//! into typed events. Every error names the event (its index), the field, and for NDJSON the
//! line.

use reflexio_otel::{
    CoveConfig, CoveResult, Event, Fact, LockEvent, Name, RetentionRun, ValueError,
};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
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
    /// The line (from 1), for NDJSON.
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl BadEvent {
    pub(crate) fn at(index: usize, field: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            index: Some(index),
            field: Some(field.into()),
            line: None,
            message: message.to_string(),
        }
    }

    fn body(message: impl fmt::Display) -> Self {
        Self {
            index: None,
            field: None,
            line: None,
            message: message.to_string(),
        }
    }

    pub(crate) fn on_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for BadEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
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
    confidence: Option<f64>,
    rounds: Option<u32>,
}

/// An event that must be a JSON object: serde would also build a struct from an array of its
/// fields in order.
#[derive(Debug)]
struct WireObject(Wire);

impl<'de> Deserialize<'de> for WireObject {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Wire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Wire, A::Error> {
                Wire::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object).map(WireObject)
    }
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
                    let confidence = c.confidence.ok_or_else(|| missing("cove.confidence"))?;
                    let rounds = c.rounds.ok_or_else(|| missing("cove.rounds"))?;
                    fact.cove = Some(CoveResult::new(confidence, rounds).map_err(|e| {
                        let field = format!("cove.{}", e.field());
                        BadEvent::at(i, field, e.problem())
                    })?);
                }
                Event::Fact(fact)
            }
            "retention" => {
                let table = name("table", self.table)?;
                let deleted = self
                    .deleted_records
                    .ok_or_else(|| missing("deleted_records"))?;
                let mut run = RetentionRun::new(table.as_str(), deleted)
                    .map_err(|e| BadEvent::at(i, e.field(), e.problem()))?
                    .dry_run(self.dry_run.unwrap_or(false));
                run.error = self.error;
                Event::Retention(run)
            }
            "lock_acquired" | "lock_released" => {
                let mut lock = LockEvent {
                    name: name("name", self.name)?,
                    holder: name("holder", self.holder)?,
                    pid: None,
                    host: self
                        .host
                        .map(|h| Name::new(&h))
                        .transpose()
                        .map_err(value("host"))?,
                };
                if let Some(pid) = self.pid {
                    lock = lock.with_pid(pid).map_err(value("pid"))?;
                }
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

/// Parses an RFC 3339 time (its section 5.6): `YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z` or an
/// offset `+HH:MM`/`-HH:MM`.
///
/// - `T` and `Z` may be lower case, and a space may stand for the `T` (RFC 3339's note).
/// - Any number of fraction digits is read; digits past the ninth (nanoseconds) are dropped.
/// - Offset hours are `00` to `23` and minutes `00` to `59`; `-00:00` is UTC.
/// - A leap second (`:60`) is read as `:59` of the same minute, keeping its fraction: the
///   bridge's clock, like every Unix clock, has no second 60.
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    /// `d` is a digit, `T` the date-time separator; anything else stands for itself.
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let bad =
        |why: &str| format!("`{s}` is not an RFC 3339 time such as 2026-11-24T09:30:00Z: {why}");
    let b = s.as_bytes();
    let fits = |at: usize, shape: &[u8]| {
        b.get(at..at + shape.len()).is_some_and(|part| {
            shape.iter().zip(part).all(|(&p, &c)| match p {
                b'd' => c.is_ascii_digit(),
                b'T' => matches!(c, b'T' | b't' | b' '),
                p => c == p,
            })
        })
    };
    // Only called on digits `fits` checked.
    let number = |from: usize, len: usize| {
        b[from..from + len]
            .iter()
            .fold(0i32, |n, c| n * 10 + i32::from(c - b'0'))
    };
    if !fits(0, SHAPE) {
        return Err(bad("expected the shape YYYY-MM-DDTHH:MM:SS"));
    }
    let (hour, minute, second) = (number(11, 2), number(14, 2), number(17, 2));
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad(
            "hours are 00 to 23, minutes 00 to 59, seconds 00 to 60",
        ));
    }
    let mut at = SHAPE.len();
    let mut nanos = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err(bad("a fraction needs digits after the `.`"));
        }
        // The first nine digits, padded with zeros: nanoseconds.
        nanos = (0..9).fold(0i32, |n, k| {
            n * 10 + if k < digits { number(at + 1 + k, 1) } else { 0 }
        });
        at += 1 + digits;
    }
    let offset_seconds = match &b[at..] {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if fits(at + 1, b"dd:dd") && b.len() == at + 6 => {
            let (hours, minutes) = (number(at + 1, 2), number(at + 4, 2));
            if hours > 23 || minutes > 59 {
                return Err(bad("offset hours are 00 to 23 and minutes 00 to 59"));
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        [b'+' | b'-', ..] => return Err(bad("an offset is written +HH:MM or -HH:MM")),
        [] => {
            return Err(format!(
                "`{s}` has no offset: an offset is required, e.g. 2026-11-24T09:30:00+03:00 (or \
                 Z for UTC); a time without one names no single instant"
            ));
        }
        _ => {
            return Err(bad(
                "expected Z or an offset such as +03:00 after the seconds",
            ));
        }
    };
    let clock = |e: jiff::Error| bad(&e.to_string());
    // Four and two digits, so the narrowing casts are exact.
    let date = jiff::civil::Date::new(number(0, 4) as i16, number(5, 2) as i8, number(8, 2) as i8)
        .map_err(clock)?;
    let time = jiff::civil::Time::new(hour as i8, minute as i8, second.min(59) as i8, nanos)
        .map_err(clock)?;
    let offset = jiff::tz::Offset::from_seconds(offset_seconds).map_err(clock)?;
    let instant = offset.to_timestamp(date.to_datetime(time)).map_err(clock)?;
    SystemTime::try_from(instant).map_err(|e| format!("`{s}` is out of range: {e}"))
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

/// A valid batch: its events, and for NDJSON the line each came from.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) events: Vec<(Event, Option<SystemTime>)>,
    /// The line (from 1) of each event, for NDJSON; empty for a JSON array.
    pub(crate) lines: Vec<usize>,
}

/// Parses a batch.
pub(crate) fn parse(body: &[u8], format: Format) -> Result<Batch, BadEvent> {
    match format {
        Format::JsonArray => Ok(Batch {
            events: parse_array(body)?
                .into_iter()
                .enumerate()
                .map(|(i, w)| w.into_event(i))
                .collect::<Result<_, _>>()?,
            lines: Vec::new(),
        }),
        Format::Ndjson => {
            let (lines, wires): (Vec<usize>, Vec<Wire>) = parse_lines(body)?.into_iter().unzip();
            let events = wires
                .into_iter()
                .zip(&lines)
                .enumerate()
                .map(|(i, (w, line))| w.into_event(i).map_err(|e| e.on_line(*line)))
                .collect::<Result<_, _>>()?;
            Ok(Batch { events, lines })
        }
    }
}

fn parse_array(body: &[u8]) -> Result<Vec<Wire>, BadEvent> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let wires: Vec<WireObject> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
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
            line: None,
            message,
        }
    })?;
    de.end()
        .map_err(|e| BadEvent::body(format!("trailing characters after the array: {e}")))?;
    Ok(wires.into_iter().map(|w| w.0).collect())
}

/// The lines of an NDJSON body, each holding exactly one JSON object: a line ends at `\n`, and
/// a `\r` right before it belongs to the line ending. Lines of spaces and tabs are skipped.
/// Everything else (a second value, a trailing comma, a `\r` inside the line, U+2028) is an
/// error naming the line.
fn parse_lines(body: &[u8]) -> Result<Vec<(usize, Wire)>, BadEvent> {
    let text = std::str::from_utf8(body)
        .map_err(|e| BadEvent::body(format!("the body is not UTF-8: {e}")))?;
    let mut wires = Vec::new();
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line = n + 1;
        // A `\r` ends the line only right before its `\n`.
        let content = raw
            .strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(raw);
        if content.trim_matches([' ', '\t']).is_empty() {
            continue;
        }
        let index = wires.len();
        let framing = |message: String| BadEvent {
            index: Some(index),
            field: None,
            line: Some(line),
            message,
        };
        if content.contains('\r') {
            return Err(framing(
                "a carriage return inside the line: each line holds one JSON object and ends \
                 with \\n or \\r\\n"
                    .into(),
            ));
        }
        let mut de = serde_json::Deserializer::from_str(content);
        let wire = serde_path_to_error::deserialize::<_, WireObject>(&mut de).map_err(|e| {
            let (_, field) = split_path(e.path());
            BadEvent {
                field,
                ..framing(serde_message(e.inner()))
            }
        })?;
        de.end().map_err(|e| {
            framing(format!(
                "more after the event's object ({e}): each line holds exactly one JSON object"
            ))
        })?;
        wires.push((line, wire.0));
    }
    Ok(wires)
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
        let events = parse(body.as_bytes(), Format::JsonArray)
            .expect("valid")
            .events;
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
        let batch = parse(ndjson.as_bytes(), Format::Ndjson).expect("valid ndjson");
        assert_eq!(batch.events.len(), 9);
        assert_eq!(batch.lines, (1..=9).collect::<Vec<_>>());
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
            .events
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
        assert!(
            parse(b"[]", Format::JsonArray)
                .expect("empty")
                .events
                .is_empty()
        );
        assert!(
            parse(b"\n \t\n\r\n", Format::Ndjson)
                .expect("empty")
                .events
                .is_empty()
        );
    }

    #[test]
    fn each_ndjson_line_holds_exactly_one_object() {
        let d = r#"{"type":"digest"}"#;
        // CRLF line ends and blank lines are fine; lines are numbered as written.
        let batch = parse(
            format!("{d}\r\n\r\n  \n{d}\r\n{d}").as_bytes(),
            Format::Ndjson,
        )
        .expect("valid");
        assert_eq!(batch.lines, [1, 4, 5]);
        for (body, line, index) in [
            (format!("{d}{d}\n"), 1, 0),
            (format!("{d}\n{d} {d}\n"), 2, 1),
            (format!("{d} x\n"), 1, 0),
            (format!("{d},\n{d}\n"), 1, 0),
            (format!("{d}\r{d}\n"), 1, 0),
            (format!("{d}\n{d}\r"), 2, 1),
            (format!("{d}\u{2028}{d}\n"), 1, 0),
            (format!("{d}\u{2029}\n"), 1, 0),
            (format!("{d}\n\u{2028}\n"), 2, 1),
            (format!("\n\n[{d}]\n"), 3, 0),
            ("42\n".to_owned(), 1, 0),
            ("null".to_owned(), 1, 0),
        ] {
            let e = bad(&body, Format::Ndjson);
            assert_eq!(
                (e.line, e.index),
                (Some(line), Some(index)),
                "{body:?}: {e}"
            );
            assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
        }
        let e = bad(
            &format!("{d}\n{{\"type\":\"digest\",\"x\":1}}\n"),
            Format::Ndjson,
        );
        assert_eq!(
            (e.line, e.index, e.field.as_deref()),
            (Some(2), Some(1), Some("x"))
        );
    }

    #[test]
    fn events_must_be_objects() {
        let e = bad(
            r#"[{"type":"digest"},["transcription",null,null,null,null,null,null,null,null,null,null,null,null,null,null,null]]"#,
            Format::JsonArray,
        );
        assert_eq!(e.index, Some(1), "{e}");
        assert!(e.message.contains("expected an event object"), "{e}");
    }

    #[test]
    fn numbers_are_bounded() {
        for (body, field) in [
            (
                r#"[{"type":"retention","table":"t","deleted_records":9007199254740993}]"#,
                "deleted_records",
            ),
            (
                r#"[{"type":"lock_acquired","name":"n","holder":"h","pid":0}]"#,
                "pid",
            ),
            (
                r#"[{"type":"lock_acquired","name":"n","holder":"h","pid":2147483648}]"#,
                "pid",
            ),
            (
                r#"[{"type":"fact","hallucinated":true,"atomic":true,"citation_coverage":1,"cove":{"rounds":3}}]"#,
                "cove.confidence",
            ),
        ] {
            let e = bad(body, Format::JsonArray);
            assert_eq!(e.field.as_deref(), Some(field), "{body}: {e}");
        }
        let max = r#"[{"type":"retention","table":"t","deleted_records":9007199254740992},
            {"type":"lock_acquired","name":"n","holder":"h","pid":2147483647}]"#;
        assert_eq!(
            parse(max.as_bytes(), Format::JsonArray)
                .expect("at the bounds")
                .events
                .len(),
            2
        );
    }

    #[test]
    fn times_follow_rfc_3339() {
        let t = |s: &str| parse_time(s).unwrap_or_else(|e| panic!("{e}"));
        let base = t("2026-06-30T23:59:59Z");
        assert_eq!(t("2026-07-01T02:59:59+03:00"), base);
        assert_eq!(t("2026-06-30T23:59:59-00:00"), base);
        assert_eq!(t("2026-06-30t23:59:59z"), base);
        assert_eq!(t("2026-06-30 23:59:59Z"), base);
        assert_eq!(t("2026-07-01T22:59:59+23:00"), base);
        // Any number of fraction digits; past nanoseconds they are dropped.
        assert_eq!(
            t("2026-06-30T23:59:59.123456789999Z"),
            base + std::time::Duration::from_nanos(123_456_789)
        );
        assert_eq!(
            t("2026-06-30T23:59:59.5Z"),
            base + std::time::Duration::from_millis(500)
        );
        // A leap second is read as second 59 of its minute.
        assert_eq!(t("2026-06-30T23:59:60Z"), base);
        assert_eq!(
            t("2026-06-30T23:59:60.25Z"),
            base + std::time::Duration::from_millis(250)
        );
        let naive = parse_time("2026-11-24T09:30:00.123456").expect_err("naive");
        assert_eq!(
            naive,
            "`2026-11-24T09:30:00.123456` has no offset: an offset is required, e.g. \
             2026-11-24T09:30:00+03:00 (or Z for UTC); a time without one names no single instant"
        );
        for bad in [
            "2026-06-30T23:59:59+24:00",
            "2026-06-30T23:59:59-24:00",
            "2026-06-30T23:59:59+03:60",
            "2026-06-30T23:59:59+0300",
            "2026-06-30T23:59:59+03",
            "2026-06-30T23:59Z",
            "2026-06-30T23:59:61Z",
            "2026-06-30T24:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-06-30T23:59:59.Z",
            "2026-06-30T23:59:59,5Z",
            "2026-06-30T23:59:59Z[UTC]",
            "2026-06-30T23:59:59ZZ",
            " 2026-06-30T23:59:59Z",
            "2026-06-30T23:59:59 Z",
            "+002026-06-30T23:59:59Z",
            "2026-06-30",
            "",
        ] {
            let e = parse_time(bad).expect_err(bad);
            assert!(e.contains("not an RFC 3339 time"), "{bad}: {e}");
        }
    }
}
