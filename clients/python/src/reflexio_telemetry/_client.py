"""The :class:`Client`: the typed recording calls, and the lifecycle around them (configuration,
the background sender, flush, close, interpreter exit, fork)."""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import socket
import sqlite3
import sys
import threading
import time as _time
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional, Union

from . import _events as ev
from ._backlog import MemoryQueue, log
from ._sender import Sender
from ._spool import Spool
from ._transport import Transport

DEFAULT_URL = "http://127.0.0.1:8000"
ENV_URL = "REFLEXIO_BRIDGE_URL"
ENV_TOKEN = "REFLEXIO_BRIDGE_TOKEN"
ENV_CA_FILE = "REFLEXIO_BRIDGE_CA_FILE"

PathLike = Union[str, "os.PathLike[str]"]


class Cove(NamedTuple):
    """A Chain-of-Verification result: ``confidence`` in [0, 1], ``rounds`` in 1..=1000.

    ``fact(cove=...)`` also takes a ``(confidence, rounds)`` pair, a ``{"confidence": ...,
    "rounds": ...}`` mapping, or any object with those two attributes."""

    confidence: float
    rounds: int


@dataclass(frozen=True)
class Stats:
    """What a client has done since it started (in this process).

    - ``sent``: events the bridge acknowledged.
    - ``pending``: events waiting: the in-memory queue, plus every row of the spool.
    - ``dropped``: oldest events dropped because the queue was full, plus the spool's own count
      of rows it dropped for its bound (kept in the spool file, over its whole life).
    - ``rejected``: events the bridge refused (each logged with the reason).
    - ``lost``: events still in memory when the client closed without reaching the bridge.
    - ``retries``: delivery attempts that failed and were retried.
    - ``last_error``: the last delivery failure, if any.
    """

    sent: int
    pending: int
    dropped: int
    rejected: int
    lost: int
    retries: int
    last_error: Optional[str]


def _default_holder() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if prog in ("", "-c", "-m"):
        prog = "python"
    raw = prog.encode("utf-8", "ignore")[: ev.MAX_NAME_BYTES].decode("utf-8", "ignore")
    try:
        return ev.check_name("holder", raw)
    except ev.InvalidEvent:
        return "python"


def _host() -> Optional[str]:
    try:
        return ev.check_name("host", socket.gethostname())
    except ev.InvalidEvent:
        return None


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


