"""Waiting for a job to end, for `POST /generate` on an API-only node.

With `T2A_RUN_WORKER_IN_PROCESS=false` a node loads no models: its `/generate` submits a job to
the queue and holds the request open until a worker ends it, then answers with the PNG as
usual. When the client goes away first, the job is cancelled: nobody would read its picture.
A database that stops answering meanwhile is waited out (the worker records the end once it is
back), up to `give_up_after` seconds of silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool

from api.jobs.outage import unavailable_service
from api.jobs.store import FINAL, Job

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


class ClientGone(Exception):
    """The client disconnected before the job ended (it was cancelled)."""


async def wait_for_end(
    read: Callable[[], Job | None],
    cancel: Callable[[], object],
    disconnected: Callable[[], Awaitable[bool]],
    give_up_after: float = 120.0,
) -> Job | None:
    """The job once it reached a final state (None: it was deleted meanwhile).

    `read()` fetches the job; `cancel()` is called (in a thread) when `disconnected()` says the
    client went away, and `ClientGone` is raised. Outage errors of `read` are retried until
    `give_up_after` seconds pass without an answer, then raised.
    """
    failing_since: float | None = None
    while True:
        try:
            job = await run_in_threadpool(read)
        except Exception as exc:
            if unavailable_service(exc) is None:
                raise
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > give_up_after:
                raise
        else:
            failing_since = None
            if job is None or job.status in FINAL:
                return job
        if await disconnected():
            log.info("client disconnected: cancelling its queued /generate job")
            await run_in_threadpool(cancel)
            raise ClientGone("the client went away; its job was cancelled")
        await asyncio.sleep(POLL_SECONDS)
