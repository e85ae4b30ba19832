"""Validation at the call and the wire encoding, without a bridge."""

from __future__ import annotations

import datetime as dt
import json
import math
from fractions import Fraction

import pytest

from reflexio_telemetry import Client, Cove, InvalidEvent
from reflexio_telemetry import _events as ev

UTC = dt.timezone.utc


@pytest.fixture
def client():
    # Nothing listens there: these tests only record; close() drops what is queued.
    c = Client("http://127.0.0.1:9", flush_interval=3600)
    yield c
    c.close(timeout=0.01)


BAD = [
    ("fact", dict(citation_coverage=1.5), "citation_coverage", "outside [0, 1]"),
    ("fact", dict(citation_coverage=-0.0001), "citation_coverage", "outside"),
    ("fact", dict(citation_coverage=math.nan), "citation_coverage", "not a finite number"),
    ("fact", dict(citation_coverage=math.inf), "citation_coverage", "not a finite number"),
    ("fact", dict(citation_coverage=True), "citation_coverage", "not a number"),
    ("fact", dict(citation_coverage="0.5"), "citation_coverage", "not a number"),
    ("fact", dict(hallucinated=1), "hallucinated", "not a bool"),
    ("fact", dict(atomic="yes"), "atomic", "not a bool"),
    ("fact", dict(cove=Cove(0.9, 0)), "cove.rounds", "outside [1, 1000]"),
    ("fact", dict(cove=Cove(0.9, 1001)), "cove.rounds", "outside"),
    ("fact", dict(cove=Cove(0.9, 1.5)), "cove.rounds", "not an integer"),
    ("fact", dict(cove=Cove(1.1, 1)), "cove.confidence", "outside"),
    ("fact", dict(cove={"confidence": 0.9}), "cove.rounds", "missing"),
    ("fact", dict(cove={"confidence": 0.9, "rounds": 1, "x": 1}), "cove.x", "not a field"),
    ("fact", dict(cove=0.9), "cove", "not a CoVe result"),
    ("fact", dict(time=dt.datetime(2026, 11, 24, 9, 30)), "time", "has no time zone"),
    ("fact", dict(time="2026-11-24T09:30:00Z"), "time", "not a datetime"),
    ("fact", dict(time=dt.datetime(1969, 12, 31, tzinfo=UTC)), "time", "before 1970"),
    # An hour ahead: the list is built when the tests are collected, and must still be more than
    # 5 minutes ahead when this case runs, after the slower tests.
    ("fact", dict(time=dt.datetime.now(UTC) + dt.timedelta(hours=1)), "time", "5 minutes ahead"),
    ("retention", dict(table="", deleted=1), "table", "must not be empty"),
    ("retention", dict(table="t" * 129, deleted=1), "table", "129 bytes"),
    ("retention", dict(table="é" * 65, deleted=1), "table", "130 bytes"),
    ("retention", dict(table="a\nb", deleted=1), "table", "control character"),
    ("retention", dict(table="a\x85b", deleted=1), "table", "control character"),
    ("retention", dict(table="\ud800", deleted=1), "table", "lone surrogate"),
    ("retention", dict(table=5, deleted=1), "table", "not a string"),
    ("retention", dict(table="facts", deleted=-1), "deleted_records", "outside"),
    ("retention", dict(table="facts", deleted=2**53 + 1), "deleted_records", "outside"),
    ("retention", dict(table="facts", deleted=1.0), "deleted_records", "not an integer"),
    ("retention", dict(table="facts", deleted=True), "deleted_records", "not an integer"),
    ("retention", dict(table="facts", deleted=1, dry_run=0), "dry_run", "not a bool"),
    ("retention", dict(table="facts", deleted=1, error=3), "error", "not a string"),
    ("cove_config", dict(enabled=1, threshold=0.5), "enabled", "not a bool"),
    ("cove_config", dict(enabled=True, threshold=2), "threshold", "outside"),
    ("transcription", dict(time=dt.datetime(2026, 1, 1)), "time", "has no time zone"),
]


@pytest.mark.parametrize("method,kwargs,field,message", BAD)
def test_invalid_values_are_refused_at_the_call(client, method, kwargs, field, message):
    with pytest.raises(InvalidEvent) as e:
        getattr(client, method)(**kwargs)
    assert isinstance(e.value, ValueError)
    assert e.value.field == field
    assert message in str(e.value)
    assert len(client._memory) == 0


