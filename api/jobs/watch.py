"""Beside a running job: its heartbeat, the cancel flag of another process, and its lease.

`Watch` is a thread per running job. Every `heartbeat_seconds` it writes the job's heartbeat;
in between (every `progress_interval`) it reads the record, and stops the run at once when the
job was cancelled, deleted or taken over by another worker.

The lease: other workers judge a job dead when its heartbeat is older than
`stale_after_seconds` (`api.jobs.policy`), so a worker whose heartbeat writes stall (a database
that stops answering this worker only, a network that drops its packets, a paused VM) could go
on running a job that another worker has taken over: the same job twice. `Lease` fences that:
once the last heartbeat that reached the database is half of `stale_after_seconds` old, the
engine pauses at its next check (within one block of a model; `Lease.is_set` is its
`should_abort`) and the worker stops claiming and reports not-ready. When a heartbeat gets
through again the run continues where it paused; when the job turns out to be taken over
meanwhile, the run stops without writing anything, and the new owner continues from the last
saved run state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from api.jobs.outage import Outages
from api.jobs.store import JobStore
from api.runner import RunStop

log = logging.getLogger(__name__)

PAUSE_POLL = 0.5  # seconds: how often a paused run looks at its lease and its stop flags


class Lease:
    """Whether this worker may still count a running job as its own; the engine's abort flag.

    `renew(at)` after each heartbeat that reached the database (`at`: when its write began,
    on the `clock`); the lease lapses `fence` seconds after the newest renewal.
    """

    def __init__(
        self,
        job_id: str,
        fence: float,
        stop: RunStop,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.job_id, self.fence, self.stop, self._clock = job_id, fence, stop, clock
        self._renewed = clock()  # the claim wrote the first heartbeat just now
        self._paused_at: float | None = None
        self._changed = threading.Condition()

    def renew(self, at: float) -> None:
        """A heartbeat written at `at` reached the database: the job is still this worker's."""
        with self._changed:
            self._renewed = max(self._renewed, at)
            if self._paused_at is not None and not self._lapsed():
                log.info("job %s: its heartbeat got through; the run continues after %.0f s",
                         self.job_id, self._clock() - self._paused_at)  # fmt: skip
                self._paused_at = None
            self._changed.notify_all()

    def lapsed(self) -> bool:
        """Whether no heartbeat has reached the database for `fence` seconds."""
        with self._changed:
            return self._lapsed()

    def _lapsed(self) -> bool:
        return self._clock() - self._renewed > self.fence

    def quiet_seconds(self) -> float:
        """Seconds since the newest heartbeat that reached the database."""
        with self._changed:
            return self._clock() - self._renewed

    def is_set(self) -> bool:
        """The engine's `should_abort`: True once the run is aborted; while the lease has lapsed
        it waits (the run pauses) until a heartbeat gets through or the run is stopped."""
        if not self.stop.aborted.is_set() and self.lapsed():
            self._pause()
        return self.stop.aborted.is_set()

    def _pause(self) -> None:
        with self._changed:
            while self._lapsed() and not self.stop.is_set():
                if self._paused_at is None:
                    self._paused_at = self._clock()
                    log.warning(
                        "job %s: paused: no heartbeat has reached the database for %.0f s, so "
                        "another worker may take the job over; it goes on once one does",
                        self.job_id, self._clock() - self._renewed,
                    )  # fmt: skip
                self._changed.wait(PAUSE_POLL)


class Runner(Protocol):
    """What `Watch` reads of its job's runner (`api.jobs.worker.JobRunner`)."""

    store: JobStore
    outages: Outages

    @property
    def worker_id(self) -> str: ...


class Watch:
    """A thread beside a running job: heartbeat, lease, and the cancel flag of another process."""

    def __init__(
        self, runner: Runner, job_id: str, lease: Lease, heartbeat: float, interval: float
    ):
        self.runner, self.job_id, self.lease = runner, job_id, lease
        self.heartbeat, self.interval = heartbeat, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"t2a-watch-{job_id[:8]}")
        self._thread.daemon = True

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while not self._done.wait(self.interval):
            try:
                # A lapsed lease is renewed as soon as the database answers again.
                if time.monotonic() - last_beat >= self.heartbeat or self.lease.lapsed():
                    last_beat = time.monotonic()
                    self._beat()
                else:
                    self._check()
            except Exception as exc:  # tried again at the next tick, never given up
                if self.runner.outages.note(exc) is None:
                    log.exception("job %s: heartbeat failed", self.job_id)

    def _check(self) -> None:
        """Stop the run if the job was cancelled, deleted or taken over."""
        job = self.runner.store.get(self.job_id)
        if job is None or job.cancel_requested or job.worker_id != self.runner.worker_id:
            self.lease.stop.abort()

    def _beat(self) -> None:
        began = time.monotonic()
        if self.runner.store.heartbeat(self.job_id, self.runner.worker_id):
            self.lease.renew(began)
        else:
            self._check()
