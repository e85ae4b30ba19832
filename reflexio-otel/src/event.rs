//! Typed Reflexio events and the validated values they carry.
//!
//! Every value is checked when it is built ([`Fraction::new`], [`Rounds::new`],
//! [`Name::new`]), so an [`Event`] that exists is valid and nothing past this boundary checks
//! it again.

use std::fmt;
use thiserror::Error;

/// Fractions are stored as integer billionths, so sums are exact and merge in any order.
pub(crate) const FRACTION_SCALE: u64 = 1_000_000_000;

/// The largest number of CoVe verification rounds accepted for one fact.
pub const MAX_ROUNDS: u32 = 1_000;

/// The longest [`Name`], in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The most records one retention run may report: 2^53, the largest integer that JSON numbers
/// (IEEE 754 doubles) and Prometheus values still hold exactly.
pub(crate) const MAX_DELETED_RECORDS: u64 = 1 << 53;

/// The largest process id: the largest positive `pid_t`.
pub(crate) const MAX_PID: u32 = i32::MAX as u32;

/// A value that failed validation, and the field it was meant for.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("invalid {field}: {problem}")]
pub struct ValueError {
    field: &'static str,
    problem: Problem,
}

/// What was wrong with a value.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Problem {
    /// NaN or an infinity.
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    /// A number outside its allowed range.
    #[error("{value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The rejected value.
        value: f64,
        /// The smallest allowed value.
        min: f64,
        /// The largest allowed value.
        max: f64,
    },
    /// An empty name.
    #[error("it must not be empty")]
    Empty,
    /// A name longer than [`MAX_NAME_LEN`] bytes.
    #[error("it is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A name holding a control character (newline, tab, NUL, ...).
    #[error("it contains a control character")]
    ControlCharacter,
    /// A count above its largest allowed value.
    #[error("{value} is above the largest allowed, {max}")]
    TooMany {
        /// The rejected count.
        value: u64,
        /// The largest allowed count.
        max: u64,
    },
    /// A character other than visible ASCII (`!` to `~`): a space, a control character, or
    /// anything past ASCII.
    #[error("it must hold visible ASCII characters only (`!` to `~`)")]
    NotVisibleAscii,
}

/// The idempotency key of a durable batch: 1 to [`IdempotencyKey::MAX_LEN`] visible ASCII
/// characters (a random UUID is the usual choice), and optionally a fingerprint of the batch (a
/// hash of what was sent), so that a key reused for another batch is told apart from a retry.
///
/// ```
/// use reflexio_otel::IdempotencyKey;
/// let key = IdempotencyKey::new("0b8e6f5c-8a4e-4ef1-9a4a-3c1f8f3b9d2e")?.with_fingerprint([7; 32]);
/// assert_eq!(key.fingerprint(), &[7; 32]);
/// assert!(IdempotencyKey::new("with space").is_err());
/// assert!(IdempotencyKey::new(&"k".repeat(256)).is_err());
/// # Ok::<(), reflexio_otel::ValueError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    key: Box<str>,
    fingerprint: Box<[u8]>,
}

impl IdempotencyKey {
    /// The longest key, in characters.
    pub const MAX_LEN: usize = 255;

    /// A key, checked.
    pub fn new(key: &str) -> Result<Self, ValueError> {
        let problem = if key.is_empty() {
            Some(Problem::Empty)
        } else if key.len() > Self::MAX_LEN {
            Some(Problem::TooLong {
                len: key.len(),
                max: Self::MAX_LEN,
            })
        } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
            Some(Problem::NotVisibleAscii)
        } else {
            None
        };
        match problem {
            Some(p) => Err(ValueError::new("idempotency_key", p)),
            None => Ok(Self {
                key: key.into(),
                fingerprint: Box::new([]),
            }),
        }
    }

    /// The same key with the fingerprint of its batch.
    #[must_use]
    pub fn with_fingerprint(mut self, fingerprint: impl Into<Vec<u8>>) -> Self {
        self.fingerprint = fingerprint.into().into_boxed_slice();
        self
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The fingerprint of its batch (empty if none was given).
    pub fn fingerprint(&self) -> &[u8] {
        &self.fingerprint
    }
}

