//! Timestamps as Reflexio's database holds them, turned into instants.
//!
//! The app writes several formats into the same columns:
//!
//! - ISO 8601 with an offset or `Z` (`2026-02-06T21:38:15.637037+00:00`): that instant;
//! - ISO 8601 without an offset (`2026-02-06T21:38:15.637037`): local time;
//! - `YYYY-MM-DD HH:MM:SS[.ffffff]` without an offset (Python's `str(datetime)`): local time;
//! - SQLite's `CURRENT_TIMESTAMP` (`2026-02-06 21:38:15`, always UTC), the default of columns
//!   declared `DEFAULT CURRENT_TIMESTAMP`.
//!
//! Local time is read in the configured zone (`--legacy-tz`, by default the system's). The last
//! two formats share a shape when Python's microsecond is 0 (`str(datetime)` then drops the
//! fraction), so the bridge tells them apart by the column: in a column whose declared default
//! is `CURRENT_TIMESTAMP`, a value of exactly `YYYY-MM-DD HH:MM:SS` (no fraction) is UTC — until
//! the column shows that the app writes local times there itself (see `db`), after which it is
//! local like the column's other values. Any other value without an offset, and every such
//! value in other columns, is local. Integers and reals are Unix seconds. A date alone is its
//! local midnight.

use jiff::civil::{DateTime, Time};
use jiff::fmt::temporal::Pieces;
use jiff::tz::{Offset, TimeZone};
use rusqlite::types::ValueRef;
use std::time::SystemTime;

/// Why a timestamp could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadTimestamp {
    /// The column is NULL.
    Null,
    /// Not a time in any of the known formats (or out of range).
    Unparseable,
}

/// Reads the timestamps of one column.
#[derive(Debug, Clone)]
pub(crate) struct TimestampColumn {
    zone: TimeZone,
    /// A value in the exact shape of `CURRENT_TIMESTAMP` is UTC: the column's declared default
    /// is `CURRENT_TIMESTAMP`, and the app is not known to write local times into it.
    seconds_are_utc: bool,
}

impl TimestampColumn {
    pub(crate) fn new(zone: TimeZone, seconds_are_utc: bool) -> Self {
        Self {
            zone,
            seconds_are_utc,
        }
    }

    /// From now on, a value in the shape of `CURRENT_TIMESTAMP` is local time, like the
    /// column's values with a fraction of a second.
    pub(crate) fn read_seconds_as_local(&mut self) {
        self.seconds_are_utc = false;
    }

    /// Whether a value in the shape of `CURRENT_TIMESTAMP` is read as UTC.
    #[cfg(test)]
    pub(crate) fn seconds_are_utc(&self) -> bool {
        self.seconds_are_utc
    }

    /// The instant `value` stands for.
    pub(crate) fn read(&self, value: ValueRef<'_>) -> Result<SystemTime, BadTimestamp> {
        let ts = match value {
            ValueRef::Null => return Err(BadTimestamp::Null),
            ValueRef::Integer(secs) => jiff::Timestamp::from_second(secs).ok(),
            ValueRef::Real(secs) if secs.is_finite() => {
                jiff::Timestamp::from_microsecond((secs * 1e6).round() as i64).ok()
            }
            ValueRef::Real(_) | ValueRef::Blob(_) => None,
            ValueRef::Text(text) => self.read_text(text.trim_ascii()),
        };
        ts.and_then(|ts| SystemTime::try_from(ts).ok())
            .ok_or(BadTimestamp::Unparseable)
    }

    fn read_text(&self, text: &[u8]) -> Option<jiff::Timestamp> {
        let (datetime, offset) = python_shape(text).or_else(|| general(text))?;
        match offset {
            Some(offset) => offset.to_timestamp(datetime).ok(),
            None if self.seconds_are_utc && is_current_timestamp(text) => {
                Offset::UTC.to_timestamp(datetime).ok()
            }
            None => self.zone.to_ambiguous_timestamp(datetime).compatible().ok(),
        }
    }
}

/// Any ISO 8601 or RFC 3339 date-time (or date), by jiff's parser: the date-time and its
/// offset, if it has one.
fn general(text: &[u8]) -> Option<(DateTime, Option<Offset>)> {
    let pieces = Pieces::parse(text).ok()?;
    let datetime = pieces
        .date()
        .to_datetime(pieces.time().unwrap_or(Time::midnight()));
    Some((datetime, pieces.offset().map(|o| o.to_numeric_offset())))
}

