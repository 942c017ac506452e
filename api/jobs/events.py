"""Live progress of a job as Server-Sent Events: `status`, `position`, `progress`, `preview`.

The database is the source of truth, whichever process runs the job. `JobFeeds` polls it once
per watched job, however many clients listen, and hands each snapshot to every listener; each
stream sends what changed for its client. The record's `version` is the event id, so a client
that reconnects with Last-Event-ID is not sent what it already has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool

from api.jobs.schemas import JobPublic, job_links
from api.jobs.store import FINAL, QUEUED, RUNNING, Job, JobStore
from engine import frame_progress

log = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies (ngrok) from closing


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One Server-Sent Event; its data is strict JSON (a non-finite number raises ValueError)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"{head}event: {event}\ndata: {body}\n\n"


def finite(value: float | None) -> float | None:
    """The number, or None when it is missing, infinite or NaN (JSON has no such numbers)."""
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Snapshot:
    """What a poll saw: the job (None once deleted), its queue position and, while it runs
    here but waits for the GPU, the runs ahead of it."""

    job: Job | None
    position: int | None
    gpu_position: int | None = None


@dataclass
class _Feed:
    """The latest snapshot of one job and the listeners waiting for the next."""

    snapshot: Snapshot | None = None
    seq: int = 0
    done: bool = False
    listeners: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None  # the poll (held: the loop keeps only weak refs)

    def publish(self, snapshot: Snapshot) -> None:
        self.snapshot, self.seq = snapshot, self.seq + 1
        self.changed.set()
        self.changed = asyncio.Event()


class JobFeeds:
    """One poll of the store per watched job, shared by its listeners; listeners per client."""

    def __init__(
        self,
        store: JobStore,
        interval: float,
        gpu_position: Callable[[str], int | None] = lambda job_id: None,
    ):
        self.store, self.interval = store, interval
        self.gpu_position = gpu_position
        self._feeds: dict[str, _Feed] = {}
        self._clients: Counter[str] = Counter()

    def listening(self, client: str) -> int:
        """Streams open by this client now."""
        return self._clients[client]

    async def watch(self, job_id: str, client: str = "") -> AsyncIterator[Snapshot | None]:
        """Each new snapshot of the job (None: nothing new for KEEP_ALIVE_SECONDS)."""
        feed = self._feeds.get(job_id)
        if feed is None or feed.done:
            feed = self._feeds[job_id] = _Feed()
            feed.task = asyncio.get_running_loop().create_task(self._poll(job_id, feed))
        feed.listeners += 1
        self._clients[client] += 1
        try:
            seen = 0
            while not (feed.done and feed.seq == seen):
                if feed.seq == seen:
                    changed = feed.changed
                    try:
                        await asyncio.wait_for(changed.wait(), KEEP_ALIVE_SECONDS)
                    except TimeoutError:
                        yield None
                    continue
                seen = feed.seq
                yield feed.snapshot
        finally:
            feed.listeners -= 1
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]

    async def _poll(self, job_id: str, feed: _Feed) -> None:
        """Read the job every `interval` while anyone listens; publish what changed."""
        last: tuple[int, int | None, int | None] | None = None
        try:
            while not feed.done:
                snapshot = await self._read(job_id)
                job = snapshot.job
                key = (
                    (job.version, snapshot.position, snapshot.gpu_position)
                    if job
                    else (-1, None, None)
                )
                if key != last:
                    last = key
                    feed.publish(snapshot)
                feed.done = job is None or job.status in FINAL or not feed.listeners
                if not feed.done:
                    await asyncio.sleep(self.interval)
        except Exception:  # the streams end; EventSource reconnects and a new poll starts
            log.exception("job %s: cannot read its events", job_id)
        finally:
            feed.done = True
            feed.changed.set()  # wake the listeners: they end after the last snapshot
            if self._feeds.get(job_id) is feed:
                del self._feeds[job_id]

    async def _read(self, job_id: str) -> Snapshot:
        def read() -> Snapshot:
            job = self.store.get(job_id)
            if job is None:
                return Snapshot(None, None)
            waits = self.gpu_position(job_id) if job.status == RUNNING else None
            return Snapshot(job, self.store.position(job), waits)

        return await run_in_threadpool(read)


class JobViews(Protocol):
    """What a job's event stream needs of the job service (`api.jobs.service.JobService`):
    its feeds and its public view of a job; named here so this module needs no import of it."""

    feeds: JobFeeds

    def view(self, job: Job, base: str) -> JobPublic: ...

    def eta(self, job: Job, position: int | None) -> float | None: ...


async def job_events(
    jobs: JobViews, job_id: str, base: str, last_id: int | None, client: str = ""
) -> AsyncIterator[str]:
    """SSE: status, position, progress (at most one per `progress_interval`), preview."""
    yield "retry: 2000\n\n"
    sent: dict[str, Any] = {}
    resumed = last_id is not None
    async for snapshot in jobs.feeds.watch(job_id, client):
        if snapshot is None:
            yield ": keep-alive\n\n"
            continue
        job = snapshot.job
        if job is None:
            yield sse("deleted", {"id": job_id})
            return
        if resumed and job.version <= (last_id or 0):  # the client has this state
            sent.update(status=job.status, iteration=job.iteration)
            sent.update(preview=job.preview_iteration)
        resumed = False
        for chunk in await run_in_threadpool(changes, jobs, snapshot, base, sent):
            yield chunk
        if job.status in FINAL:
            return


def changes(jobs: JobViews, snapshot: Snapshot, base: str, sent: dict[str, Any]) -> list[str]:
    """The events that tell a client what changed since `sent` (updated in place)."""
    job, position = snapshot.job, snapshot.position
    assert job is not None
    out, vid = [], job.version
    status_changed = sent.get("status") != job.status
    waits_changed = sent.get("gpu_position") != snapshot.gpu_position  # the whole job again
    if (status_changed or waits_changed) and job.status not in FINAL:
        out.append(sse("status", jobs.view(job, base).model_dump(mode="json"), vid))
    if job.status == QUEUED and sent.get("position") != position:
        eta = jobs.eta(job, position)
        out.append(sse("position", {"position": position, "eta_seconds": eta}, vid))
    if job.iteration != sent.get("iteration") and job.iteration:
        fraction = job.iteration / job.total if job.total else 0.0
        data: dict[str, Any] = {"iteration": job.iteration, "total": job.total}
        data.update(fraction=fraction, resumed_from=job.resumed_from or 0)
        data["frame"], data["frames"] = frame_progress(job.settings, job.iteration)
        data.update(loss=finite(job.loss), eta_seconds=finite(jobs.eta(job, position)))
        out.append(sse("progress", data, vid))
    if job.preview_iteration and job.preview_iteration != sent.get("preview"):
        url = f"{job_links(base, job).preview}?i={job.preview_iteration}"  # busts caches
        out.append(sse("preview", {"iteration": job.preview_iteration, "url": url}, vid))
    if status_changed and job.status in FINAL:
        out.append(sse("status", jobs.view(job, base).model_dump(mode="json"), vid))
    sent.update(status=job.status, position=position, iteration=job.iteration)
    sent.update(gpu_position=snapshot.gpu_position)
    sent.update(preview=job.preview_iteration)
    return out