impl ValueError {
    pub(crate) fn new(field: &'static str, problem: Problem) -> Self {
        Self { field, problem }
    }

    /// The field the value was meant for, such as `citation_coverage`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What was wrong with it.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The same problem, reported against another field name.
    #[must_use]
    pub fn in_field(mut self, field: &'static str) -> Self {
        self.field = field;
        self
    }
}

/// A number in `[0, 1]`, kept to nine decimal places.
///
/// ```
/// use reflexio_otel::Fraction;
/// assert_eq!(Fraction::new(0.98).unwrap().get(), 0.98);
/// assert!(Fraction::new(f64::NAN).is_err());
/// assert!(Fraction::new(1.01).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fraction(u32);

impl Fraction {
    /// Zero.
    pub const ZERO: Fraction = Fraction(0);
    /// One.
    pub const ONE: Fraction = Fraction(FRACTION_SCALE as u32);

    /// Validates `value`: finite and within `[0, 1]`. It is rounded to nine decimal places.
    pub fn new(value: f64) -> Result<Self, ValueError> {
        if !value.is_finite() {
            return Err(ValueError::new("fraction", Problem::NotFinite(value)));
        }
        if !(0.0..=1.0).contains(&value) {
            return Err(ValueError::new(
                "fraction",
                Problem::OutOfRange {
                    value,
                    min: 0.0,
                    max: 1.0,
                },
            ));
        }
        // In range, so the product is within [0, 1e9] and the cast is exact after rounding.
        Ok(Self((value * FRACTION_SCALE as f64).round() as u32))
    }

    /// The value as a float.
    pub fn get(self) -> f64 {
        f64::from(self.0) / FRACTION_SCALE as f64
    }

    /// The value in billionths.
    pub(crate) fn nanos(self) -> u64 {
        u64::from(self.0)
    }
}

