"""Delivery against the real bridge: exact totals through bridge crashes, outages, application
crashes with a spool, concurrent threads and fork."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import SRC, run_python
from reflexio_telemetry import Client, Cove


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_the_bridge_down_at_start_loses_nothing(bridges):
    bridge = bridges(start=False)
    client = Client(bridge.url, batch_size=500, max_backoff=0.5)
    try:
        for i in range(3000):
            client.fact(hallucinated=i % 3 == 0, atomic=True, citation_coverage=0.9)
        wait_for(lambda: client.stats().retries > 0, 10, "a failed attempt")
        assert client.stats().last_error.startswith("no answer")
        bridge.start()
        assert client.flush(30)
        s = client.stats()
    finally:
        client.close(1)
    assert (s.sent, s.pending, s.dropped, s.rejected) == (3000, 0, 0, 0), s
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == 3000
    assert m["reflexio_hallucinated_facts_total"] == 1000


def test_exact_totals_when_the_bridge_is_killed_and_restarted_mid_stream(bridges):
    bridge = bridges()
    client = Client(bridge.url, batch_size=200, flush_interval=0.05, max_backoff=0.3)
    total = 30_000
    done = threading.Event()

    def record() -> None:
        for i in range(total):
            client.fact(hallucinated=False, atomic=True, citation_coverage=0.9)
            if i % 500 == 499:
                time.sleep(0.02)
        done.set()

    writer = threading.Thread(target=record)
    writer.start()
    try:
        for _ in range(3):
            # Kill while batches are in flight: after the bridge has taken some, before the end.
            seen = bridge.value("reflexio_facts_total")
            wait_for(lambda: bridge.value("reflexio_facts_total") > seen, 20, "progress")
            bridge.kill()
            time.sleep(0.3)
            bridge.start()
        writer.join()
        assert client.flush(60)
        s = client.stats()
    finally:
        writer.join()
        client.close(1)
    assert s.retries > 0, "the bridge was never down while the client sent"
    assert (s.sent, s.dropped, s.rejected) == (total, 0, 0), s
    assert bridge.value("reflexio_facts_total") == total


def test_503_is_retried_with_the_same_batch_and_counted_once(bridge):
    client = Client(bridge.url, max_backoff=0.5)
    lock = sqlite3.connect(str(bridge.store), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(100):
            client.digest()
        client._sender.wake.set()
        wait_for(lambda: (client.stats().last_error or "").startswith("HTTP 503"), 20, "a 503")
        lock.execute("ROLLBACK")
        assert client.flush(30)
        s = client.stats()
    finally:
        lock.close()
        client.close(1)
    assert (s.sent, s.retries) == (100, 1), s
    m = bridge.scrape()
    assert m["reflexio_digests_total"] == 100
    assert m['reflexio_ingest_requests_total{outcome="unavailable"}'] == 1


def test_eight_threads_recording_at_once(bridge):
    client = Client(bridge.url, batch_size=1000, flush_interval=0.05)
    per_thread = 5000
    start = threading.Barrier(8)

    def record(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            if i % 2:
                client.fact(hallucinated=i % 10 == 1, atomic=True, citation_coverage=0.5,
                            cove=Cove(0.5, 1 + n))
            else:
                client.transcription()

    threads = [threading.Thread(target=record, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert client.flush(60)
        s = client.stats()
    finally:
        client.close(1)
    assert (s.sent, s.dropped, s.rejected) == (8 * per_thread, 0, 0), s
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == 4 * per_thread
    assert m["reflexio_transcriptions_total"] == 4 * per_thread
    assert m["reflexio_hallucinated_facts_total"] == 8 * per_thread // 10
    assert m['reflexio_cove_verification_rounds_bucket{le="+Inf"}'] == 4 * per_thread


def test_eight_threads_recording_into_a_spool(bridge, tmp_path):
    client = Client(bridge.url, spool_path=tmp_path / "spool.db", batch_size=200,
                    flush_interval=0.05)
    per_thread = 300

    def record() -> None:
        for _ in range(per_thread):
            client.digest()

    threads = [threading.Thread(target=record) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert client.flush(60)
        s = client.stats()
    finally:
        client.close(1)
    assert (s.sent, s.pending) == (8 * per_thread, 0), s
    assert bridge.value("reflexio_digests_total") == 8 * per_thread


def _fork_and_record(client: Client, child_events: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for _ in range(child_events):
                client.transcription()
            code = 0 if client.flush(30) and client.stats().sent >= child_events else 3
        finally:
            os._exit(code)
    return pid


def test_fork_the_child_sends_its_own_events_and_never_the_parents(bridge):
    client = Client(bridge.url, flush_interval=3600, batch_size=10_000)
    try:
        for _ in range(100):
            client.fact(hallucinated=False, atomic=True, citation_coverage=1.0)
        assert len(client._memory) == 100, "the parent's events must still be queued at fork"
        pid = _fork_and_record(client, 50)
        for _ in range(10):
            client.digest()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.flush(30)
        s = client.stats()
    finally:
        client.close(1)
    assert s.sent == 110, s
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == 100
    assert m["reflexio_transcriptions_total"] == 50
    assert m["reflexio_digests_total"] == 10


def test_fork_with_a_spool_sends_every_row_once(bridges, tmp_path):
    bridge = bridges(start=False)
    client = Client(bridge.url, spool_path=tmp_path / "spool.db", batch_size=50,
                    flush_interval=0.05, max_backoff=0.2)
    try:
        for _ in range(3000):
            client.fact(hallucinated=False, atomic=True, citation_coverage=1.0)
        children = [_fork_and_record(client, 100) for _ in range(2)]
        bridge.start()
        for _ in range(10):
            client.digest()
        for pid in children:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        assert client.flush(30)
    finally:
        client.close(1)
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == 3000
    assert m["reflexio_transcriptions_total"] == 200
    assert m["reflexio_digests_total"] == 10


APP = """
import sys, time
from reflexio_telemetry import Client
url, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = Client(url, spool_path=spool, batch_size=20, flush_interval=0.01, max_backoff=0.1)
for i in range(n):
    client.fact(hallucinated=i % 2 == 0, atomic=True, citation_coverage=0.75)
