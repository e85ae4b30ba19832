"""The event vocabulary: validation at the call, exactly as the bridge validates, and the JSON
wire encoding of each event type.

Nothing here does I/O or imports another module of the package. A record is a plain tuple
``(time_us, kind, *values)`` built after validation; :func:`encode` turns it into one JSON object
of the ``POST /v1/events`` wire format.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import operator
import re
import time as _time
from typing import Any, List, Optional, Tuple

#: The longest table, lock, holder or host name, in UTF-8 bytes.
MAX_NAME_BYTES = 128
#: The largest ``deleted_records`` (2^53, exact in JSON numbers read as doubles).
MAX_DELETED_RECORDS = 2**53
#: The largest number of CoVe verification rounds.
MAX_ROUNDS = 1000
#: The largest process id the bridge takes (a positive 32-bit signed integer).
MAX_PID = 2**31 - 1
#: How far ahead of the clock an event time may be, in microseconds (the bridge's bound).
MAX_AHEAD_US = 5 * 60 * 1_000_000

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_US = _dt.timedelta(microseconds=1)

Record = Tuple[Any, ...]


class InvalidEvent(ValueError):
    """A value the bridge would refuse, raised at the call that recorded it.

    ``field`` names the field as the wire format does (``citation_coverage``, ``cove.rounds``).
    Nothing is recorded when it is raised.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid {field}: {problem}")
        self.field = field
        self.problem = problem


def check_bool(field: str, value: object) -> bool:
    if value is True or value is False:
        return value
    raise InvalidEvent(field, f"{value!r} is not a bool")


def check_fraction(field: str, value: object) -> float:
    """A finite number in [0, 1] (bools are refused: JSON would send them as true/false)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidEvent(field, f"{value!r} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidEvent(field, f"{v} is not a finite number")
    if not 0.0 <= v <= 1.0:
        raise InvalidEvent(field, f"{v} is outside [0, 1]")
    return v


def check_int(field: str, value: object, low: int, high: int) -> int:
    if value is True or value is False:
        raise InvalidEvent(field, f"{value!r} is not an integer")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidEvent(field, f"{value!r} is not an integer") from None
    if not low <= v <= high:
        raise InvalidEvent(field, f"{v} is outside [{low}, {high}]")
    return v


def check_name(field: str, value: object) -> str:
    """1 to 128 bytes of UTF-8 without control characters."""
    if not isinstance(value, str):
        raise InvalidEvent(field, f"{value!r} is not a string")
    if not value:
        raise InvalidEvent(field, "it must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEvent(field, "it is not valid Unicode (a lone surrogate)") from None
    if size > MAX_NAME_BYTES:
        raise InvalidEvent(field, f"it is {size} bytes long; the limit is {MAX_NAME_BYTES}")
    if _CONTROL.search(value):
        raise InvalidEvent(field, "it contains a control character")
    return value


def check_text(field: str, value: object) -> str:
    """Any string that JSON can carry as UTF-8."""
    if not isinstance(value, str):
        raise InvalidEvent(field, f"{value!r} is not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(field, "it is not valid Unicode (a lone surrogate)") from None
    return value


def check_cove(value: object) -> Tuple[float, int]:
    """A CoVe result: a mapping or an object with ``confidence`` and ``rounds``, or a pair."""
    if isinstance(value, dict):
        unknown = set(value) - {"confidence", "rounds"}
        if unknown:
            raise InvalidEvent(f"cove.{sorted(unknown)[0]}", "not a field of a CoVe result")
        if "confidence" not in value:
            raise InvalidEvent("cove.confidence", "missing")
        if "rounds" not in value:
            raise InvalidEvent("cove.rounds", "missing")
        confidence, rounds = value["confidence"], value["rounds"]
    elif isinstance(value, tuple) and len(value) == 2:
        confidence, rounds = value
    elif hasattr(value, "confidence") and hasattr(value, "rounds"):
        confidence, rounds = value.confidence, value.rounds
    else:
        raise InvalidEvent("cove", f"{value!r} is not a CoVe result (confidence, rounds)")
    return (
        check_fraction("cove.confidence", confidence),
        check_int("cove.rounds", rounds, 1, MAX_ROUNDS),
    )


def time_us(value: object, now_us: int) -> int:
    """Microseconds since the Unix epoch of a timezone-aware ``datetime``.

    Naive datetimes are refused: the instant they mean depends on a zone the bridge cannot
    know. Times before 1970 or more than 5 minutes ahead of ``now_us`` are refused, as the
    bridge refuses them.
    """
    if not isinstance(value, _dt.datetime):
        raise InvalidEvent("time", f"{value!r} is not a datetime")
    offset = value.utcoffset()
    if offset is None:
        raise InvalidEvent(
            "time",
            f"{value.isoformat()} has no time zone; pass an aware datetime such as "
            "datetime.now(timezone.utc) or dt.astimezone()",
        )
    us = (value - _EPOCH) // _US
    if us < 0:
        raise InvalidEvent("time", f"{value.isoformat()} is before 1970")
    if us > now_us + MAX_AHEAD_US:
        raise InvalidEvent(
            "time", f"{value.isoformat()} is more than 5 minutes ahead of the clock"
        )
    return us


def now_us() -> int:
    return _time.time_ns() // 1000


# Record kinds: the first element after the time.
FACT = 0
TRANSCRIPTION = 1
DIGEST = 2
RETENTION = 3
LOCK_ACQUIRED = 4
LOCK_RELEASED = 5
COVE_CONFIG = 6

class _Stamp:
    """The formatted second of the last time formatted (times arrive in order, mostly)."""

    second = -1
    prefix = ""


def format_time(us: int) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-24T09:30:00.000000Z``."""
    sec = us // 1_000_000
    stamp = _Stamp
    if sec != stamp.second:
        prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))
        stamp.prefix, stamp.second = prefix, sec
    else:
        prefix = stamp.prefix
    return f"{prefix}.{us - sec * 1_000_000:06d}Z"


