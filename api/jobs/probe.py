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

ANSWER_WITHIN = 3.0  # seconds a caller waits for a check before it is told what hangs

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
    """Cached checks of the database, the queue and the workers' heartbeats.

    A check that does not answer within `answer_within` seconds (a database or bucket that
    stopped answering: its own deadline may be minutes away) is reported as that, naming the
    service it waits for, instead of holding the caller: it goes on in its own thread, and the
    next caller gets its result once it has one. At most one check runs at a time.
    """

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        stale_after: float,
        outages: Outages,
        ttl: float = 2.0,
        artifacts: ArtifactStore | None = None,
        answer_within: float = ANSWER_WITHIN,
    ):
        self.store, self.queue, self.stale_after, self.outages = store, queue, stale_after, outages
        self.artifacts = artifacts
        self.ttl, self.answer_within = ttl, answer_within
        self._lock = threading.Lock()
        self._last: tuple[float, Health] | None = None
        self._measuring: threading.Event | None = None  # set when the check under way is done
        self._stage = "database"  # what the check under way waits for

    def check(self) -> Health:
        """The latest check, made now if the cached one is older than `ttl`."""
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.ttl:
                return self._last[1]
            if self._measuring is None:
                self._measuring = threading.Event()
                threading.Thread(target=self._measure_in_background, daemon=True,
                                 name="t2a-probe").start()  # fmt: skip
            measuring = self._measuring
        if measuring.wait(self.answer_within):
            with self._lock:
                if self._last is not None:
                    return self._last[1]
        return self._no_answer()

    def _measure_in_background(self) -> None:
        health: Health | None = None
        try:
            health = self._measure()
        finally:
            with self._lock:
                if health is not None:
                    self._last = (time.monotonic(), health)
                done, self._measuring = self._measuring, None
            if done is not None:
                done.set()

    def _no_answer(self) -> Health:
        """What a check still waiting after `answer_within` seconds says."""
        with self._lock:
            stage = self._stage
        self.outages.failed(stage)
        waiting = f"no answer within {self.answer_within:g} s"
        later = "not checked yet (an earlier check waits for an answer)"
        order = ["database", "queue", "storage"]
        errors = {name: None if order.index(name) < order.index(stage) else later
                  for name in order}  # fmt: skip
        errors[stage] = waiting
        return Health(errors["database"], errors["queue"], None, None, errors["storage"])

    def _measure(self) -> Health:
        database = queue = None
        live = queued = None
        self._stage = "database"
        try:
            self.store.ping()
            live = len(self.store.live_workers(time.time() - self.stale_after))
        except Exception as exc:
            database = one_line(exc, REASON_CHARS)
            self.outages.failed("database")
        self._stage = "queue"
        try:
            queued = self.queue.ping()
        except Exception as exc:
            queue = one_line(exc.__cause__ or exc, REASON_CHARS)
            self.outages.failed("queue")
        self._stage = "storage"
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