class Client:
    """Records Reflexio events and delivers them to a reflexio-bridge in the background.

    Recording calls validate their values at once (:class:`InvalidEvent`, a ``ValueError``, names
    the field) and never wait for the network: events go to a bounded in-memory queue, or with
    ``spool_path`` to a local SQLite spool committed before the call returns. A background thread
    sends them in batches (``batch_size`` events, or every ``flush_interval`` seconds), each with an
    ``Idempotency-Key`` kept across its retries.

    ``url``, ``token`` and ``ca_file`` default to ``REFLEXIO_BRIDGE_URL``,
    ``REFLEXIO_BRIDGE_TOKEN`` and ``REFLEXIO_BRIDGE_CA_FILE``; the URL then to
    ``http://127.0.0.1:8000``.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        spool_path: Optional[PathLike] = None,
        *,
        ca_file: Optional[PathLike] = None,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        spool_max_events: int = 1_000_000,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
        compress: bool = False,
        exit_timeout: float = 5.0,
    ) -> None:
        url = url or os.environ.get(ENV_URL) or DEFAULT_URL
        if token is None:
            token = os.environ.get(ENV_TOKEN) or None
        if ca_file is None:
            ca_file = os.environ.get(ENV_CA_FILE) or None
        self._batch_size = _count("batch_size", batch_size)
        self._transport_args = (
            url,
            token,
            os.fspath(ca_file) if ca_file is not None else None,
            _positive("timeout", timeout),
            bool(compress),
        )
        self._flush_interval = _positive("flush_interval", flush_interval)
        self._max_backoff = _positive("max_backoff", max_backoff)
        self._exit_timeout = _positive("exit_timeout", exit_timeout)
        Transport(*self._transport_args)  # validates the URL, token and CA file now
        self._memory = MemoryQueue(_count("max_queue", max_queue))
        self._spool: Optional[Spool] = None
        if spool_path is not None:
            self._spool = Spool(os.fspath(spool_path), _count("spool_max_events", spool_max_events))
        self._spooled_since_wake = 0
        self._spool_error_logged_at = -math.inf
        self._closed = False
        self._closed_warned = False
        self._start_lock = threading.Lock()
        self._sender: Optional[Sender] = None
        self._totals = [0, 0, 0, 0]  # sent, rejected, retries of senders stopped in this process
        self._start_sender()
        atexit.register(self._at_exit)
        os.register_at_fork(after_in_child=_after_fork_hook(weakref.ref(self)))

    @property
    def url(self) -> str:
        return self._transport_args[0]

    # Recording.

    def fact(
        self,
        hallucinated: Optional[bool] = None,
        atomic: Optional[bool] = None,
        citation_coverage: Optional[float] = None,
        cove: Any = None,
        time: Any = None,
    ) -> None:
        """A fact extracted from a transcription, with whichever verdicts are known.

        Each verdict is independent and optional: ``hallucinated`` and ``atomic`` (bools),
        ``citation_coverage`` (in [0, 1]) and ``cove`` (a :class:`Cove`). A fact with none of
        them is counted as an unassessed fact. ``time`` is an aware ``datetime`` (default: now).
        """
        now = ev.now_us()
        t = now if time is None else ev.time_us(time, now)
        self._put(ev.fact_record(t, hallucinated, atomic, citation_coverage, cove))

    def transcription(self, time: Any = None) -> None:
        """A transcription finished."""
        now = ev.now_us()
        self._put((now if time is None else ev.time_us(time, now), ev.TRANSCRIPTION))

    def digest(self, time: Any = None) -> None:
        """A digest was generated."""
        now = ev.now_us()
        self._put((now if time is None else ev.time_us(time, now), ev.DIGEST))

    def retention(
        self,
        table: str,
        deleted: int,
        dry_run: Optional[bool] = False,
        error: Optional[str] = None,
        time: Any = None,
    ) -> None:
        """A retention run over ``table`` that deleted ``deleted`` records (0 to 2^53). A run with
        ``error`` set failed; a ``dry_run`` deletes nothing (``None`` is false, as on the
        wire)."""
        now = ev.now_us()
        self._put(
            (
                now if time is None else ev.time_us(time, now),
                ev.RETENTION,
                ev.check_name("table", table),
                ev.check_int("deleted_records", deleted, 0, ev.MAX_DELETED_RECORDS),
                False if dry_run is None else ev.check_bool("dry_run", dry_run),
                None if error is None else ev.check_text("error", error),
            )
        )

    def cove_config(self, enabled: bool, threshold: float, time: Any = None) -> None:
        """The CoVe configuration in force: enabled or not, and its confidence threshold."""
        now = ev.now_us()
        self._put(
            (
                now if time is None else ev.time_us(time, now),
                ev.COVE_CONFIG,
                ev.check_bool("enabled", enabled),
                ev.check_fraction("threshold", threshold),
            )
        )

    @contextlib.contextmanager
    def lock(self, name: str, holder: Optional[str] = None) -> Iterator[None]:
        """Reports a process lock held for the ``with`` block: ``lock_acquired`` on entry and
        ``lock_released`` on exit (also when the block raises), with this process's pid and host.

        It reports the lock; it does not take one. ``holder`` defaults to the program's name, so
        that a restarted job takes its own lock over.
        """
        name = ev.check_name("name", name)
        holder = ev.check_name("holder", holder) if holder is not None else _default_holder()
        pid = ev.check_int("pid", os.getpid(), 1, ev.MAX_PID)
        host = _host()
        self._put((ev.now_us(), ev.LOCK_ACQUIRED, name, holder, pid, host))
        try:
            yield
        finally:
            self._put((ev.now_us(), ev.LOCK_RELEASED, name, holder, pid, host))

    def _put(self, record: ev.Record) -> None:
        sender = self._sender
        if sender is None:
            sender = self._start_sender()
            if sender is None:
                return
        spool = self._spool
        if spool is None:
            if self._memory.put(record) >= self._batch_size and not sender.wake.is_set():
                sender.wake.set()
            return
        try:
            spool.put(ev.encode(record))
        except sqlite3.Error as e:
            now = _time.monotonic()
            if now - self._spool_error_logged_at >= 60.0:
                self._spool_error_logged_at = now
                log.error("cannot write to the spool %s (%s); keeping events in memory", spool.path, e)
            self._memory.put(record)
        self._spooled_since_wake += 1
        if self._spooled_since_wake >= self._batch_size:
            self._spooled_since_wake = 0
            sender.wake.set()

    # Lifecycle.

    def _start_sender(self) -> Optional[Sender]:
        with self._start_lock:
            if self._sender is not None:
                return self._sender
            if self._closed:
                if not self._closed_warned:
                    self._closed_warned = True
                    log.warning("an event was recorded after the client was closed; it is dropped")
                self._memory.lost += 1
                return None
            sender = Sender(
                Transport(*self._transport_args),
                self._memory,
                self._spool,
                self._batch_size,
                self._flush_interval,
                self._max_backoff,
            )
            sender.start()
            self._sender = sender
            return sender

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every event recorded before the call is delivered (or refused), for at most
        ``timeout`` seconds (None: no limit). With a spool, that is every row of the spool up to
        now, whichever process recorded it. True if everything was delivered in time."""
        sender = self._sender
        if self._closed:
            return self._memory.lost == 0
        if sender is None:
            return self._spool is None or self._spool.pending() == 0
        memory_mark = self._memory.mark()
        spool_mark = self._spool.mark() if self._spool is not None else 0
        deadline = None if timeout is None else _time.monotonic() + timeout
        sender.wake.set()
        with sender.progress:
            while True:
                done = self._memory.done() >= memory_mark and (
                    self._spool is None or self._spool.pending(spool_mark) == 0
                )
                if done:
                    return True
                wait = 0.1
                if deadline is not None:
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        return False
                    wait = min(wait, remaining)
                if not sender.is_alive():
                    return False
                sender.progress.wait(wait)

    def close(self, timeout: Optional[float] = 5.0) -> bool:
        """Delivers what is waiting for up to ``timeout`` seconds, then stops the sender. Events
        still in memory then are lost (counted in :meth:`stats` and logged); a spool keeps its
        rows for the next start. True if nothing was left. Later recording calls drop their
        events (with one warning)."""
        with self._start_lock:
            if self._closed:
                return True
            self._closed = True
            sender = self._sender
            self._sender = None
        atexit.unregister(self._at_exit)
        drained = True
        lost_before = self._memory.lost
        if sender is not None:
            drained = sender.stop(timeout)
            self._add_totals(sender)
        self._memory.abandon_queued()
        left = self._memory.lost - lost_before
        if left:
            drained = False
            log.warning("%d events were not delivered to %s before the client closed", left, self.url)
        if self._spool is not None:
            waiting = self._spool.pending()
            if waiting:
                log.info("%d events stay in the spool %s for the next start", waiting, self._spool.path)
            self._spool.close()
        return drained

    def _at_exit(self) -> None:
        self.close(self._exit_timeout)

    def _add_totals(self, sender: Sender) -> None:
        self._totals[0] += sender.sent
        self._totals[1] += sender.rejected
        self._totals[2] += sender.retries

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> Stats:
        sender = self._sender
        sent, rejected, retries = self._totals[0], self._totals[1], self._totals[2]
        last_error = None
        if sender is not None:
            sent += sender.sent
            rejected += sender.rejected
            retries += sender.retries
            last_error = sender.last_error
        pending = len(self._memory) + (sender.in_flight if sender is not None else 0)
        dropped = self._memory.dropped
        if self._spool is not None and not self._closed:
            pending += self._spool.pending()
            dropped += self._spool.counters()["dropped"]
        return Stats(
            sent=sent,
            pending=pending,
            dropped=dropped,
            rejected=rejected,
            lost=self._memory.lost,
            retries=retries,
            last_error=last_error,
        )

    def _after_fork_in_child(self) -> None:
        # The parent's queue, connection, spool handle and thread stay the parent's: the child
        # starts empty, with its own of each, and its sender starts with its first event.
        self._start_lock = threading.Lock()
        self._sender = None
        self._totals = [0, 0, 0, 0]
        self._memory.after_fork_in_child()
        if self._spool is not None and not self._closed:
            self._spool.after_fork_in_child()


def _after_fork_hook(ref: "weakref.ReferenceType[Client]") -> Any:
    def hook() -> None:
        client = ref()
        if client is not None:
            client._after_fork_in_child()

    return hook