_dumps = json.dumps


def _fact(r: Record) -> str:
    s = '{"type":"fact","time":"' + format_time(r[0]) + '"'
    h = r[2]
    if h is not None:
        s += ',"hallucinated":true' if h else ',"hallucinated":false'
    a = r[3]
    if a is not None:
        s += ',"atomic":true' if a else ',"atomic":false'
    c = r[4]
    if c is not None:
        s += ',"citation_coverage":' + repr(c)
    cove = r[5]
    if cove is not None:
        s += ',"cove":{"confidence":%r,"rounds":%d}' % cove
    return s + "}"


def _plain(kind: str) -> Any:
    def encode(r: Record) -> str:
        return '{"type":"%s","time":"%s"}' % (kind, format_time(r[0]))

    return encode


def _retention(r: Record) -> str:
    return '{"type":"retention","time":"%s","table":%s,"deleted_records":%d,"dry_run":%s,"error":%s}' % (
        format_time(r[0]),
        _dumps(r[2]),
        r[3],
        ("true" if r[4] else "false"),
        "null" if r[5] is None else _dumps(r[5]),
    )


def _lock(kind: str) -> Any:
    def encode(r: Record) -> str:
        extra = ""
        if kind == "lock_acquired":
            if r[4] is not None:
                extra += ',"pid":%d' % r[4]
            if r[5] is not None:
                extra += ',"host":' + _dumps(r[5])
        return '{"type":"%s","time":"%s","name":%s,"holder":%s%s}' % (
            kind,
            format_time(r[0]),
            _dumps(r[2]),
            _dumps(r[3]),
            extra,
        )

    return encode


def _cove_config(r: Record) -> str:
    return '{"type":"cove_config","time":"%s","enabled":%s,"threshold":%r}' % (
        format_time(r[0]),
        ("true" if r[2] else "false"),
        r[3],
    )


_ENCODERS = (
    _fact,
    _plain("transcription"),
    _plain("digest"),
    _retention,
    _lock("lock_acquired"),
    _lock("lock_released"),
    _cove_config,
)


def encode(record: Record) -> str:
    """One event as a JSON object of the wire format."""
    return _ENCODERS[record[1]](record)


def fact_record(
    t: int,
    hallucinated: Optional[bool],
    atomic: Optional[bool],
    citation_coverage: Optional[float],
    cove: object,
) -> Record:
    """Validates a fact's verdicts; each is independent and may be ``None`` (not assessed)."""
    if hallucinated is not None and hallucinated is not True and hallucinated is not False:
        check_bool("hallucinated", hallucinated)
    if atomic is not None and atomic is not True and atomic is not False:
        check_bool("atomic", atomic)
    if citation_coverage is not None:
        c = citation_coverage
        if type(c) is not float or not 0.0 <= c <= 1.0:
            citation_coverage = check_fraction("citation_coverage", c)
    cv: Optional[Tuple[float, int]] = None
    if cove is not None:
        cv = check_cove(cove)
    return (t, FACT, hallucinated, atomic, citation_coverage, cv)
