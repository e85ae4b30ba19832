"""The local spool: a SQLite file where every event is committed before the recording call
returns, and deleted only after the bridge acknowledged it.

Several processes may share one spool (forked workers, a restarted application). A batch is
*claimed* by one process (its pid and a per-process token, with a lease) together with its
idempotency key, in one transaction, so no two live processes send the same rows. Rows of a
process that died are claimed again by the next sender **with the same key**, so a batch the
bridge committed just before the owner died is answered from the bridge's key store, not counted
twice.

The spool is bounded: when it holds more than ``max_events`` unclaimed rows, the oldest are
deleted, counted in the spool itself (``dropped``) and logged.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ._backlog import Batch, DropLog, log, new_key

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    batch INTEGER
);
CREATE INDEX IF NOT EXISTS events_by_batch ON events(batch) WHERE batch IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    pid INTEGER,
    host TEXT,
    token TEXT,
    claimed_at REAL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters(name, value) VALUES ('dropped', 0), ('rejected', 0);
"""

_INSERT = "INSERT INTO events(body) VALUES (?)"

#: How long a write waits for another process's write to the spool to finish.
BUSY_TIMEOUT = 10.0

#: A live owner renews its claim at every attempt; a claim older than this is taken over.
DEFAULT_LEASE = 300.0

_HOST = socket.gethostname()
# Identifies this process among processes that reuse its pid. Regenerated in a forked child.
_process_token = uuid.uuid4().hex
# Connections opened by a parent before a fork: never used nor closed in the child.
_inherited: List[sqlite3.Connection] = []


def _new_process_token() -> None:
    global _process_token
    _process_token = uuid.uuid4().hex


os.register_at_fork(after_in_child=_new_process_token)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpoolError(RuntimeError):
    """The spool file cannot be opened or is not a spool of this version."""


