"""Live progress of a job as Server-Sent Events: `status`, `position`, `progress`, `preview`.

The stream polls the job's record (the database is the source of truth, whichever process runs
the job) and sends what changed; the record's `version` is the event id, so a client that
reconnects with Last-Event-ID is not sent what it already has.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from api.jobs.schemas import job_links
from api.jobs.store import FINAL, QUEUED, Job

if TYPE_CHECKING:
    from api.jobs.service import JobService

KEEP_ALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies (ngrok) from closing


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One Server-Sent Event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def job_events(
    jobs: JobService, job_id: str, base: str, last_id: int | None
) -> AsyncIterator[str]:
    """SSE: status, position, progress (at most one per `progress_interval`), preview."""
    yield "retry: 2000\n\n"
    sent: dict[str, Any] = {}
    resumed = last_id is not None
    quiet_since = time.monotonic()
    while True:
        job = await run_in_threadpool(jobs.store.get, job_id)
        if job is None:
            yield sse("deleted", {"id": job_id})
            return
        if resumed and job.version <= (last_id or 0):  # the client has this state
            sent.update(status=job.status, iteration=job.iteration)
            sent.update(preview=job.preview_iteration)
        resumed = False
        chunks = await run_in_threadpool(changes, jobs, job, base, sent)
        for chunk in chunks:
            yield chunk
        if chunks:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        if job.status in FINAL:
            return
        await asyncio.sleep(jobs.config.progress_interval)


def changes(jobs: JobService, job: Job, base: str, sent: dict[str, Any]) -> list[str]:
    """The events that tell a client what changed since `sent` (updated in place)."""
    out, vid = [], job.version
    status_changed = sent.get("status") != job.status
    if status_changed and job.status not in FINAL:
        out.append(sse("status", jobs.view(job, base).model_dump(mode="json"), vid))
    position = jobs.store.position(job)
    if job.status == QUEUED and sent.get("position") != position:
        eta = jobs.eta(job, position)
        out.append(sse("position", {"position": position, "eta_seconds": eta}, vid))
    if job.iteration != sent.get("iteration") and job.iteration:
        fraction = job.iteration / job.total if job.total else 0.0
        data: dict[str, Any] = {"iteration": job.iteration, "total": job.total}
        data["fraction"] = fraction
        data.update(loss=job.loss, eta_seconds=jobs.eta(job, position))
        out.append(sse("progress", data, vid))
    if job.preview_iteration and job.preview_iteration != sent.get("preview"):
        url = f"{job_links(base, job).preview}?i={job.preview_iteration}"  # busts caches
        out.append(sse("preview", {"iteration": job.preview_iteration, "url": url}, vid))
    if status_changed and job.status in FINAL:
        out.append(sse("status", jobs.view(job, base).model_dump(mode="json"), vid))
    sent.update(status=job.status, position=position, iteration=job.iteration)
    sent.update(preview=job.preview_iteration)
    return out