/// The shapes Python and SQLite write, `YYYY-MM-DD HH:MM:SS`, with a `T` or a space, an
/// optional fraction of 1 to 9 digits and an optional `Z` or `±HH:MM`, read without the general
/// parser (a fifth of its cost): the date-time and its offset, if it has one. `None` for
/// anything else, including a value in such a shape that is no valid time: the general parser
/// then decides.
fn python_shape(text: &[u8]) -> Option<(DateTime, Option<Offset>)> {
    let digits = |range: std::ops::Range<usize>| -> Option<i32> {
        text.get(range)?.iter().try_fold(0i32, |n, b| {
            b.is_ascii_digit().then(|| n * 10 + i32::from(b - b'0'))
        })
    };
    let at = |i: usize| text.get(i).copied();
    if at(4) != Some(b'-')
        || at(7) != Some(b'-')
        || !matches!(at(10), Some(b' ' | b'T'))
        || at(13) != Some(b':')
        || at(16) != Some(b':')
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &text[19..];
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&len) {
            return None;
        }
        let value = fraction[..len]
            .iter()
            .fold(0i32, |n, b| n * 10 + i32::from(b - b'0'));
        nanos = value * 10i32.pow(9 - len as u32);
        rest = &fraction[len..];
    }
    let offset = match rest {
        [] => None,
        [b'Z'] => Some(Offset::UTC),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let number = |a: &u8, b: &u8| -> Option<i32> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i32::from(a - b'0') * 10 + i32::from(b - b'0'))
            };
            let (h, m) = (number(h1, h2)?, number(m1, m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = (h * 3600 + m * 60) * if *sign == b'-' { -1 } else { 1 };
            Some(Offset::from_seconds(seconds).ok()?)
        }
        _ => return None,
    };
    let datetime = DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    Some((datetime, offset))
}