print("recorded", flush=True)
time.sleep(60)
"""

RESTARTED = """
import sys
from reflexio_telemetry import Client
client = Client(sys.argv[1], spool_path=sys.argv[2], max_backoff=0.1)
ok = client.flush(30)
s = client.stats()
print(ok, s.sent, s.pending)
client.close()
"""


def test_exact_totals_when_the_application_is_killed_and_restarted_with_a_spool(bridges, tmp_path):
    bridge = bridges(start=False)
    spool = str(tmp_path / "spool.db")
    total = 6000
    env = dict(os.environ, PYTHONPATH=str(SRC))
    app = subprocess.Popen([sys.executable, "-c", APP, bridge.url, spool, str(total)],
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert app.stdout.readline().strip() == "recorded"
        bridge.start()
        wait_for(lambda: bridge.value("reflexio_facts_total") > 0, 20, "the first batch")
        app.send_signal(signal.SIGKILL)
        app.wait()
        at_kill = bridge.value("reflexio_facts_total")
        assert at_kill < total, "the application finished before it was killed"
    finally:
        app.kill()
        app.wait()
    done = run_python(RESTARTED, bridge.url, spool)
    assert done.returncode == 0, done.stderr
    ok, sent, pending = done.stdout.split()
    assert (ok, pending) == ("True", "0"), done.stdout
    m = bridge.scrape()
    assert m["reflexio_facts_total"] == total, f"{at_kill} at the kill, then {sent} sent"
    assert m["reflexio_hallucinated_facts_total"] == total / 2


def test_the_spool_is_bounded_and_keeps_the_newest(bridges, tmp_path, caplog):
    bridge = bridges(start=False)
    spool = tmp_path / "spool.db"
    client = Client(bridge.url, spool_path=spool, spool_max_events=10, flush_interval=3600)
    for i in range(25):
        client.retention("facts", i)
    s = client.stats()
    assert (s.pending, s.dropped) == (10, 15), s
    assert "dropped" in caplog.text
    client.close(0.2)
    bridge.start()
    client = Client(bridge.url, spool_path=spool, spool_max_events=10)
    try:
        assert client.flush(30)
        assert client.stats().dropped == 15, "the count of dropped rows is kept in the spool"
    finally:
        client.close(1)
    m = bridge.scrape()
    assert m['reflexio_retention_operations_total{table="facts"}'] == 10
    assert m['reflexio_retention_deleted_records_total{table="facts"}'] == sum(range(15, 25))


def test_events_are_delivered_at_interpreter_exit(bridge):
    code = """
