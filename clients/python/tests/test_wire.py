"""The client validates exactly as the bridge does: every value the client refuses, the real
bridge refuses naming the same field; every value at a bound, both accept. And every event type
sent through the client lands in the bridge's totals."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from reflexio_telemetry import Client, Cove, InvalidEvent
from reflexio_telemetry import _events as ev

UTC = dt.timezone.utc
FUTURE = dt.datetime.now(UTC) + dt.timedelta(minutes=10)


def call(client: Client, method: str, kwargs: dict) -> None:
    if method == "lock":
        with client.lock(**kwargs):
            pass
    else:
        getattr(client, method)(**kwargs)


# (client call, the same event on the wire, the field both name)
REFUSED = [
    (("fact", dict(hallucinated=False, atomic=True, citation_coverage=1.5)),
     {"type": "fact", "hallucinated": False, "atomic": True, "citation_coverage": 1.5},
     "citation_coverage"),
    (("fact", dict(hallucinated=False, atomic=True, citation_coverage=1, cove=Cove(0.5, 0))),
     {"type": "fact", "hallucinated": False, "atomic": True, "citation_coverage": 1,
      "cove": {"confidence": 0.5, "rounds": 0}}, "cove.rounds"),
    (("fact", dict(hallucinated=False, atomic=True, citation_coverage=1, cove=Cove(-0.5, 1))),
     {"type": "fact", "hallucinated": False, "atomic": True, "citation_coverage": 1,
      "cove": {"confidence": -0.5, "rounds": 1}}, "cove.confidence"),
    (("fact", dict(hallucinated="no", atomic=True, citation_coverage=1)),
     {"type": "fact", "hallucinated": "no", "atomic": True, "citation_coverage": 1},
     "hallucinated"),
    (("retention", dict(table="", deleted=1)),
     {"type": "retention", "table": "", "deleted_records": 1}, "table"),
    (("retention", dict(table="t" * 129, deleted=1)),
     {"type": "retention", "table": "t" * 129, "deleted_records": 1}, "table"),
    (("retention", dict(table="a\tb", deleted=1)),
     {"type": "retention", "table": "a\tb", "deleted_records": 1}, "table"),
    (("retention", dict(table="facts", deleted=-1)),
     {"type": "retention", "table": "facts", "deleted_records": -1}, "deleted_records"),
    (("retention", dict(table="facts", deleted=2**53 + 1)),
     {"type": "retention", "table": "facts", "deleted_records": 2**53 + 1}, "deleted_records"),
    (("cove_config", dict(enabled=True, threshold=1.5)),
     {"type": "cove_config", "enabled": True, "threshold": 1.5}, "threshold"),
    (("lock", dict(name="n" * 129)),
     {"type": "lock_acquired", "name": "n" * 129, "holder": "h"}, "name"),
    (("lock", dict(name="job", holder="a\nb")),
     {"type": "lock_acquired", "name": "job", "holder": "a\nb"}, "holder"),
    (("fact", dict(hallucinated=False, atomic=True, citation_coverage=True)),
     {"type": "fact", "hallucinated": False, "atomic": True, "citation_coverage": True},
     "citation_coverage"),
    (("fact", dict(hallucinated=False, atomic=True, citation_coverage=1, cove=Cove(0.5, 1001))),
     {"type": "fact", "hallucinated": False, "atomic": True, "citation_coverage": 1,
      "cove": {"confidence": 0.5, "rounds": 1001}}, "cove.rounds"),
    (("retention", dict(table="é" * 65, deleted=1)),
     {"type": "retention", "table": "é" * 65, "deleted_records": 1}, "table"),
    (("retention", dict(table="a\x85b", deleted=1)),
     {"type": "retention", "table": "a\x85b", "deleted_records": 1}, "table"),
    (("retention", dict(table="facts", deleted=True)),
     {"type": "retention", "table": "facts", "deleted_records": True}, "deleted_records"),
    (("retention", dict(table="facts", deleted=1.0)),
     {"type": "retention", "table": "facts", "deleted_records": 1.0}, "deleted_records"),
    (("retention", dict(table="facts", deleted=1, dry_run=1)),
     {"type": "retention", "table": "facts", "deleted_records": 1, "dry_run": 1}, "dry_run"),
    (("retention", dict(table="facts", deleted=1, error=5)),
     {"type": "retention", "table": "facts", "deleted_records": 1, "error": 5}, "error"),
    (("cove_config", dict(enabled=1, threshold=0.5)),
     {"type": "cove_config", "enabled": 1, "threshold": 0.5}, "enabled"),
    (("digest", dict(time=dt.datetime(2026, 11, 24, 9, 30))),
     {"type": "digest", "time": "2026-11-24T09:30:00"}, "time"),
    (("digest", dict(time=FUTURE)),
     {"type": "digest", "time": FUTURE.isoformat()}, "time"),
]


@pytest.mark.parametrize("call_args,wire,field", REFUSED, ids=[f"{c[0]}-{f}-{i}" for i, (c, _, f) in enumerate(REFUSED)])
def test_what_the_client_refuses_the_bridge_refuses(bridge, call_args, wire, field):
    client = Client(bridge.url, flush_interval=3600)
    try:
        with pytest.raises(InvalidEvent) as e:
            call(client, *call_args)
        assert e.value.field == field
    finally:
        client.close(1)
    answer = bridge.post([{"type": "digest"}, wire])
    assert answer.status == 400, answer
    doc = answer.json()
    assert (doc["index"], doc["field"]) == (1, field), doc
    assert bridge.value("reflexio_digests_total") == 0


def test_a_pid_out_of_range_is_refused_by_the_bridge(bridge):
    # The client takes the pid from os.getpid(); the bound is the bridge's.
    for pid in (0, 2**31):
        answer = bridge.post([{"type": "lock_acquired", "name": "job", "holder": "h", "pid": pid}])
        assert answer.status == 400, (pid, answer)
        assert answer.json()["field"] == "pid"


def test_time_edges_as_the_bridge_reads_them(bridge):
    cases = [
        ("2026-11-24T09:30:00+24:00", 400),
        ("2026-11-24T09:30:00.123456789012Z", 202),
        ("2026-11-24T09:30:00.5+23:59", 202),
    ]
    for time, status in cases:
        answer = bridge.post([{"type": "digest", "time": time}])
        assert answer.status == status, (time, answer)


def test_values_at_their_bounds_are_accepted_by_both(bridge):
    client = Client(bridge.url, flush_interval=3600)
    try:
        client.fact(hallucinated=False, atomic=True, citation_coverage=0, cove=Cove(1, 1000))
        client.fact(hallucinated=True, atomic=False, citation_coverage=1, cove=Cove(0, 1))
        client.retention("t" * 128, 2**53)
        client.retention("é" * 64, 0, dry_run=True, error="")
        client.cove_config(False, 0)
        with client.lock("l" * 128, holder="h" * 128):
            pass
        client.digest(time=dt.datetime.now(UTC) + dt.timedelta(minutes=4))
        client.digest(time=dt.datetime(1970, 1, 1, tzinfo=UTC))
        assert client.flush(20)
        s = client.stats()
        assert (s.sent, s.rejected) == (9, 0), s
    finally:
        client.close(1)
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == 2
    assert m["reflexio_digests_total"] == 2
    assert m['reflexio_retention_deleted_records_total{table="' + "t" * 128 + '"}'] == 2**53


def test_every_event_type_reaches_the_totals(bridge):
    client = Client(bridge.url, flush_interval=3600)
    try:
        for i in range(10):
            client.fact(hallucinated=i == 0, atomic=i != 1, citation_coverage=0.9,
                        cove=Cove(0.8, 2) if i % 2 else None)
        client.transcription()
        client.transcription()
        client.digest()
        client.retention("facts", 5)
        client.retention("facts", 7, dry_run=True)
        client.retention("digests", 0, error="disk I/O error")
        client.cove_config(True, 0.7)
        with client.lock("daily_digest"):
            assert client.flush(20)
            assert bridge.value("reflexio_active_locks") == 1
        assert client.flush(20)
    finally:
        client.close(1)
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == 10
    assert m["reflexio_assessed_facts_total"] == 10
    assert m["reflexio_hallucinated_facts_total"] == 1
    assert m["reflexio_atomicity_violations_total"] == 1
    assert m["reflexio_cove_verified_facts_24h"] == 5
    assert m["reflexio_transcriptions_total"] == 2
    assert m["reflexio_digests_total"] == 1
    assert m['reflexio_retention_operations_total{table="facts"}'] == 2
    assert m['reflexio_retention_deleted_records_total{table="facts"}'] == 5
    assert m['reflexio_retention_errors_total{table="digests"}'] == 1
    assert m["reflexio_cove_enabled"] == 1
    assert m["reflexio_cove_confidence_threshold"] == 0.7
    assert m["reflexio_active_locks"] == 0
    assert m["reflexio_ingest_events_total"] == 10 + 2 + 1 + 3 + 1 + 2


def test_partial_verdicts_count_each_verdict_on_its_own(bridge):
    client = Client(bridge.url, flush_interval=3600)
    try:
        client.fact()                                   # unassessed
        client.fact(hallucinated=True)
        client.fact(atomic=False)
        client.fact(citation_coverage=0.5)
        client.fact(cove=Cove(0.9, 2))
        client.fact(hallucinated=False, atomic=True, citation_coverage=1.0)
        assert client.flush(20)
        s = client.stats()
    finally:
        client.close(1)
    assert (s.sent, s.rejected) == (6, 0), s
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == 6
    assert m["reflexio_hallucinated_facts_total"] == 1
    assert m["reflexio_atomicity_violations_total"] == 1
    assert m["reflexio_cove_verified_facts_24h"] == 1


def test_an_event_the_bridge_refuses_is_dropped_and_the_rest_delivered(bridge, caplog):
    client = Client(bridge.url, flush_interval=3600)
    try:
        client.digest()
        # Releasing a lock that is not held passes the client's checks; the bridge refuses it.
        client._put((ev.now_us(), ev.LOCK_RELEASED, "never_taken", "h", None, None))
        client.digest()
        assert client.flush(20)
        s = client.stats()
    finally:
        client.close(1)
    assert (s.sent, s.rejected) == (2, 1), s
    assert bridge.value("reflexio_digests_total") == 2
    assert "never_taken" in caplog.text