/// `YYYY-MM-DD HH:MM:SS`, the shape of SQLite's `CURRENT_TIMESTAMP`.
fn is_current_timestamp(text: &[u8]) -> bool {
    text.len() == 19 && text[10] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::try_from(rfc3339.parse::<jiff::Timestamp>().expect("valid")).expect("range")
    }

    fn read(column: &TimestampColumn, text: &str) -> Result<SystemTime, BadTimestamp> {
        column.read(ValueRef::Text(text.as_bytes()))
    }

    #[test]
    fn every_format_the_app_writes_is_read() {
        let moscow = TimeZone::get("Europe/Moscow").expect("zone"); // UTC+3, no DST
        let plain = TimestampColumn::new(moscow.clone(), false);
        let defaulted = TimestampColumn::new(moscow, true);
        for column in [&plain, &defaulted] {
            // With an offset: that instant, whatever the zone.
            assert_eq!(
                read(column, "2026-02-06T21:38:15.637037+00:00"),
                Ok(at("2026-02-06T21:38:15.637037Z"))
            );
            assert_eq!(
                read(column, "2026-02-06T21:38:15Z"),
                Ok(at("2026-02-06T21:38:15Z"))
            );
            assert_eq!(
                read(column, "2026-02-06T23:38:15-02:00"),
                Ok(at("2026-02-07T01:38:15Z"))
            );
            // Local time: ISO without an offset, and Python's str(datetime) with a fraction.
            assert_eq!(
                read(column, "2026-02-06T21:38:15.5"),
                Ok(at("2026-02-06T18:38:15.5Z"))
            );
            assert_eq!(
                read(column, "2026-02-06 21:38:15.637037"),
                Ok(at("2026-02-06T18:38:15.637037Z"))
            );
            assert_eq!(read(column, "2026-02-06"), Ok(at("2026-02-05T21:00:00Z")));
            // Unix seconds.
            assert_eq!(
                column.read(ValueRef::Integer(1_770_413_895)),
                Ok(at("2026-02-06T21:38:15Z"))
            );
            assert_eq!(
                column.read(ValueRef::Real(1_770_413_895.25)),
                Ok(at("2026-02-06T21:38:15.25Z"))
            );
            assert_eq!(column.read(ValueRef::Null), Err(BadTimestamp::Null));
            for bad in [
                "",
                "yesterday",
                "2026-02-30 10:00:00",
                "2026-02-06 25:00:00",
                "06/02/2026",
            ] {
                assert_eq!(read(column, bad), Err(BadTimestamp::Unparseable), "{bad}");
            }
            assert_eq!(
                column.read(ValueRef::Blob(b"2026-02-06")),
                Err(BadTimestamp::Unparseable)
            );
            assert_eq!(
                column.read(ValueRef::Real(f64::NAN)),
                Err(BadTimestamp::Unparseable)
            );
        }
        // CURRENT_TIMESTAMP's shape: UTC in a column that defaults to it, local elsewhere, and
        // local once the column is known to hold the app's own local times.
        assert_eq!(
            read(&defaulted, "2026-02-06 21:38:15"),
            Ok(at("2026-02-06T21:38:15Z"))
        );
        assert_eq!(
            read(&plain, "2026-02-06 21:38:15"),
            Ok(at("2026-02-06T18:38:15Z"))
        );
        let mut app_written = defaulted.clone();
        app_written.read_seconds_as_local();
        assert!(!app_written.seconds_are_utc() && defaulted.seconds_are_utc());
        assert_eq!(
            read(&app_written, "2026-02-06 21:38:15"),
            Ok(at("2026-02-06T18:38:15Z"))
        );
        assert_eq!(
            read(&app_written, "2026-02-06 21:38:15.5"),
            Ok(at("2026-02-06T18:38:15.5Z"))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The fast reading of Python's shapes is the general parser's, or leaves the value
        /// to it: dates and times in and out of range, fractions of 0 to 11 digits, offsets.
        #[test]
        fn pythons_shapes_read_as_the_general_parser_reads_them(
            year in 0u32..10_000,
            month in 0u32..14,
            day in 0u32..33,
            hour in 0u32..26,
            minute in 0u32..61,
            second in 0u32..62,
            separator in proptest::sample::select(vec![' ', 'T', 't', '_']),
            fraction in proptest::option::of("[0-9]{0,11}"),
            offset in proptest::option::of((
                proptest::sample::select(vec!["+", "-", "Z", "z", "+0"]),
                0u32..30,
                0u32..70,
            )),
        ) {
            let mut text = format!(
                "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}"
            );
            if let Some(f) = fraction {
                text.push('.');
                text.push_str(&f);
            }
            match offset {
                Some((z @ ("Z" | "z"), _, _)) => text.push_str(z),
                Some((sign, h, m)) => text.push_str(&format!("{sign}{h:02}:{m:02}")),
                None => {}
            }
            if let Some(fast) = python_shape(text.as_bytes()) {
                proptest::prop_assert_eq!(Some(fast), general(text.as_bytes()), "{}", text);
            }
        }
    }

    #[test]
    fn pythons_own_shapes_take_the_fast_reading() {
        for text in [
            "2026-11-30T03:18:43.319067+00:00",
            "2026-11-30T03:18:43+00:00",
            "2026-11-30 08:19:18.549622",
            "2026-11-30 08:19:18",
            "2026-11-30T08:19:18.5Z",
            "2026-11-30T08:19:18.123456789-05:30",
        ] {
            let fast = python_shape(text.as_bytes());
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast, general(text.as_bytes()), "{text}");
        }
        for other in [
            "2026-11-30",
            "2026-02-30 10:00:00",
            "2026-11-30 08:19:18.",
            "1770413895",
        ] {
            assert_eq!(python_shape(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn local_times_follow_daylight_saving_time() {
        let new_york =
            TimestampColumn::new(TimeZone::get("America/New_York").expect("zone"), false);
        assert_eq!(
            read(&new_york, "2026-01-15 12:00:00"),
            Ok(at("2026-01-15T17:00:00Z"))
        );
        assert_eq!(
            read(&new_york, "2026-07-15 12:00:00"),
            Ok(at("2026-07-15T16:00:00Z"))
        );
        // 02:30 does not exist on 2026-03-08 (clocks jump from 2:00 to 3:00): read as 03:30 EDT.
        assert_eq!(
            read(&new_york, "2026-03-08 02:30:00"),
            Ok(at("2026-03-08T07:30:00Z"))
        );
    }
}
