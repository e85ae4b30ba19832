"""Benchmarks of reflexio-telemetry, each against the alternative in the same run.

1. One ``fact()`` call in the application thread (no spool), against the prometheus_client calls
   that record the same fact: ``Counter.inc()`` for the fact (and for a hallucination and an
   atomicity violation when it has them) and ``Histogram.observe()`` for its citation coverage,
   CoVe confidence and CoVe rounds. Also the whole cost of a fact: the call plus its share of the
   background encoding and sending, measured as wall time to record and deliver.
2. Events per second from one process into the bridge, each acknowledged durably (the bridge
   answers 202 only after its store committed the batch): without and with a spool, and what an
   application without the package would write instead (JSON over http.client in the calling
   thread, in batches of 1000 and one event a request).

Usage: python bench.py BRIDGE_BINARY  (prints a Markdown table; scripts/bench-python runs it)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from reflexio_telemetry import Client, Cove

CALLS = 200_000
ROUNDS = 7


def variants():
    """64 facts cycling as in the Rust benchmark: 1 in 16 hallucinated, 1 in 8 non-atomic, 3 in
    4 with a CoVe result."""
    out = []
    for i in range(64):
        cove = Cove(0.6 + (i % 40) / 100, 1 + i % 3) if i % 4 else None
        out.append((i % 16 == 0, i % 8 != 3, 0.9 + (i % 10) / 100, cove))
    return out


FACTS = variants()


def per_call_ns(run, calls: int) -> float:
    samples = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter_ns()
        run(calls)
        samples.append((time.perf_counter_ns() - t0) / calls)
    return statistics.median(samples)


def prometheus_client_fact():
    registry = CollectorRegistry()
    facts = Counter("reflexio_facts", "Facts", registry=registry)
    hallucinated = Counter("reflexio_hallucinated_facts", "Hallucinated", registry=registry)
    violations = Counter("reflexio_atomicity_violations", "Not atomic", registry=registry)
    coverage = Histogram("reflexio_citation_coverage", "Coverage", registry=registry,
                         buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99))
    confidence = Histogram("reflexio_cove_confidence", "Confidence", registry=registry,
                           buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99))
    rounds = Histogram("reflexio_cove_verification_rounds", "Rounds", registry=registry,
                       buckets=(1, 2, 3, 4, 5, 7, 10))

    def run(n: int) -> None:
        for i in range(n):
            h, a, c, cove = FACTS[i & 63]
            facts.inc()
            if h:
                hallucinated.inc()
            if not a:
                violations.inc()
            coverage.observe(c)
            if cove is not None:
                confidence.observe(cove.confidence)
                rounds.observe(cove.rounds)

    return run


def reflexio_fact(client: Client):
    def run(n: int) -> None:
        fact = client.fact
        for i in range(n):
            h, a, c, cove = FACTS[i & 63]
            fact(hallucinated=h, atomic=a, citation_coverage=c, cove=cove)

    return run


class Bridge:
    def __init__(self, binary: str) -> None:
        self.dir = tempfile.mkdtemp()
        self.log = open(os.path.join(self.dir, "bridge.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--store",
             os.path.join(self.dir, "metrics.db")],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "RUST_LOG": "warn,reflexio_bridge=info"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = Path(self.dir, "bridge.log").read_text()
            if "listening addr=" in text:
                self.url = "http://" + text.split("listening addr=")[1].split()[0]
                return
            time.sleep(0.05)
        raise SystemExit(f"the bridge did not start:\n{text}")

    def value(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics/prometheus") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def throughput(bridge: Bridge, events: int, spool: bool) -> float:
    before = bridge.value("reflexio_facts_total")
    with tempfile.TemporaryDirectory() as d:
        client = Client(bridge.url, spool_path=os.path.join(d, "spool.db") if spool else None,
                        batch_size=1000, flush_interval=0.05, max_queue=events + 1)
        run = reflexio_fact(client)
        t0 = time.perf_counter()
        run(events)
        if not client.flush(600):
            raise SystemExit(f"not delivered: {client.stats()}")
        elapsed = time.perf_counter() - t0
        stats = client.stats()
        client.close()
    delivered = bridge.value("reflexio_facts_total") - before
    if delivered != events or stats.sent != events:
        raise SystemExit(f"{events} recorded, {delivered} counted by the bridge: {stats}")
    return events / elapsed


def fact_dicts(n: int):
    for i in range(n):
        h, a, c, cove = FACTS[i & 63]
        # No time: the bridge stamps the event when it arrives (cheaper for the caller).
        event = {"type": "fact", "hallucinated": h, "atomic": a, "citation_coverage": c}
        if cove is not None:
            event["cove"] = {"confidence": cove.confidence, "rounds": cove.rounds}
        yield event


def by_hand(bridge: Bridge, events: int, batch: int) -> float:
    """What an application without the package would write: JSON over HTTP with http.client,
    blocking the application thread for each request, ``batch`` events per request."""
    import http.client
    import json
    host, port = bridge.url[len("http://"):].split(":")
    before = bridge.value("reflexio_facts_total")
    conn = http.client.HTTPConnection(host, int(port))
    t0 = time.perf_counter()
    pending = []
    for event in fact_dicts(events):
        pending.append(event)
        if len(pending) == batch:
            conn.request("POST", "/v1/events", json.dumps(pending),
                         {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 202, answer.status
            pending = []
    elapsed = time.perf_counter() - t0
    conn.close()
    assert bridge.value("reflexio_facts_total") - before == events
    return events / elapsed


def main() -> None:
    binary = sys.argv[1]
    bridge = Bridge(binary)
    try:
        prom = per_call_ns(prometheus_client_fact(), CALLS)
        # The call alone: the sender stays asleep (no batch fills, no interval passes).
        idle = Client(bridge.url, batch_size=10**9, flush_interval=3600, max_queue=CALLS + 1)
        runner = reflexio_fact(idle)

        def call_alone(n: int) -> None:
            runner(n)
            idle._memory._q.clear()

        call = per_call_ns(call_alone, CALLS)
        idle.close(0.1)
        plain = statistics.median(throughput(bridge, 500_000, spool=False) for _ in range(3))
        # The whole cost of a fact: recording it and delivering it, the sender working beside
        # the application thread in the same process.
        whole = 1e9 / plain
        spooled = statistics.median(throughput(bridge, 100_000, spool=True) for _ in range(3))
        hand_batched = statistics.median(by_hand(bridge, 500_000, 1000) for _ in range(3))
        hand_single = by_hand(bridge, 5_000, 1)
    finally:
        bridge.stop()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print("| what | reflexio-telemetry | prometheus_client, same run | ratio |")
    print("|---|---|---|---|")
    print(f"| one `fact()` call, the application thread | {call:.0f} ns | {prom:.0f} ns | "
          f"**{call / prom:.2f}x** (goal <= 2x) |")
    print(f"| one fact: call + encoding + durable delivery, from the throughput below | "
          f"{whole:.0f} ns | {prom:.0f} ns (no delivery) | {whole / prom:.2f}x |")
    print()
    print("| delivery into the bridge from one process, acknowledged durably | events/s |")
    print("|---|---|")
    print(f"| reflexio-telemetry, without a spool (500k facts, median of 3) | **{plain / 1000:.0f}k/s** (goal >= 100k/s) |")
    print(f"| reflexio-telemetry, with a spool (100k facts, median of 3) | {spooled / 1000:.1f}k/s |")
    print(f"| by hand: json.dumps + http.client, 1000 events a request, blocking the caller (500k, median of 3) | {hand_batched / 1000:.0f}k/s |")
    print(f"| by hand: one event a request, blocking the caller (5k) | {hand_single / 1000:.1f}k/s |")


if __name__ == "__main__":
    main()
