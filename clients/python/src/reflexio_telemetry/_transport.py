"""HTTP to the bridge: one kept-alive connection, ``POST /v1/events`` with an idempotency key, and
the answer read into a :class:`Reply`. It never raises for network trouble: a failed exchange is
a reply with status 0."""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import ssl
import time
import urllib.parse
from typing import Callable, NamedTuple, Optional

from ._version import __version__

#: Bodies smaller than this are sent uncompressed even when compression is on.
GZIP_MIN_BYTES = 1024


class Reply(NamedTuple):
    """What the bridge answered. ``status`` 0 means no answer (connection refused, reset, timed
    out); ``error`` then says why. ``event_index`` and ``field`` locate a refused event."""

    status: int
    accepted: Optional[int] = None
    error: Optional[str] = None
    event_index: Optional[int] = None
    field: Optional[str] = None
    retry_after: Optional[float] = None
    compressed: bool = False


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait, from ``Retry-After`` (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class Transport:
    """Sends batches to ``{url}/v1/events``. Used by one thread at a time."""

    def __init__(
        self,
        url: str,
        token: Optional[str],
        ca_file: Optional[str],
        timeout: float,
        compress: bool,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid bridge URL {url!r}: expected http://host:port or https://...")
        if token is not None and (
            not token or any(not 0x21 <= ord(c) <= 0x7E for c in token)
        ):
            raise ValueError("invalid bridge token: it must be visible ASCII without spaces")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/v1/events"
        self._timeout = timeout
        self.compress = compress
        self._context: Optional[ssl.SSLContext] = None
        if self._https:
            self._context = ssl.create_default_context(cafile=ca_file)
        elif ca_file is not None:
            raise ValueError("a CA file is set but the bridge URL is not https://")
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"reflexio-telemetry-python/{__version__}",
        }
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: Optional[http.client.HTTPConnection] = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def post(
        self, body: bytes, key: str, while_waiting: Optional[Callable[[], None]] = None
    ) -> Reply:
        """Sends one batch and reads the answer; ``while_waiting`` runs once the request is
        sent, before the answer is read (the bridge works meanwhile)."""
        headers = dict(self._headers)
        headers["Idempotency-Key"] = key
        compressed = self.compress and len(body) >= GZIP_MIN_BYTES
        if compressed:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        # A kept-alive connection the bridge closed meanwhile fails at once; one fresh attempt.
        for fresh in (self._conn is None, True):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                if while_waiting is not None:
                    while_waiting()
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if fresh or not isinstance(
                    e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                ):
                    return Reply(0, error=f"{type(e).__name__}: {e}")
                continue
            if response.will_close:
                self.close()
            reply = _reply(response.status, data, response.getheader("Retry-After"))
            return reply._replace(compressed=compressed)
        raise AssertionError("unreachable")


def _reply(status: int, data: bytes, retry_after: Optional[str]) -> Reply:
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    accepted = doc.get("accepted")
    index = doc.get("index")
    field = doc.get("field")
    error = doc.get("error")
    if error is None and status != 202:
        error = data[:200].decode("utf-8", "replace") or f"HTTP {status}"
    return Reply(
        status,
        accepted=accepted if isinstance(accepted, int) else None,
        error=error if isinstance(error, str) else str(error),
        event_index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        field=field if isinstance(field, str) else None,
        retry_after=parse_retry_after(retry_after, time.time()),
    )
