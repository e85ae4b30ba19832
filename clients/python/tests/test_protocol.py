"""The retry protocol: what the client sends for each answer. A scripted HTTP peer records every
request (the real bridge cannot show which key a retry carried); the tests at the end check the
same protocol against the real bridge: idempotency keys and compressed bodies."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import SRC
from reflexio_telemetry import Client
from reflexio_telemetry._spool import Spool


class Peer:
    """Answers POST /v1/events from a script of (status, headers, body); 202 when it runs out."""

    def __init__(self, tls: Optional[Tuple[str, str]] = None) -> None:
        self.script: List[Tuple[int, Dict[str, str], dict]] = []
        self.requests: List[Tuple[float, Dict[str, str], list]] = []
        self.rule = None  # a function of the events that may return an answer
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                events = json.loads(raw)
                peer.requests.append((time.monotonic(), headers, events))
                answer = peer.rule(events) if peer.rule else None
                if answer is None:
                    answer = peer.script.pop(0) if peer.script else (202, {}, {"accepted": len(events)})
                status, extra, body = answer
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self) -> List[str]:
        return [h["idempotency-key"] for _, h, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def error(status: int, message: str, index: Optional[int] = None, field: Optional[str] = None,
          headers: Optional[Dict[str, str]] = None):
    return (status, headers or {}, {"error": message, "index": index, "field": field})


def test_a_retry_carries_the_same_key_and_a_new_batch_a_new_one(peer):
    peer.script = [
        error(503, "busy", headers={"Retry-After": "0"}),
        error(429, "too many bodies", headers={"Retry-After": "0"}),
        error(502, "bad gateway"),
    ]
    client = Client(peer.url, max_backoff=0.05)
    try:
        for _ in range(3):
            client.digest()
        assert client.flush(10)
        client.transcription()
        assert client.flush(10)
    finally:
        client.close(1)
    keys = peer.keys()
    assert len(keys) == 5
    assert len(set(keys[:4])) == 1, keys
    assert keys[4] != keys[0]
    for key in keys:
        uuid.UUID(key)
        assert 1 <= len(key) <= 255 and key.isascii() and key.isprintable()
    assert [len(events) for _, _, events in peer.requests] == [3, 3, 3, 3, 1]
    assert client.stats().retries == 3


def test_retry_after_is_honoured(peer):
    peer.script = [error(503, "store busy", headers={"Retry-After": "1"})]
    client = Client(peer.url, max_backoff=0.05)
    try:
        client.digest()
        assert client.flush(10)
    finally:
        client.close(1)
    (t0, _, _), (t1, _, _) = peer.requests
    assert t1 - t0 >= 0.95


def test_an_event_refused_by_index_is_dropped_and_the_rest_resent_under_a_new_key(peer):
    peer.script = [error(400, "event 1: time: more than 5 minutes ahead", 1, "time")]
    client = Client(peer.url)
    try:
        client.retention("a", 1)
        client.retention("b", 2)
        client.retention("c", 3)
        assert client.flush(10)
        s = client.stats()
    finally:
        client.close(1)
    (_, h0, first), (_, h1, second) = peer.requests
    assert [e["table"] for e in first] == ["a", "b", "c"]
    assert [e["table"] for e in second] == ["a", "c"]
    assert h0["idempotency-key"] != h1["idempotency-key"]
    assert (s.sent, s.rejected) == (2, 1)


def test_a_batch_too_large_is_split(peer):
    peer.rule = lambda events: error(413, "too large") if len(events) > 3 else None
    client = Client(peer.url)
    try:
        for i in range(10):
            client.retention("t", i)
        assert client.flush(10)
        s = client.stats()
    finally:
        client.close(1)
    delivered = [e["deleted_records"] for _, _, events in peer.requests if len(events) <= 3
                 for e in events]
    assert delivered == list(range(10))
    assert (s.sent, s.rejected) == (10, 0)
    assert len(set(peer.keys())) == len(peer.requests)


def test_a_batch_refused_whole_is_dropped_and_counted(peer, caplog):
    peer.script = [error(400, "the body must be a JSON array")]
    client = Client(peer.url)
    try:
        client.digest()
        client.digest()
        assert client.flush(10)
        s = client.stats()
    finally:
        client.close(1)
    assert (s.sent, s.rejected) == (0, 2)
    assert "refused a batch of 2 events" in caplog.text


def test_401_is_retried_slowly_so_nothing_is_lost(peer):
    peer.script = [error(401, "token"), error(401, "token")]
    client = Client(peer.url, max_backoff=0.2)
    try:
        client.digest()
        assert client.flush(10)
    finally:
        client.close(1)
    times = [t for t, _, _ in peer.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.19 and times[2] - times[1] >= 0.19


def test_compressed_bodies_and_the_fallback_for_a_bridge_without_them(peer):
    client = Client(peer.url, compress=True)
    try:
        for _ in range(100):
            client.digest()
        assert client.flush(10)
        peer.script = [error(415, "content encoding gzip is not accepted")]
        for _ in range(100):
            client.digest()
        assert client.flush(10)
    finally:
        client.close(1)
    encodings = [h.get("content-encoding") for _, h, _ in peer.requests]
    assert encodings == ["gzip", "gzip", None]
    assert peer.keys()[2] != peer.keys()[1]
    assert client.stats().sent == 200


def test_https_with_a_ca_file(tmp_path, monkeypatch):
    if shutil.which("openssl") is None:
        pytest.fail("this test needs the openssl command (apt-get install openssl)", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    peer = Peer(tls=(str(cert), str(key)))
    try:
        untrusted = Client(peer.url, max_backoff=0.05)
        monkeypatch.setenv("REFLEXIO_BRIDGE_CA_FILE", str(cert))
        trusted = Client(peer.url)
        try:
            untrusted.digest()
            assert not untrusted.flush(1)
            assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.stats().last_error or "")
            trusted.digest()
            assert trusted.flush(10)
        finally:
            untrusted.close(0.1)
            trusted.close(1)
        assert len(peer.requests) == 1
    finally:
        peer.close()


def test_a_batch_claimed_by_a_process_that_died_is_sent_again_with_its_key(tmp_path):
    path = str(tmp_path / "spool.db")
    spool = Spool(path, 1000)
    for i in range(30):
        spool.put('{"type":"digest"}')
    code = """
