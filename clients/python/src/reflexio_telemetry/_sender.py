"""The background sender: takes batches from the spool and the in-memory queue and delivers each
to the bridge until it is acknowledged, refused, or the client closes.

What each answer means for a batch:

- ``202``: delivered; the batch is settled (deleted from the spool).
- ``400`` naming an event: that event is refused and dropped (logged, counted); the rest are sent
  again at once under a new idempotency key.
- ``413``: the batch is split in two, each half under a new key.
- ``415``, or ``400`` naming no event, for a compressed body: the bridge predates compressed
  bodies; compression is switched off and the batch sent again under a new key.
- any other ``400``, ``413``, ``415`` or other ``4xx``: the batch is refused whole (logged,
  counted).
- no answer, ``401``, ``408``, ``429`` and ``5xx``: retried with the **same** key, after
  ``Retry-After`` when the bridge sends one, else exponential backoff with jitter. A ``401`` is
  retried too (slowly), so that a token fixed on either side loses nothing.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from typing import Any, List, Optional

from ._backlog import Batch, MemoryQueue, log
from ._spool import Spool
from ._transport import Reply, Transport

#: The first retry delay, doubled at each further attempt up to ``max_backoff``.
BACKOFF_START = 0.1
#: The longest ``Retry-After`` honoured.
MAX_RETRY_AFTER = 300.0
#: The least time between two log lines about the same delivery failure.
FAILURE_LOG_INTERVAL = 60.0


def backoff(attempt: int, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of ``0.1 s * 2^(attempt-1)``."""
    base = min(cap, BACKOFF_START * (2 ** min(attempt - 1, 30)))
    return float(base) * rng.uniform(0.5, 1.0)


def retryable(status: int) -> bool:
    return status == 0 or status in (401, 408, 429) or 500 <= status <= 599