import sys
from reflexio_telemetry import Client
client = Client(sys.argv[1], flush_interval=3600)
for _ in range(500):
    client.digest()
"""
    done = run_python(code, bridge.url)
    assert done.returncode == 0, done.stderr
    assert bridge.value("reflexio_digests_total") == 500


def test_exit_with_the_bridge_down_is_bounded_and_says_what_was_lost(bridges):
    bridge = bridges(start=False)
    code = """
import logging, sys
from reflexio_telemetry import Client
logging.basicConfig(level=logging.INFO)
client = Client(sys.argv[1], exit_timeout=0.5, max_backoff=0.1)
for _ in range(7):
    client.digest()
"""
    started = time.monotonic()
    done = run_python(code, bridge.url)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 15
    assert "7 events were not delivered" in done.stderr


def test_a_token_is_sent_and_a_wrong_one_loses_nothing(bridges, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-for-tests\n")
    bridge = bridges(["--auth-token-file", str(token_file)])
    good = Client(bridge.url, token="s3cret-token-for-tests")
    wrong = Client(bridge.url, token="not-the-token", max_backoff=0.2)
    try:
        good.digest()
        assert good.flush(20)
        wrong.transcription()
        wait_for(lambda: "HTTP 401" in (wrong.stats().last_error or ""), 10, "a 401")
        assert wrong.stats().pending == 1
        token_file.write_text("not-the-token\n")
        bridge.stop()
        bridge.start()
        assert wrong.flush(20)
    finally:
        good.close(1)
        wrong.close(1)
    headers = {"Authorization": "Bearer not-the-token"}
    m = bridge.scrape(headers)
    assert m["reflexio_digests_total"] == 1
    assert m["reflexio_transcriptions_total"] == 1


def test_configuration_from_the_environment(bridges, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("env-token-0123456789\n")
    bridge = bridges(["--auth-token-file", str(token_file)])
    code = """
from reflexio_telemetry import Client
client = Client()
client.digest()
assert client.flush(20), client.stats()
"""
    done = run_python(code, env={"REFLEXIO_BRIDGE_URL": bridge.url,
                                 "REFLEXIO_BRIDGE_TOKEN": "env-token-0123456789"})
    assert done.returncode == 0, done.stderr
    m = bridge.scrape({"Authorization": "Bearer env-token-0123456789"})
    assert m["reflexio_digests_total"] == 1


def test_a_spool_that_cannot_be_written_keeps_events_in_memory(bridge, tmp_path, monkeypatch,
                                                                caplog):
    from reflexio_telemetry import _spool

    monkeypatch.setattr(_spool, "BUSY_TIMEOUT", 0.05)
    path = tmp_path / "spool.db"
    client = Client(bridge.url, spool_path=path, flush_interval=3600)
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        client.digest()
        client.digest()
        assert "keeping events in memory" in caplog.text
        other.execute("ROLLBACK")
        assert client.flush(20)
    finally:
        other.close()
        client.close(1)
    assert bridge.value("reflexio_digests_total") == 2