impl TryFrom<f64> for Fraction {
    type Error = ValueError;
    fn try_from(value: f64) -> Result<Self, ValueError> {
        Self::new(value)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// The number of CoVe verification rounds a fact went through: `1..=`[`MAX_ROUNDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rounds(u32);

impl Rounds {
    /// Validates `rounds`.
    pub fn new(rounds: u32) -> Result<Self, ValueError> {
        if (1..=MAX_ROUNDS).contains(&rounds) {
            Ok(Self(rounds))
        } else {
            Err(ValueError::new(
                "rounds",
                Problem::OutOfRange {
                    value: f64::from(rounds),
                    min: 1.0,
                    max: f64::from(MAX_ROUNDS),
                },
            ))
        }
    }

    /// The number of rounds.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Rounds {
    type Error = ValueError;
    fn try_from(value: u32) -> Result<Self, ValueError> {
        Self::new(value)
    }
}

/// A table, lock or holder name: 1 to [`MAX_NAME_LEN`] bytes of UTF-8 without control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(std::sync::Arc<str>);

impl Name {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, ValueError> {
        let problem = if name.is_empty() {
            Problem::Empty
        } else if name.len() > MAX_NAME_LEN {
            Problem::TooLong {
                len: name.len(),
                max: MAX_NAME_LEN,
            }
        } else if name.chars().any(char::is_control) {
            Problem::ControlCharacter
        } else {
            return Ok(Self(name.into()));
        };
        Err(ValueError::new("name", problem))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Name {
    type Error = ValueError;
    fn try_from(value: &str) -> Result<Self, ValueError> {
        Self::new(value)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The outcome of Chain-of-Verification for one fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoveResult {
    /// CoVe's confidence in the fact.
    pub confidence: Fraction,
    /// Verification rounds it took.
    pub rounds: Rounds,
}

impl CoveResult {
    /// Validates a confidence in `[0, 1]` and a round count in `1..=`[`MAX_ROUNDS`].
    pub fn new(confidence: f64, rounds: u32) -> Result<Self, ValueError> {
        Ok(Self {
            confidence: Fraction::new(confidence).map_err(|e| e.in_field("confidence"))?,
            rounds: Rounds::new(rounds)?,
        })
    }
}

/// A fact extracted from a transcription, with whichever quality verdicts are known.
///
/// Each verdict — hallucinated or not, atomic or not, citation coverage, CoVe result — is
/// optional and counts on its own: a fact known to be hallucinated whose citation coverage is
/// not known counts in the hallucination rate and not in the mean citation coverage. A fact
/// with no verdict at all counts only as a fact.
///
/// ```
/// use reflexio_otel::Fact;
/// let fact = Fact::new(0.98)?.hallucinated(true).with_cove(0.91, 2)?;
/// assert_eq!((fact.hallucinated, fact.atomic), (Some(true), Some(true)));
///
/// let partial = Fact::unassessed().hallucinated(true);
/// assert_eq!((partial.atomic, partial.citation_coverage), (None, None));
/// # Ok::<(), reflexio_otel::ValueError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fact {
    /// Whether CoVe (or a reviewer) flagged the fact as not supported by its source; `None`
    /// when not assessed.
    pub hallucinated: Option<bool>,
    /// Whether the fact states one thing (`Some(false)` counts as an atomicity violation);
    /// `None` when not assessed.
    pub atomic: Option<bool>,
    /// The share of the fact backed by citations; `None` when not measured.
    pub citation_coverage: Option<Fraction>,
    /// The CoVe result, if the fact went through CoVe.
    pub cove: Option<CoveResult>,
}

impl Fact {
    /// A fact with every quality verdict: not hallucinated, atomic, the given citation
    /// coverage, and no CoVe result.
    pub fn new(citation_coverage: f64) -> Result<Self, ValueError> {
        Self {
            hallucinated: Some(false),
            atomic: Some(true),
            ..Self::unassessed()
        }
        .with_citation_coverage(citation_coverage)
    }

    /// A fact with no verdict yet: it counts as a fact, and in no quality figure until a
    /// verdict is set.
    pub const fn unassessed() -> Self {
        Self {
            hallucinated: None,
            atomic: None,
            citation_coverage: None,
            cove: None,
        }
    }

    /// Sets the hallucination verdict.
    #[must_use]
    pub fn hallucinated(mut self, hallucinated: bool) -> Self {
        self.hallucinated = Some(hallucinated);
        self
    }

    /// Sets the atomicity verdict.
    #[must_use]
    pub fn atomic(mut self, atomic: bool) -> Self {
        self.atomic = Some(atomic);
        self
    }

    /// Sets the citation coverage, validated: finite and within `[0, 1]`.
    pub fn with_citation_coverage(mut self, coverage: f64) -> Result<Self, ValueError> {
        self.citation_coverage =
            Some(Fraction::new(coverage).map_err(|e| e.in_field("citation_coverage"))?);
        Ok(self)
    }

    /// Attaches a CoVe result.
    pub fn with_cove(mut self, confidence: f64, rounds: u32) -> Result<Self, ValueError> {
        self.cove = Some(CoveResult::new(confidence, rounds)?);
        Ok(self)
    }
}

/// One run of a retention job over one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetentionRun {
    /// The table the job cleaned.
    pub table: Name,
    /// Records it deleted (or, for a dry run, would have deleted): at most 2^53.
    pub deleted_records: u64,
    /// A dry run deletes nothing; its records are not counted as deleted.
    pub dry_run: bool,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl RetentionRun {
    /// A successful, non-dry run. `deleted_records` is at most 2^53.
    pub fn new(table: &str, deleted_records: u64) -> Result<Self, ValueError> {
        if deleted_records > MAX_DELETED_RECORDS {
            return Err(ValueError::new(
                "deleted_records",
                Problem::TooMany {
                    value: deleted_records,
                    max: MAX_DELETED_RECORDS,
                },
            ));
        }
        Ok(Self {
            table: Name::new(table).map_err(|e| e.in_field("table"))?,
            deleted_records,
            dry_run: false,
            error: None,
        })
    }

    /// Marks the run as a dry run.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Marks the run as failed.
    #[must_use]
    pub fn failed(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Records this run counts as deleted: none for a dry run.
    pub(crate) fn counted_deletions(&self) -> u64 {
        if self.dry_run {
            0
        } else {
            self.deleted_records
        }
    }
}

/// The application's Chain-of-Verification settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoveConfig {
    /// CoVe runs on extracted facts.
    pub enabled: bool,
    /// Facts below this confidence are flagged.
    pub threshold: Fraction,
}

impl CoveConfig {
    /// Validates a threshold in `[0, 1]`.
    pub fn new(enabled: bool, threshold: f64) -> Result<Self, ValueError> {
        Ok(Self {
            enabled,
            threshold: Fraction::new(threshold).map_err(|e| e.in_field("threshold"))?,
        })
    }
}

/// A process lock taken or released by a holder. [`LockEvent::for_this_process`] fills in this
/// process's id and host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockEvent {
    /// The lock, e.g. `daily_digest`.
    pub name: Name,
    /// Who holds it, e.g. `worker-1`.
    pub holder: Name,
    /// The holder's process id, when known: `1..=2147483647`.
    pub pid: Option<u32>,
    /// The holder's host, when known.
    pub host: Option<Name>,
}

impl LockEvent {
    /// A lock event without process or host information.
    pub fn new(name: &str, holder: &str) -> Result<Self, ValueError> {
        Ok(Self {
            name: Name::new(name)?,
            holder: Name::new(holder).map_err(|e| e.in_field("holder"))?,
            pid: None,
            host: None,
        })
    }

    /// Sets the holder's process id, which must be a positive `pid_t`: `1..=2147483647`.
    pub fn with_pid(mut self, pid: u32) -> Result<Self, ValueError> {
        if !(1..=MAX_PID).contains(&pid) {
            return Err(ValueError::new(
                "pid",
                Problem::OutOfRange {
                    value: f64::from(pid),
                    min: 1.0,
                    max: f64::from(MAX_PID),
                },
            ));
        }
        self.pid = Some(pid);
        Ok(self)
    }
}

/// Something that happened in a Reflexio pipeline.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An audio segment was transcribed.
    Transcription,
    /// A fact was extracted, with whichever verdicts are known.
    Fact(Fact),
    /// A fact was extracted without a hallucination, atomicity or citation coverage verdict:
    /// the same as `Event::Fact` of [`Fact::unassessed`] with this CoVe result.
    UnassessedFact {
        /// Its CoVe result, if known.
        cove: Option<CoveResult>,
    },
    /// A daily digest was generated.
    Digest,
    /// A retention job ran over a table.
    Retention(RetentionRun),
    /// The CoVe configuration was reported.
    CoveConfig(CoveConfig),
    /// A process lock was taken.
    LockAcquired(LockEvent),
    /// A process lock was released.
    LockReleased(LockEvent),
}

impl Event {
    /// The fact this event records, if it records one.
    pub(crate) fn fact(&self) -> Option<Fact> {
        match self {
            Event::Fact(fact) => Some(*fact),
            Event::UnassessedFact { cove } => Some(Fact {
                cove: *cove,
                ..Fact::unassessed()
            }),
            _ => None,
        }
    }
}

impl From<Fact> for Event {
    fn from(fact: Fact) -> Self {
        Event::Fact(fact)
    }
}

impl From<RetentionRun> for Event {
    fn from(run: RetentionRun) -> Self {
        Event::Retention(run)
    }
}

impl From<CoveConfig> for Event {
    fn from(config: CoveConfig) -> Self {
        Event::CoveConfig(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_round_to_nine_places_and_reject_bad_values() {
        assert_eq!(Fraction::new(0.98).map(Fraction::get), Ok(0.98));
        assert_eq!(Fraction::new(0.0), Ok(Fraction::ZERO));
        assert_eq!(Fraction::new(1.0), Ok(Fraction::ONE));
        assert_eq!(
            Fraction::new(0.1234567894).map(Fraction::nanos),
            Ok(123_456_789)
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                Fraction::new(bad).map_err(|e| e.problem().clone()),
                Err(Problem::NotFinite(_))
            ));
        }
        for bad in [-0.0001, 1.000_000_1, -1.0, 2.0] {
            let err = Fraction::new(bad).expect_err("out of range");
            assert!(matches!(err.problem(), Problem::OutOfRange { .. }), "{err}");
        }
    }

    #[test]
    fn errors_name_their_field() {
        let err = Fact::new(1.5).expect_err("coverage above 1");
        assert_eq!(err.field(), "citation_coverage");
        assert_eq!(
            err.to_string(),
            "invalid citation_coverage: 1.5 is outside [0, 1]"
        );
        let err = CoveResult::new(0.5, 0).expect_err("zero rounds");
        assert_eq!(err.field(), "rounds");
        let err = CoveResult::new(f64::NAN, 1).expect_err("NaN confidence");
        assert_eq!(err.field(), "confidence");
        let err = RetentionRun::new("", 1).expect_err("empty table");
        assert_eq!(err.to_string(), "invalid table: it must not be empty");
        let err = LockEvent::new("digest", "a\nb").expect_err("newline in holder");
        assert_eq!(err.field(), "holder");
    }

    #[test]
    fn names_are_bounded() {
        assert!(Name::new(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(matches!(
            Name::new(&"x".repeat(MAX_NAME_LEN + 1)).map_err(|e| e.problem().clone()),
            Err(Problem::TooLong { .. })
        ));
        assert_eq!(
            Name::new("таблица").map(|n| n.to_string()),
            Ok("таблица".into())
        );
    }

    #[test]
    fn rounds_are_bounded() {
        assert!(Rounds::new(1).is_ok());
        assert!(Rounds::new(MAX_ROUNDS).is_ok());
        assert!(Rounds::new(0).is_err());
        assert!(Rounds::new(MAX_ROUNDS + 1).is_err());
    }

    #[test]
    fn each_verdict_is_set_on_its_own() {
        let fact = Fact::new(0.5).expect("valid");
        assert_eq!(
            (fact.hallucinated, fact.atomic, fact.cove),
            (Some(false), Some(true), None)
        );
        assert_eq!(fact.citation_coverage.map(Fraction::get), Some(0.5));
        assert_eq!(Fact::unassessed(), Fact::default());
        let partial = Fact::unassessed().atomic(false);
        assert_eq!(
            (
                partial.hallucinated,
                partial.atomic,
                partial.citation_coverage
            ),
            (None, Some(false), None)
        );
        let err = Fact::unassessed()
            .with_citation_coverage(f64::NAN)
            .expect_err("NaN");
        assert_eq!(err.field(), "citation_coverage");
        let cove = CoveResult::new(0.7, 1).expect("valid");
        assert_eq!(
            Event::UnassessedFact { cove: Some(cove) }.fact(),
            Some(Fact {
                cove: Some(cove),
                ..Fact::unassessed()
            })
        );
        assert_eq!(Event::Digest.fact(), None);
    }

    #[test]
    fn counts_and_process_ids_are_bounded() {
        assert!(RetentionRun::new("facts", MAX_DELETED_RECORDS).is_ok());
        let err = RetentionRun::new("facts", MAX_DELETED_RECORDS + 1).expect_err("2^53 + 1");
        assert_eq!(err.field(), "deleted_records");
        assert_eq!(
            err.to_string(),
            "invalid deleted_records: 9007199254740993 is above the largest allowed, \
             9007199254740992"
        );
        assert!(RetentionRun::new("facts", u64::MAX).is_err());
        let lock = LockEvent::new("n", "h").expect("valid");
        assert_eq!(lock.clone().with_pid(1).map(|l| l.pid), Ok(Some(1)));
        assert_eq!(
            lock.clone().with_pid(2_147_483_647).map(|l| l.pid),
            Ok(Some(2_147_483_647))
        );
        for bad in [0, 2_147_483_648, u32::MAX] {
            let err = lock.clone().with_pid(bad).expect_err("out of range");
            assert_eq!(err.field(), "pid");
        }
    }

    #[test]
    fn dry_runs_delete_nothing() {
        let run = RetentionRun::new("facts", 7).expect("valid");
        assert_eq!(run.counted_deletions(), 7);
        assert_eq!(run.dry_run(true).counted_deletions(), 0);
    }
}
