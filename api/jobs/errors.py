"""Why a job submission (or an event stream) is refused, and the answer each gets: its status
and Retry-After (`install_refusal_handlers`, installed by `create_app`), so a route only raises.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class QueueUnavailable(Exception):
    """The queue (Redis, PostgreSQL) cannot be reached: nothing was recorded (503; answered by
    `api.jobs.outage`, which names the service)."""

    retry_after = 10


class Refusal(Exception):
    """A request the service turns away for now: `status` 503 when the server cannot take the
    work, 429 when this client is over its limits; `retry_after` seconds."""

    status: int
    retry_after: int


class QueueFull(Refusal):
    """Too many jobs are queued (503 with Retry-After)."""

    status = 503

    def __init__(self, queued: int, retry_after: int):
        super().__init__(f"the queue is full ({queued} jobs wait); retry in {retry_after} s")
        self.retry_after = retry_after


class RateLimited(Refusal):
    """The client submitted too many jobs lately (429 with Retry-After)."""

    status = 429

    def __init__(self, limit: int, window: int, retry_after: int):
        super().__init__(
            f"at most {limit} jobs per {window} s may be submitted; retry in {retry_after} s"
        )
        self.retry_after = retry_after


class ClientBusy(Refusal):
    """The client already has its share of queued and running jobs (429)."""

    status = 429
    retry_after = 30

    def __init__(self, limit: int):
        super().__init__(
            f"at most {limit} jobs of one client may be queued or running at once "
            "(T2A_MAX_JOBS_PER_CLIENT); wait for one to end or cancel one"
        )


class TooManyListeners(Refusal):
    """The client holds too many open event streams (429)."""

    status = 429
    retry_after = 5

    def __init__(self, limit: int):
        super().__init__(f"at most {limit} event streams may be open per client; close one first")


class NoWorker(Refusal):
    """A request would wait for a worker, and none is alive (503)."""

    status = 503
    retry_after = 30

    def __init__(self) -> None:
        super().__init__(
            "no worker is running: start `text2art worker` (this node only queues jobs, "
            "T2A_RUN_WORKER_IN_PROCESS=false)"
        )


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)
    headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


def install_refusal_handlers(app: FastAPI) -> None:
    """Answer every refusal with its status, `{"detail": why}` and Retry-After."""
    app.add_exception_handler(Refusal, _refused)
