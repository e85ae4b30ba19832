"""Runs the real reflexio-bridge binary for the tests: each bridge on a free 127.0.0.1 port with
its own store in a temporary directory, always stopped at the end of its test."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "clients" / "python" / "src"
# The tests exercise the source tree; test_packaging checks the installed distribution.
sys.path.insert(0, str(SRC))


def _binary() -> Path:
    given = os.environ.get("REFLEXIO_BRIDGE_BIN")
    if given:
        return Path(given)
    built = subprocess.run(
        ["cargo", "build", "--quiet", "-p", "reflexio-bridge"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        pytest.fail(f"cannot build reflexio-bridge:\n{built.stderr}", pytrace=False)
    return ROOT / "target" / "debug" / "reflexio-bridge"


_BIN: Optional[Path] = None


def bridge_binary() -> Path:
    global _BIN
    if _BIN is None:
        _BIN = _binary()
        if not _BIN.is_file():
            pytest.fail(f"reflexio-bridge is not at {_BIN}", pytrace=False)
    return _BIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Answer(NamedTuple):
    status: int
    body: bytes
    headers: Dict[str, str]

    def json(self) -> object:
        return json.loads(self.body)


class Bridge:
    """One reflexio-bridge process; start() and restart on the same port and store."""

    def __init__(self, workdir: Path, args: List[str], env: Dict[str, str]) -> None:
        self.workdir = workdir
        self.store = workdir / "metrics.db"
        self.port = free_port()
        self.args = args
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"bridge-{self.starts}.log"

    def start(self, timeout: float = 30.0) -> "Bridge":
        assert self.proc is None, "already running"
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(self.env)
        env.setdefault("RUST_LOG", "info")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(bridge_binary()),
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--store",
                str(self.store),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"listening addr=" in self.log_path.read_bytes():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        text = self.log_path.read_text(errors="replace")
        self.stop()
        pytest.fail(f"the bridge did not start:\n{text}", pytrace=False)

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Answer(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
        finally:
            conn.close()

    def post(
        self,
        body: object,
        content_type: str = "application/json",
        headers: Optional[Dict[str, str]] = None,
    ) -> Answer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = {"Content-Type": content_type}
        h.update(headers or {})
        return self.request("POST", "/v1/events", raw, h)

    def scrape(self, headers: Optional[Dict[str, str]] = None) -> Dict[str, float]:
        """Every sample of the exposition, by series (`name{labels}`)."""
        answer = self.request("GET", "/metrics/prometheus", headers=headers)
        assert answer.status == 200, answer
        return parse_exposition(answer.body.decode())

    def value(self, series: str) -> float:
        return self.scrape().get(series, 0.0)


def parse_exposition(text: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        out[series] = float(value)
    return out


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator:
    """A factory of bridges, each with its own store; all stopped at the end of the test."""
    made: List[Bridge] = []

    def make(args: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None,
             start: bool = True) -> Bridge:
        workdir = tmp_path / f"bridge{len(made)}"
        workdir.mkdir()
        b = Bridge(workdir, list(args or []), dict(env or {}))
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def bridge(bridges) -> Bridge:
    return bridges()


def run_python(code: str, *args: str, env: Optional[Dict[str, str]] = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with the package importable."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=e, capture_output=True, text=True, timeout=timeout
    )