def test_lock_names_are_checked_before_anything_is_sent(client):
    for kwargs, field in [(dict(name=""), "name"), (dict(name="x", holder="\t"), "holder")]:
        with pytest.raises(InvalidEvent) as e:
            with client.lock(**kwargs):
                pytest.fail("the block must not run")
        assert e.value.field == field
    assert len(client._memory) == 0


GOOD = [
    dict(),
    dict(hallucinated=True),
    dict(atomic=False),
    dict(citation_coverage=0),
    dict(citation_coverage=1),
    dict(citation_coverage=Fraction(1, 3)),
    dict(cove=(1, 1000)),
    dict(cove={"confidence": 0, "rounds": 1}),
    dict(hallucinated=False, atomic=True, citation_coverage=0.98, cove=Cove(0.91, 2)),
    dict(time=dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))),
]


@pytest.mark.parametrize("kwargs", GOOD)
def test_valid_facts_encode_to_the_wire_format(client, kwargs):
    client.fact(**kwargs)
    (record,) = client._memory._q
    wire = json.loads(ev.encode(record))
    assert wire["type"] == "fact"
    for name in ("hallucinated", "atomic"):
        assert wire.get(name) == kwargs.get(name)
    if "citation_coverage" in kwargs:
        assert wire["citation_coverage"] == float(kwargs["citation_coverage"])
        assert isinstance(wire["citation_coverage"], float)
    else:
        assert "citation_coverage" not in wire
    if "cove" in kwargs:
        c = kwargs["cove"]
        c = (c["confidence"], c["rounds"]) if isinstance(c, dict) else tuple(c)
        assert wire["cove"] == {"confidence": c[0], "rounds": c[1]}
    if "time" in kwargs:
        assert wire["time"] == "2026-11-24T06:30:00.000000Z"


def test_times_are_utc_with_microseconds():
    t = dt.datetime(2026, 2, 6, 21, 38, 15, 637037, tzinfo=UTC)
    us = ev.time_us(t, ev.now_us())
    assert ev.format_time(us) == "2026-02-06T21:38:15.637037Z"
    assert ev.format_time(us + 1_000_000) == "2026-02-06T21:38:16.637037Z"
    assert ev.format_time(0) == "1970-01-01T00:00:00.000000Z"


def test_every_event_type_encodes_to_json(client):
    client.transcription()
    client.digest()
    client.retention("facts", 2**53, dry_run=True, error='disk "full"\n')
    client.cove_config(True, 0.7)
    with client.lock("daily_digest", holder="digest-cron"):
        pass
    wires = [json.loads(ev.encode(r)) for r in client._memory._q]
    assert [w["type"] for w in wires] == [
        "transcription", "digest", "retention", "cove_config", "lock_acquired", "lock_released"]
    assert wires[2]["deleted_records"] == 2**53 and wires[2]["error"] == 'disk "full"\n'
    assert wires[4]["pid"] > 0 and wires[4]["holder"] == "digest-cron"
    assert "pid" not in wires[5] and "host" not in wires[5]


def test_the_lock_is_released_when_the_block_raises(client):
    with pytest.raises(RuntimeError):
        with client.lock("job"):
            raise RuntimeError("boom")
    kinds = [r[1] for r in client._memory._q]
    assert kinds == [ev.LOCK_ACQUIRED, ev.LOCK_RELEASED]


def test_configuration_is_checked_at_construction(monkeypatch):
    for kwargs, message in [
        (dict(url="ftp://x"), "invalid bridge URL"),
        (dict(url="http://127.0.0.1:9", token="a b"), "invalid bridge token"),
        (dict(url="http://127.0.0.1:9", ca_file="/x.pem"), "not https"),
        (dict(url="http://127.0.0.1:9", batch_size=0), "batch_size"),
        (dict(url="http://127.0.0.1:9", flush_interval=-1), "flush_interval"),
        (dict(url="http://127.0.0.1:9", max_queue=0), "max_queue"),
    ]:
        with pytest.raises(ValueError, match=message):
            Client(**kwargs)
    monkeypatch.setenv("REFLEXIO_BRIDGE_URL", "http://127.0.0.1:1234")
    c = Client()
    assert c.url == "http://127.0.0.1:1234"
    c.close(0.01)


def test_the_queue_is_bounded_and_drops_the_oldest(caplog):
    c = Client("http://127.0.0.1:9", max_queue=10, flush_interval=3600)
    try:
        for i in range(25):
            c.retention("facts", i)
        assert [r[3] for r in c._memory._q] == list(range(15, 25))
        assert c.stats().dropped == 15
        assert "dropped" in caplog.text
    finally:
        c.close(0.01)
    assert c.stats().lost == 10
