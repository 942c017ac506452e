"""Outages of the job database and the queue: telling them from bugs, and riding them out.

A worker must outlive a database restart or a broker blip: a failed write is retried with
backoff (`retry`), a running job keeps running, and `Outages` remembers when this process last
failed to reach either service, so the dead-worker check does not mistake the silence that an
outage forced on every worker for dead workers (`Outages.settled`). The API answers 503 with
Retry-After for the same errors, naming the service, on every route (`install_outage_handlers`),
never a bare 500: `{"error": "unavailable", "service": "database", "detail": ...}`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from api.errors import StorageError
from api.jobs.errors import QueueUnavailable
from engine.errors import one_line

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a lost or refused database connection raises through SQLAlchemy.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection came free
)
# What psycopg says when a pooled connection that the server closed is checked before use
# (SQLAlchemy's pre-ping sets autocommit on it): a lost connection, not a bug.
_LOST_IN_PRE_PING = "can't change 'autocommit' now"
UNAVAILABLE_RETRY_AFTER = 5  # seconds: a restarting database is usually back by then
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds: first wait, longest wait between two tries
OUTAGE_GAP = 30.0  # seconds: failures closer than this belong to one outage
SPANS_KEPT = 100  # outages remembered (`Outages.during`)
REASON_CHARS = 200  # an outage's reason (`one_line`) is cut there in reports and logs


def unavailable_service(exc: BaseException) -> str | None:
    """'database', 'queue' or 'storage' when `exc` says that service cannot be reached now,
    else None."""
    if isinstance(exc, QueueUnavailable):
        return "queue"
    if isinstance(exc, StorageError) and exc.unavailable:
        return "storage"
    if isinstance(exc, sa_exc.ProgrammingError) and _LOST_IN_PRE_PING in str(exc):
        return "database"  # a pooled connection that died while it was being checked
    if isinstance(exc, DATABASE_ERRORS):
        return "database"
    return None


class Outages:
    """When this process last failed to reach the database or the queue (thread-safe), and the
    spans of its recent outages of either (in epoch seconds; failures less than `OUTAGE_GAP`
    apart are one outage)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ):
        self._clock, self._wall = clock, wall
        self._last: float | None = None
        self._spans: list[list[float]] = []  # [first failure, last failure], the newest last
        self._lock = threading.Lock()
        self.on_failure: Callable[[str], None] = lambda service: None  # e.g. a metric

    def failed(self, service: str) -> None:
        """Record a failure to reach `service` now."""
        now = self._wall()
        with self._lock:
            self._last = self._clock()
            if service == "storage":  # no heartbeat goes there: it silences no worker
                pass
            elif self._spans and now - self._spans[-1][1] < OUTAGE_GAP:
                self._spans[-1][1] = now
            else:
                self._spans = [*self._spans[-(SPANS_KEPT - 1) :], [now, now]]
        self.on_failure(service)

    def during(self, start: float, end: float) -> bool:
        """Whether this process met an outage between `start` and `end` (epoch seconds)."""
        with self._lock:
            return any(first <= end and last >= start for first, last in self._spans)

    def note(self, exc: BaseException) -> str | None:
        """Record `exc` if it is an outage ('database' or 'queue', returned); None for any
        other error, which the caller handles as a bug."""
        service = unavailable_service(exc)
        if service is not None:
            self.failed(service)
        return service

    def settled(self, seconds: float) -> bool:
        """Whether both services have answered for the last `seconds` (no failure since)."""
        with self._lock:
            return self._last is None or self._clock() - self._last >= seconds


def retry(
    call: Callable[[], T],
    what: str,
    outages: Outages,
    give_up_after: float,
    stop: threading.Event | None = None,
) -> T:
    """`call()`, tried again with backoff while its service is unreachable.

    Other errors raise at once; the last outage error raises after `give_up_after` seconds,
    or as soon as `stop` is set.
    """
    start = time.monotonic()
    deadline, wait, tries = start + give_up_after, RETRY_FIRST, 0
    while True:
        try:
            result = call()
        except Exception as exc:
            service = outages.note(exc)
            if service is None:
                raise
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                raise
            pause, tries = min(wait, left), tries + 1
            # One warning when the outage starts; the tries after it only at debug level.
            log.log(
                logging.WARNING if tries == 1 else logging.DEBUG,
                "%s: the %s is unavailable (%s); retrying with backoff",
                what, service, one_line(exc, REASON_CHARS),
            )  # fmt: skip
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
            wait = min(wait * 2, RETRY_MAX)
            continue
        if tries:
            log.info("%s: done after %d tries (%.1f s)", what, tries + 1, time.monotonic() - start)
        return result


def unavailable_response(service: str, retry_after: int = UNAVAILABLE_RETRY_AFTER) -> JSONResponse:
    """503 naming the service that cannot be reached, with Retry-After."""
    detail = f"the job {service} is unavailable; retry in {retry_after} s"
    return JSONResponse(
        {"error": "unavailable", "service": service, "detail": detail},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, sa_exc.ProgrammingError) and unavailable_service(exc) is None:
        raise exc  # a real programming error: the server's 500
    service = unavailable_service(exc) or "database"
    log.warning("%s %s: the %s is unavailable: %s", request.method, request.url.path, service,
                type(exc).__name__)  # fmt: skip
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is not None:
        jobs.outages.failed(service)
    return unavailable_response(service)


def install_outage_handlers(app: FastAPI) -> None:
    """Answer every outage error of any route with `unavailable_response`."""
    for error in (*DATABASE_ERRORS, sa_exc.ProgrammingError, QueueUnavailable):
        app.add_exception_handler(error, _unavailable)