class Sender:
    def __init__(
        self,
        transport: Transport,
        memory: MemoryQueue,
        spool: Optional[Spool],
        batch_size: int,
        flush_interval: float,
        max_backoff: float,
    ) -> None:
        self.transport = transport
        self.memory = memory
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.rng = random.Random()
        self.progress = threading.Condition()
        self.wake = threading.Event()
        self._closing = threading.Event()
        self._abort = threading.Event()
        self.sent = 0
        # Events of the in-memory queue in the batch being delivered.
        self._current = 0
        # The next batch, claimed and encoded while the bridge works on the current one.
        self._prefetched: Optional[Batch] = None
        self.rejected = 0
        self.retries = 0
        self.last_error: Optional[str] = None
        self._failing_since: Optional[float] = None
        self._failure_logged_at = 0.0
        self._thread = threading.Thread(
            target=self._run, name="reflexio-telemetry-sender", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: Optional[float]) -> bool:
        """Delivers what is waiting for up to ``timeout`` seconds, then stops. True if nothing was
        left undelivered."""
        self._closing.set()
        self.wake.set()
        self._thread.join(timeout)
        drained = not self._thread.is_alive()
        if not drained:
            self._abort.set()
            self.wake.set()
            self._thread.join(self.transport_timeout() + 1.0)
        self.transport.close()
        return drained

    @property
    def in_flight(self) -> int:
        """Events taken from the in-memory queue and not yet settled."""
        n = self._current
        ahead = self._prefetched
        if ahead is not None and ahead.source is self.memory:
            n += len(ahead)
        return n

    def transport_timeout(self) -> float:
        return float(getattr(self.transport, "_timeout", 10.0))

    # The loop.

    def _run(self) -> None:
        try:
            while True:
                self.wake.wait(self.flush_interval)
                self.wake.clear()
                while not self._abort.is_set():
                    batch = self._next_batch()
                    if batch is None:
                        break
                    self._deliver(batch)
                self._notify()
                if self._abort.is_set():
                    ahead, self._prefetched = self._prefetched, None
                    if ahead is not None:
                        self._safely(ahead.source.release, ahead)
                    return
                # Nothing left that this process may claim: rows other live processes claimed
                # are theirs to send.
                if self._closing.is_set() and not len(self.memory):
                    return
        except BaseException:  # pragma: no cover - a bug; never let the thread die silently
            log.exception("the reflexio-telemetry sender stopped")
            raise

    def _notify(self) -> None:
        with self.progress:
            self.progress.notify_all()

    def _next_batch(self) -> Optional[Batch]:
        ahead, self._prefetched = self._prefetched, None
        if ahead is not None:
            return ahead
        return self._claim(wait_on_error=True)

    def _claim(self, wait_on_error: bool) -> Optional[Batch]:
        if self.spool is not None:
            try:
                batch = self.spool.claim(self.batch_size)
            except sqlite3.Error as e:
                self._failed(f"the spool cannot be read: {e}")
                if wait_on_error:
                    self._abort.wait(1.0)
                batch = None
            if batch is not None:
                return batch
        return self.memory.claim(self.batch_size)

    def _prefetch(self) -> None:
        """Claims and encodes the next batch while the bridge commits the current one."""
        if self._prefetched is None and not self._abort.is_set():
            self._prefetched = self._claim(wait_on_error=False)

    # Delivering one batch.

    def _deliver(self, batch: Batch) -> None:
        self._current = len(batch) if batch.source is self.memory else 0
        try:
            self._deliver_all(batch)
        finally:
            self._current = 0

    def _deliver_all(self, batch: Batch) -> None:
        todo: List[Batch] = [batch]
        attempt = 0
        while todo:
            b = todo.pop(0)
            if not b.lines:
                self._settle(b)
                continue
            if self._abort.is_set():
                for rest in [b] + todo:
                    self._safely(rest.source.release, rest)
                return
            reply = self.transport.post(b.body(), b.key, while_waiting=self._prefetch)
            try:
                attempt = self._handle(b, reply, todo, attempt)
            except sqlite3.Error as e:
                # The spool could not record what the answer means: the batch stays as it was
                # (same rows, same key) and is sent again.
                self._failed(f"the spool cannot be updated: {e}", len(b))
                todo.insert(0, b)
                self._abort.wait(1.0)

    def _handle(self, b: Batch, reply: Reply, todo: List[Batch], attempt: int) -> int:
        """Acts on one answer; returns the attempt count for the next one."""
        status = reply.status
        if status == 202:
            self._delivered(b, reply)
            attempt = 0
        elif status == 400 and reply.event_index is not None and 0 <= reply.event_index < len(b):
            self._refused_event(b, reply)
            todo.insert(0, b.source.reject(b, reply.event_index))
        elif status == 413 and len(b) > 1:
            log.info("a batch of %d events is too large for the bridge; splitting it", len(b))
            todo[0:0] = list(b.source.split(b))
        elif status in (400, 415) and reply.compressed and reply.event_index is None:
            # A bridge that predates compressed bodies: 415, or 400 for an unreadable body.
            log.warning(
                "the bridge does not take compressed bodies (HTTP %d: %s); sending them "
                "uncompressed",
                status,
                reply.error,
            )
            self.transport.compress = False
            todo.insert(0, b.source.rekey(b))
        elif not retryable(status):
            self._refused_batch(b, reply)
        else:
            attempt += 1
            self.retries += 1
            self._failed(self._describe(reply), len(b))
            delay = (
                min(reply.retry_after, MAX_RETRY_AFTER)
                if reply.retry_after is not None
                else backoff(attempt, self.max_backoff, self.rng)
            )
            if status == 401:
                delay = max(delay, self.max_backoff)
            self._safely(b.source.renew, b)
            todo.insert(0, b)
            self._abort.wait(delay)
        return attempt

    def _describe(self, reply: Reply) -> str:
        if reply.status == 0:
            return f"no answer from {self.transport.url}: {reply.error}"
        return f"HTTP {reply.status} from {self.transport.url}: {reply.error}"

    def _delivered(self, b: Batch, reply: Reply) -> None:
        if reply.accepted is not None and reply.accepted != len(b):
            log.warning(
                "the bridge acknowledged %d events of a batch of %d (key %s)",
                reply.accepted,
                len(b),
                b.key,
            )
        self._settle(b)
        self.sent += len(b)
        if self._failing_since is not None:
            log.info(
                "delivering to %s again after %.1f s",
                self.transport.url,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
        self._notify()

    def _settle(self, b: Batch) -> None:
        # A batch the bridge has but that cannot be settled here is sent again later under the
        # same key, which the bridge answers without counting it twice.
        for attempt in range(5):
            try:
                b.source.settle(b)
                return
            except sqlite3.Error as e:
                log.error("cannot remove a delivered batch from the spool: %s", e)
                self._abort.wait(0.2 * (attempt + 1))

    def _refused_event(self, b: Batch, reply: Reply) -> None:
        assert reply.event_index is not None
        self.rejected += 1
        log.error(
            "the bridge refused an event (%s: %s); it is dropped: %s",
            reply.field,
            reply.error,
            b.lines[reply.event_index][:300],
        )

    def _refused_batch(self, b: Batch, reply: Reply) -> None:
        self.rejected += len(b)
        log.error(
            "the bridge refused a batch of %d events with HTTP %d (%s); they are dropped",
            len(b),
            reply.status,
            reply.error,
        )
        drop = getattr(b.source, "drop", None)
        if drop is not None:
            self._safely(drop, b)
        else:
            self._settle(b)
        self._notify()

    def _failed(self, reason: str, events: int = 0) -> None:
        self.last_error = reason
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._failure_logged_at = now
            log.warning("cannot deliver %d events: %s; retrying", events, reason)
        elif now - self._failure_logged_at >= FAILURE_LOG_INTERVAL:
            self._failure_logged_at = now
            log.warning(
                "still cannot deliver, for %.0f s: %s; retrying", now - self._failing_since, reason
            )

    def _safely(self, fn: Any, b: Batch) -> None:
        try:
            fn(b)
        except sqlite3.Error as e:
            log.error("the spool cannot be updated: %s", e)
