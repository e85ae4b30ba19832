"""Reflexio telemetry for Python: typed events, delivered to a reflexio-bridge in the background
with batching, safe retries and an optional local spool.

>>> from reflexio_telemetry import Client, Cove
>>> client = Client("http://127.0.0.1:8000")            # doctest: +SKIP
>>> client.fact(hallucinated=False, atomic=True,         # doctest: +SKIP
...             citation_coverage=0.98, cove=Cove(0.91, 1))
>>> with client.lock("daily_digest"):                     # doctest: +SKIP
...     client.digest()

The map of the package:

- ``_events``: validation (:class:`InvalidEvent`) and the JSON wire encoding: the vocabulary.
- ``_transport``: one HTTP exchange with the bridge.
- ``_backlog`` and ``_spool``: where events wait (memory, or a SQLite file).
- ``_sender``: the background thread and what each answer of the bridge means.
- ``_client``: :class:`Client`, its recording calls and its lifecycle.
"""

from ._client import Client, Cove, Stats
from ._events import (
    MAX_DELETED_RECORDS,
    MAX_NAME_BYTES,
    MAX_PID,
    MAX_ROUNDS,
    InvalidEvent,
)
from ._spool import SpoolError
from ._version import __version__

__all__ = [
    "Client",
    "Cove",
    "InvalidEvent",
    "MAX_DELETED_RECORDS",
    "MAX_NAME_BYTES",
    "MAX_PID",
    "MAX_ROUNDS",
    "SpoolError",
    "Stats",
    "__version__",
]
