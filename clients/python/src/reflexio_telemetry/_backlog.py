"""Where recorded events wait for the bridge: the bounded in-memory queue, and the batch both it
and the spool hand to the sender."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from ._events import Record, encode

log = logging.getLogger("reflexio_telemetry")

#: The least time between two log lines about dropped events.
DROP_LOG_INTERVAL = 60.0


def new_key() -> str:
    """A fresh idempotency key: a random UUID."""
    return str(uuid.uuid4())


class Batch:
    """Events sent together under one idempotency key. ``source`` settles it; ``ids`` are the
    spool's row ids (empty for the in-memory queue)."""

    __slots__ = ("key", "lines", "ids", "handle", "source")

    def __init__(
        self, key: str, lines: List[str], ids: List[int], handle: Any, source: Any
    ) -> None:
        self.key = key
        self.lines = lines
        self.ids = ids
        self.handle = handle
        self.source = source

    def body(self) -> bytes:
        return ("[" + ",".join(self.lines) + "]").encode("utf-8")

    def __len__(self) -> int:
        return len(self.lines)


class DropLog:
    """Counts dropped events and logs them, at most once a minute."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._logged_at = -DROP_LOG_INTERVAL
        self._logged_count = 0

    def note(self, total: int) -> None:
        now = time.monotonic()
        if now - self._logged_at >= DROP_LOG_INTERVAL:
            log.warning(
                "%s is full: dropped %d oldest events (%d in all)",
                self.what,
                total - self._logged_count,
                total,
            )
            self._logged_at = now
            self._logged_count = total


class MemoryQueue:
    """A bounded FIFO of records. Recording threads append without a lock (``deque.append`` is
    atomic); when it is full the oldest record is dropped and counted. The sender takes batches
    under a lock, so that :meth:`mark` is exact."""

    def __init__(self, max_events: int) -> None:
        if max_events < 1:
            raise ValueError(f"max_queue must be at least 1, not {max_events}")
        self.max_events = max_events
        self._init()

    def _init(self) -> None:
        self._q: Deque[Record] = deque()
        self._lock = threading.Lock()
        # Records that left the queue: into a batch or dropped. Guarded by the lock.
        self._taken = 0
        self.dropped = 0
        # Records of settled batches (acknowledged or refused). Written by the sender only.
        self.settled = 0
        self.lost = 0
        self._drops = DropLog("the in-memory queue")

    def after_fork_in_child(self) -> None:
        """The parent's records are the parent's to send: the child starts empty."""
        self._init()

    def put(self, record: Record) -> int:
        q = self._q
        if len(q) >= self.max_events:
            self._drop_oldest()
        q.append(record)
        return len(q)

    def _drop_oldest(self) -> None:
        with self._lock:
            n = 0
            while len(self._q) >= self.max_events:
                self._q.popleft()
                n += 1
            self._taken += n
            self.dropped += n
        if n:
            self._drops.note(self.dropped)

    def __len__(self) -> int:
        return len(self._q)

    def mark(self) -> int:
        """How many records have entered the queue so far."""
        with self._lock:
            return self._taken + len(self._q)

    def done(self) -> int:
        """How many records have been settled, dropped or lost so far."""
        return self.settled + self.dropped + self.lost

    def claim(self, n: int) -> Optional[Batch]:
        with self._lock:
            k = min(n, len(self._q))
            if k == 0:
                return None
            popleft = self._q.popleft
            records = [popleft() for _ in range(k)]
            self._taken += k
        return Batch(new_key(), [encode(r) for r in records], [], None, self)

    def settle(self, batch: Batch) -> None:
        self.settled += len(batch)

    def reject(self, batch: Batch, index: int) -> Batch:
        """Drops the event at ``index`` (the bridge refused it); the rest get a new key."""
        lines = batch.lines[:index] + batch.lines[index + 1 :]
        self.settled += 1
        return Batch(new_key(), lines, [], None, self)

    def rekey(self, batch: Batch) -> Batch:
        return Batch(new_key(), batch.lines, [], None, self)

    def split(self, batch: Batch) -> Tuple[Batch, Batch]:
        half = len(batch.lines) // 2
        return (
            Batch(new_key(), batch.lines[:half], [], None, self),
            Batch(new_key(), batch.lines[half:], [], None, self),
        )

    def renew(self, batch: Batch) -> None:
        pass

    def release(self, batch: Batch) -> None:
        """The client is closing with the batch unsent: it is lost, and counted."""
        self.lost += len(batch)

    def abandon_queued(self) -> int:
        """Counts what is still queued at close as lost; returns how many."""
        with self._lock:
            n = len(self._q)
            self._q.clear()
            self._taken += n
            self.lost += n
        return n
