"""Whether the job database, the queue and the storage answer, and how many workers are alive.

`/readyz` (of the API and of a worker's health server) asks often, and so do the queue ETAs, so
`Probe.check` caches its answer for `ttl` seconds: a load balancer polling every second costs
one `SELECT 1`, one queue-size call and one read of a small object of the store per `ttl`,
whatever the number of pollers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from api.jobs.outage import REASON_CHARS, Outages
from api.jobs.queue import JobQueue
from api.jobs.store import JobStore
from api.storage import ArtifactStore
from engine.errors import one_line

NO_WORKER = (
    "no worker has a fresh heartbeat: jobs are accepted but wait until a `text2art worker` "
    "(or `text2art serve` with T2A_RUN_WORKER_IN_PROCESS=true) runs"
)


@dataclass(frozen=True)
class Health:
    """One check: each service's error (None: it answered) and the live workers."""

    database: str | None
    queue: str | None
    live_workers: int | None  # None: unknown (the database did not answer)
    queued: int | None
    storage: str | None = None

    @property
    def ok(self) -> bool:
        """Every service answered."""
        return self.database is None and self.queue is None and self.storage is None

    def report(self) -> dict[str, Any]:
        """The JSON body part of `/readyz`."""
        body: dict[str, Any] = {
            "database": _state(self.database),
            "queue": _state(self.queue),
            "storage": _state(self.storage),
            "workers": {"live": self.live_workers},
        }
        if self.queued is not None:
            body["queue"]["entries"] = self.queued
        if self.live_workers == 0:
            body["workers"]["warning"] = NO_WORKER
        return body


def _state(error: str | None) -> dict[str, Any]:
    return {"ok": True} if error is None else {"ok": False, "error": error}


class Probe:
    """Cached checks of the database, the queue and the workers' heartbeats."""

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        stale_after: float,
        outages: Outages,
        ttl: float = 2.0,
        artifacts: ArtifactStore | None = None,
    ):
        self.store, self.queue, self.stale_after, self.outages = store, queue, stale_after, outages
        self.artifacts = artifacts
        self.ttl = ttl
        self._lock = threading.Lock()
        self._last: tuple[float, Health] | None = None

    def check(self) -> Health:
        """The latest check, made now if the cached one is older than `ttl`."""
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.ttl:
                return self._last[1]
            health = self._measure()
            self._last = (time.monotonic(), health)
            return health

    def _measure(self) -> Health:
        database = queue = None
        live = queued = None
        try:
            self.store.ping()
            live = len(self.store.live_workers(time.time() - self.stale_after))
        except Exception as exc:
            database = one_line(exc, REASON_CHARS)
            self.outages.failed("database")
        try:
            queued = self.queue.ping()
        except Exception as exc:
            queue = one_line(exc.__cause__ or exc, REASON_CHARS)
            self.outages.failed("queue")
        return Health(database, queue, live, queued, self._storage())

    def _storage(self) -> str | None:
        """None when the store answers a read (of a marker that need not exist)."""
        if self.artifacts is None:
            return None
        try:
            self.artifacts.read_marker("ping")
        except Exception as exc:
            self.outages.note(exc)
            return one_line(exc, REASON_CHARS)
        return None