class Spool:
    def __init__(self, path: str, max_events: int, lease: float = DEFAULT_LEASE) -> None:
        if max_events < 1:
            raise ValueError(f"spool_max_events must be at least 1, not {max_events}")
        self.path = os.fspath(path)
        self.max_events = max_events
        self.lease = lease
        self._drops = DropLog(f"the spool {self.path}")
        self._open()

    def _open(self) -> None:
        self._lock = threading.Lock()
        try:
            con = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SpoolError(
                    f"{self.path} is a spool of version {version}; this client reads version "
                    f"{SCHEMA_VERSION}"
                )
            con.executescript(_SCHEMA)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as e:
            raise SpoolError(f"cannot open the spool {self.path}: {e}") from e
        self._con = con
        # Rows below this id were already pruned by this process.
        self._pruned_below = 0

    def after_fork_in_child(self) -> None:
        """A SQLite connection must not cross a fork: the child opens its own."""
        _inherited.append(self._con)
        self._open()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # Recording.

    def put(self, line: str) -> None:
        """Commits one event before returning; drops the oldest rows past the bound."""
        with self._lock:
            con = self._con
            # One statement, its own transaction; the bound is checked against the new row id
            # (ids only grow), and the oldest unclaimed rows past it go in a second transaction.
            rid = con.execute(_INSERT, (line,)).lastrowid or 0
            floor = rid - self.max_events
            if floor < self._pruned_below:
                return
            con.execute("BEGIN IMMEDIATE")
            try:
                dropped = con.execute(
                    "DELETE FROM events WHERE batch IS NULL AND id <= ?", (floor,)
                ).rowcount
                if dropped:
                    con.execute(
                        "UPDATE counters SET value = value + ? WHERE name = 'dropped'",
                        (dropped,),
                    )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            self._pruned_below = floor + 1
            if dropped:
                self._drops.note(self.counter("dropped"))

    # Sending.

    def _owner_gone(self, pid: Optional[int], host: Optional[str], token: Optional[str],
                    claimed_at: Optional[float], now: float) -> bool:
        if pid is None:
            return True
        if token == _process_token and pid == os.getpid():
            return False
        if claimed_at is None or now - claimed_at > self.lease:
            return True
        if host != _HOST:
            return False
        if pid == os.getpid():
            return True  # another token with this pid: an earlier process, now gone
        return not _pid_alive(pid)

    def claim(self, n: int, now: Optional[float] = None) -> Optional[Batch]:
        """The next batch for this process: an abandoned batch first (same key), else up to
        ``n`` unclaimed rows under a new key."""
        now = time.time() if now is None else now
        me = (os.getpid(), _HOST, _process_token, now)
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                batch = None
                for bid, key, pid, host, token, at in con.execute(
                    "SELECT id, key, pid, host, token, claimed_at FROM batches ORDER BY id"
                ).fetchall():
                    if self._owner_gone(pid, host, token, at, now):
                        con.execute(
                            "UPDATE batches SET pid=?, host=?, token=?, claimed_at=? WHERE id=?",
                            (*me, bid),
                        )
                        rows = con.execute(
                            "SELECT id, body FROM events WHERE batch=? ORDER BY id", (bid,)
                        ).fetchall()
                        if rows:
                            batch = Batch(key, [r[1] for r in rows], [r[0] for r in rows], bid, self)
                            break
                        con.execute("DELETE FROM batches WHERE id=?", (bid,))
                if batch is None:
                    key = new_key()
                    bid = con.execute(
                        "INSERT INTO batches(key, pid, host, token, claimed_at) VALUES (?,?,?,?,?)",
                        (key, *me),
                    ).lastrowid
                    con.execute(
                        "UPDATE events SET batch=? WHERE id IN "
                        "(SELECT id FROM events WHERE batch IS NULL ORDER BY id LIMIT ?)",
                        (bid, n),
                    )
                    rows = con.execute(
                        "SELECT id, body FROM events WHERE batch=? ORDER BY id", (bid,)
                    ).fetchall()
                    if rows:
                        batch = Batch(key, [r[1] for r in rows], [r[0] for r in rows], bid, self)
                    else:
                        con.execute("DELETE FROM batches WHERE id=?", (bid,))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return batch

    def _transaction(self, statements: List[Tuple[str, Tuple[Any, ...]]]) -> None:
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    con.execute(sql, args)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def settle(self, batch: Batch) -> None:
        """The bridge acknowledged the batch: its rows go."""
        self._transaction(
            [
                ("DELETE FROM events WHERE batch=?", (batch.handle,)),
                ("DELETE FROM batches WHERE id=?", (batch.handle,)),
            ]
        )

    def reject(self, batch: Batch, index: int) -> Batch:
        """The bridge refused the event at ``index``: it goes, counted; the rest get a new key."""
        key = new_key()
        self._transaction(
            [
                ("DELETE FROM events WHERE id=?", (batch.ids[index],)),
                ("UPDATE counters SET value = value + 1 WHERE name = 'rejected'", ()),
                ("UPDATE batches SET key=? WHERE id=?", (key, batch.handle)),
            ]
        )
        return Batch(
            key,
            batch.lines[:index] + batch.lines[index + 1 :],
            batch.ids[:index] + batch.ids[index + 1 :],
            batch.handle,
            self,
        )

    def drop(self, batch: Batch) -> None:
        """The bridge refused the whole batch: its rows go, counted as rejected."""
        self._transaction(
            [
                ("DELETE FROM events WHERE batch=?", (batch.handle,)),
                ("DELETE FROM batches WHERE id=?", (batch.handle,)),
                (
                    "UPDATE counters SET value = value + ? WHERE name = 'rejected'",
                    (len(batch.ids),),
                ),
            ]
        )

    def rekey(self, batch: Batch) -> Batch:
        """The same rows under a new key (the request changed)."""
        key = new_key()
        self._transaction([("UPDATE batches SET key=? WHERE id=?", (key, batch.handle))])
        return Batch(key, batch.lines, batch.ids, batch.handle, self)

    def split(self, batch: Batch) -> Tuple[Batch, Batch]:
        """Two halves under new keys (the whole was too large for the bridge)."""
        half = len(batch.ids) // 2
        first_key, second_key = new_key(), new_key()
        now = time.time()
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("UPDATE batches SET key=? WHERE id=?", (first_key, batch.handle))
                second = con.execute(
                    "INSERT INTO batches(key, pid, host, token, claimed_at) VALUES (?,?,?,?,?)",
                    (second_key, os.getpid(), _HOST, _process_token, now),
                ).lastrowid
                con.executemany(
                    "UPDATE events SET batch=? WHERE id=?", [(second, i) for i in batch.ids[half:]]
                )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return (
            Batch(first_key, batch.lines[:half], batch.ids[:half], batch.handle, self),
            Batch(second_key, batch.lines[half:], batch.ids[half:], second, self),
        )

    def renew(self, batch: Batch) -> None:
        self._transaction(
            [("UPDATE batches SET claimed_at=? WHERE id=?", (time.time(), batch.handle))]
        )

    def release(self, batch: Batch) -> None:
        """Unsent at close: the batch stays, with its key, for whichever process sends next."""
        self._transaction(
            [("UPDATE batches SET pid=NULL, token=NULL WHERE id=?", (batch.handle,))]
        )

    # Reading.

    def mark(self) -> int:
        """The id of the newest row so far."""
        with self._lock:
            row = self._con.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        return row[0] if row else 0

    def pending(self, up_to: Optional[int] = None) -> int:
        """Rows waiting for the bridge (with ids up to ``up_to``)."""
        with self._lock:
            if up_to is None:
                row = self._con.execute("SELECT count(*) FROM events").fetchone()
            else:
                row = self._con.execute(
                    "SELECT count(*) FROM events WHERE id <= ?", (up_to,)
                ).fetchone()
        return int(row[0])

    def counter(self, name: str) -> int:
        # Called with or without the lock held by this thread: read on a cursor of its own.
        row = self._con.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return row[0] if row else 0

    def counters(self) -> Dict[str, int]:
        with self._lock:
            return {n: self.counter(n) for n in ("dropped", "rejected")}