import os, sys
from reflexio_telemetry._spool import Spool
b = Spool(sys.argv[1], 1000).claim(10)
print(b.key, ",".join(map(str, b.ids)), flush=True)
os.kill(os.getpid(), 9)
"""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          env=env)
    assert done.returncode == -signal.SIGKILL
    key, ids = done.stdout.split()
    batch = spool.claim(10)
    assert (batch.key, ",".join(map(str, batch.ids))) == (key, ids)
    spool.settle(batch)
    fresh = spool.claim(100)
    assert fresh.key != key and len(fresh) == 20
    assert spool.pending() == 20


def test_a_batch_claimed_by_a_live_process_is_left_to_it(tmp_path):
    path = str(tmp_path / "spool.db")
    spool = Spool(path, 1000)
    for _ in range(5):
        spool.put('{"type":"digest"}')
    code = """
import sys, time
from reflexio_telemetry._spool import Spool
b = Spool(sys.argv[1], 1000).claim(3)
print(len(b), flush=True)
time.sleep(30)
"""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    other = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert other.stdout.readline().strip() == "3"
        mine = spool.claim(10)
        assert len(mine) == 2
        assert spool.claim(10) is None
        # After the lease, even a live owner's batch is taken over (with its key).
        taken = spool.claim(10, now=time.time() + 10_000)
        assert taken is not None and len(taken) == 3
    finally:
        other.kill()
        other.wait()


# The same protocol against the real bridge.


def test_the_bridge_answers_a_repeated_key_with_the_original_result(bridge):
    body = [{"type": "digest"}, {"type": "transcription"}]
    key = str(uuid.uuid4())
    first = bridge.post(body, headers={"Idempotency-Key": key})
    again = bridge.post(body, headers={"Idempotency-Key": key})
    other = bridge.post(body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert first.status == again.status == other.status == 202
    assert first.body == again.body
    assert bridge.value("reflexio_digests_total") == 2, "the repeated key counted again"


def test_a_key_survives_a_kill_of_the_bridge(bridge):
    key = str(uuid.uuid4())
    assert bridge.post([{"type": "digest"}], headers={"Idempotency-Key": key}).status == 202
    bridge.kill()
    bridge.start()
    again = bridge.post([{"type": "digest"}], headers={"Idempotency-Key": key})
    assert again.status == 202 and again.json() == {"accepted": 1}
    assert bridge.value("reflexio_digests_total") == 1


def test_the_bridge_refuses_a_malformed_key(bridge):
    for key in ["a" * 256, "with space", "é"]:
        answer = bridge.request("POST", "/v1/events", b"[]", {
            "Content-Type": "application/json", "Idempotency-Key": key.encode("utf-8").decode("latin-1")})
        assert answer.status == 400, (key, answer)
        assert set(answer.json()) == {"error", "index", "field", "line"}


def test_the_client_delivers_compressed_bodies_to_the_bridge(bridge):
    client = Client(bridge.url, compress=True)
    try:
        for _ in range(2000):
            client.fact(hallucinated=False, atomic=True, citation_coverage=0.9)
        assert client.flush(20)
        still_compressing = client._sender.transport.compress
    finally:
        client.close(1)
    assert bridge.value("reflexio_facts_total") == 2000
    assert still_compressing, "the bridge refused compressed bodies"


def test_the_bridge_on_compressed_bodies(bridge):
    events = json.dumps([{"type": "digest"}] * 10).encode()
    ok = bridge.post(gzip.compress(events), headers={"Content-Encoding": "gzip"})
    assert ok.status == 202, ok
    other = bridge.post(events, headers={"Content-Encoding": "br"})
    assert other.status == 415, other
    bomb = gzip.compress(b"[" + b" " * (8 << 20) + b"]")
    assert len(bomb) < 64 << 10
    too_large = bridge.post(bomb, headers={"Content-Encoding": "gzip"})
    assert too_large.status == 413, too_large
    assert bridge.value("reflexio_digests_total") == 10
