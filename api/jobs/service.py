"""`JobService`: the jobs facade the app keeps on `app.state.jobs` (submit, get, cancel, delete,
events, gallery), with the wire schemas of the jobs API.

One service per process. `start()` recovers the queue (dead workers, lost queue entries), starts
the worker threads when this process runs jobs, and a reaper that applies the dead-worker
policy every `heartbeat_seconds`; `stop()` hands running jobs back to the queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import statistics
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.gpu import GpuLock
from api.jobs.config import ServiceConfig
from api.jobs.notify import Notice, Notifier, build_email, post_webhook, send_email, webhook_request
from api.jobs.queue import JobQueue
from api.jobs.store import (
    FAILED,
    FINAL,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
    JobStore,
    hash_token,
    new_token,
)
from api.jobs.worker import JobRunner, preview_path, reap_dead, remove_job_files
from api.routes.outputs import output_path, public_settings
from engine import ModelCache, Settings

log = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies (ngrok) from closing
CANCEL_WAIT_SECONDS = 5.0  # POST /cancel waits this long for a running job to stop


class QueueFull(Exception):
    """Too many jobs are queued (503 with Retry-After)."""

    def __init__(self, queued: int, retry_after: int):
        super().__init__(f"the queue is full ({queued} jobs wait); retry in {retry_after} s")
        self.retry_after = retry_after


class QueueUnavailable(Exception):
    """The queue (Redis, PostgreSQL) cannot be reached: nothing was recorded (503)."""

    retry_after = 30


class RateLimited(Exception):
    """The client submitted too many jobs lately (429 with Retry-After)."""

    def __init__(self, limit: int, window: int, retry_after: int):
        super().__init__(
            f"at most {limit} jobs per {window} s may be submitted; retry in {retry_after} s"
        )
        self.retry_after = retry_after


# -- wire schemas ----------------------------------------------------------------------------
class Progress(BaseModel):
    """How far a job is."""

    iteration: int = Field(description="Iterations done.")
    total: int = Field(description="Iterations in all.")
    fraction: float = Field(description="iteration / total, 0 to 1.")


class JobLinks(BaseModel):
    """Where to follow, cancel and fetch a job."""

    self: str
    events: str = Field(description="Server-Sent Events: position, progress, preview, status.")
    preview: str = Field(description="The latest intermediate image (the final one when done).")
    cancel: str = Field(description="POST with the delete_token to cancel.")
    image: str | None = None
    video: str | None = None
    svg: str | None = None


class JobPublic(BaseModel):
    """A job as anyone who knows its id sees it (never the e-mail, the token or the webhook)."""

    id: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    position: int | None = Field(description="Queued jobs ahead of this one (0: next).")
    progress: Progress
    eta_seconds: float | None = Field(description="Rough seconds until it is done.")
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None = Field(description="Why it failed, in words a person can act on.")
    settings: dict[str, Any] = Field(description="The resolved settings (seed included).")
    public: bool = Field(description="Listed in the gallery once it succeeds.")
    attempts: int = Field(description="Times a worker started it.")
    cancel_requested: bool
    notifications: dict[str, str | None] = Field(description="E-mail and webhook delivery.")
    links: JobLinks


class JobCreated(BaseModel):
    """The answer to a submission: keep the delete_token, it is shown only once."""

    id: str
    status: str
    position: int | None
    links: JobLinks
    delete_token: str = Field(description="Secret needed to cancel or delete the job.")


class GalleryItem(BaseModel):
    """One public picture."""

    id: str
    prompt: str
    style: str
    quality: str
    aspect: str
    seed: int | None
    size: list[int] | None
    created_at: str
    links: dict[str, str]


class GalleryPage(BaseModel):
    """A page of the gallery, newest first."""

    items: list[GalleryItem]
    page: int
    per_page: int
    total: int
    pages: int


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def job_links(base: str, job: Job) -> JobLinks:
    """Absolute links of a job under `base` (no trailing slash)."""
    jobs = f"{base}/jobs/{job.id}"
    files = {ext: f"{base}/outputs/{job.id}.{ext}" for ext in job.outputs or []}
    return JobLinks(
        self=jobs,
        events=f"{jobs}/events",
        preview=f"{jobs}/preview.png",
        cancel=f"{jobs}/cancel",
        image=files.get("png"),
        video=files.get("mp4"),
        svg=files.get("svg"),
    )


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One Server-Sent Event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class JobService:
    """Jobs of one process: the store, the queue, the worker (optional) and notifications."""

    def __init__(
        self, config: ServiceConfig, gpu: GpuLock | None = None, models: ModelCache | None = None
    ):
        self.config = config
        self.gpu = gpu or GpuLock(config.max_waiting)
        config.output_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(config.resolved_database_url(config.output_dir))
        self.queue = JobQueue(config.resolved_queue_url(config.output_dir), config.queue_name)
        self.runner = JobRunner(
            self.store, config, self.gpu, models or ModelCache(), self.queue.requeue, self.notify
        )
        self.notifier = Notifier(config.notify_attempts, config.notify_backoff, self._delivered)
        self._reaper_stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.worker_running = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, run_worker: bool | None = None) -> None:
        """Recover the queue; run jobs here when `run_worker` (default: run_worker_in_process)."""
        run_worker = self.config.run_worker_in_process if run_worker is None else run_worker
        if not run_worker:
            return
        self.reap()
        self.recover_queue()
        self.queue.start_consumer(self.runner.run, self.config.worker_threads)
        self.worker_running = True
        self._reaper = threading.Thread(target=self._reap_loop, name="t2a-reaper", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        """Hand running jobs back to the queue, stop the threads, close the connections."""
        self.runner.shutdown()
        self.queue.stop_consumer(self.config.shutdown_timeout)
        self._reaper_stop.set()
        if self._reaper is not None:
            self._reaper.join()
        self.notifier.stop()
        self.queue.close()
        self.store.close()
        self.worker_running = False

    def reap(self) -> list[str]:
        """Apply the dead-worker policy now; returns the ids it requeued or failed."""
        identity = self.runner.identity
        return reap_dead(self.store, identity, self.config, self.queue.requeue, self.notify)

    def recover_queue(self) -> list[str]:
        """Enqueue queued jobs that the queue lost (a crash between dequeue and claim)."""
        pending = self.queue.pending_ids()
        lost = [job_id for job_id in self.store.ids(QUEUED) if job_id not in pending]
        for job_id in lost:
            self.queue.requeue(job_id)
        if lost:
            log.warning("%d queued job(s) were missing from the queue; enqueued again", len(lost))
        return lost

    def _reap_loop(self) -> None:
        while not self._reaper_stop.wait(self.config.heartbeat_seconds):
            try:
                self.reap()
            except Exception:  # a database hiccup must not end the reaper
                log.exception("dead-worker check failed")

    # -- submission --------------------------------------------------------------------------
    def admit(self, client_id: str) -> None:
        """Raise `QueueFull` or `RateLimited` when one more submission must be refused."""
        config = self.config
        queued = self.store.count(QUEUED)
        if queued >= config.max_queued:
            raise QueueFull(queued, config.queue_retry_after)
        if not config.rate_limit:
            return
        now = time.time()
        times = self.store.submissions_since(client_id, now - config.rate_limit_window)
        if len(times) >= config.rate_limit:
            # Once this one leaves the window, the client is under the limit again.
            oldest = times[len(times) - config.rate_limit]
            retry = max(1, math.ceil(oldest + config.rate_limit_window - now))
            raise RateLimited(config.rate_limit, config.rate_limit_window, retry)

    def submit(
        self,
        job_id: str,
        settings: Settings,
        request: dict[str, Any],
        *,
        client_id: str = "",
        base_url: str = "",
        email: str | None = None,
        public: bool = False,
        webhook_url: str | None = None,
    ) -> tuple[Job, str]:
        """Record and enqueue a job; returns it with its secret delete token."""
        token = new_token()
        job = Job(
            id=job_id,
            status=QUEUED,
            request=request,
            settings=settings.to_json_dict(),
            email=email,
            public=public,
            webhook_url=webhook_url,
            base_url=base_url.rstrip("/"),
            delete_token_hash=hash_token(token),
            client_id=client_id,
            created_at=time.time(),
            total=settings.iterations or 0,
            iteration=0,
            attempts=0,
            outputs=[],
            cancel_requested=False,
            version=1,
        )
        self.store.add(job)
        try:
            self.queue.enqueue(job_id)
        except Exception as exc:
            log.exception("cannot enqueue job %s", job_id)
            self.store.delete(job_id)
            raise QueueUnavailable(f"the job queue is unavailable ({type(exc).__name__})") from exc
        return job, token

    # -- reading -----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        return self.store.get(job_id)

    def view(self, job: Job, base: str) -> JobPublic:
        """The public view of a job, with links under `base`."""
        position = self.store.position(job)
        fraction = job.iteration / job.total if job.total else 0.0
        return JobPublic(
            id=job.id,
            status=job.status,
            position=position,
            progress=Progress(iteration=job.iteration, total=job.total, fraction=fraction),
            eta_seconds=self.eta(job, position),
            created_at=iso(job.created_at) or "",
            started_at=iso(job.started_at),
            finished_at=iso(job.finished_at),
            error=job.error,
            settings=self.public_settings(job),
            public=job.public,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            notifications={"email": job.email_state, "webhook": job.webhook_state},
            links=job_links(base, job),
        )

    def public_settings(self, job: Job) -> dict[str, Any]:
        """The resolved settings without server paths."""
        settings = Settings.model_validate(job.settings)
        return public_settings(settings, self.config.output_dir).to_json_dict()

    def eta(self, job: Job, position: int | None) -> float | None:
        """Running: from its speed so far; queued: recent jobs' mean time x jobs ahead."""
        if job.status == RUNNING:
            if not job.iteration or job.run_seconds is None:
                return None
            return round(job.run_seconds / job.iteration * (job.total - job.iteration), 1)
        if job.status != QUEUED or position is None:
            return None
        recent = self.store.recent_durations()
        return round(statistics.fmean(recent) * (position + 1), 1) if recent else None

    def preview_file(self, job: Job) -> Path | None:
        """The final PNG of a succeeded job, else the latest preview, else None."""
        out = self.config.output_dir
        path = output_path(out, job.id, "png") if job.status == SUCCEEDED else None
        path = path or preview_path(out, job.id)
        return path if path.is_file() else None

    def gallery(self, page: int, per_page: int, base: str) -> GalleryPage:
        """Public succeeded jobs, newest first."""
        jobs, total = self.store.gallery(page, per_page)
        items = [self._gallery_item(job, base) for job in jobs]
        pages = math.ceil(total / per_page)
        return GalleryPage(items=items, page=page, per_page=per_page, total=total, pages=pages)

    def _gallery_item(self, job: Job, base: str) -> GalleryItem:
        s = job.settings
        links = job_links(base, job).model_dump(include={"self", "image", "video", "svg"})
        return GalleryItem(
            id=job.id,
            prompt=job.prompt,
            style=s.get("style", ""),
            quality=s.get("quality", ""),
            aspect=s.get("aspect", ""),
            seed=s.get("seed"),
            size=s.get("size"),
            created_at=iso(job.created_at) or "",
            links={("job" if k == "self" else k): v for k, v in links.items() if v},
        )

    # -- cancel and delete -------------------------------------------------------------------
    def cancel(self, job: Job) -> Job:
        """Queued: cancelled now. Running: asked to stop (waits a little for it to end)."""
        if self.store.cancel_queued(job.id):
            self.notify(job.id)
        elif self.store.request_cancel(job.id):
            self.runner.cancel(job.id)
            deadline = time.monotonic() + CANCEL_WAIT_SECONDS
            while time.monotonic() < deadline and self._status(job.id) == RUNNING:
                time.sleep(0.05)
        return self.store.get(job.id) or job

    def _status(self, job_id: str) -> str | None:
        job = self.store.get(job_id)
        return job.status if job is not None else None

    def delete(self, job: Job) -> None:
        """Remove the job and its files (a running one is stopped first)."""
        if self.store.request_cancel(job.id):
            self.runner.cancel(job.id)
        self.store.delete(job.id)
        remove_job_files(self.config.output_dir, job.id)

    # -- live events -------------------------------------------------------------------------
    async def events(self, job_id: str, base: str, last_id: int | None) -> AsyncIterator[str]:
        """SSE: status, position, progress (at most one per `progress_interval`), preview."""
        yield "retry: 2000\n\n"
        sent: dict[str, Any] = {}
        resumed = last_id is not None
        quiet_since = time.monotonic()
        while True:
            job = await run_in_threadpool(self.store.get, job_id)
            if job is None:
                yield sse("deleted", {"id": job_id})
                return
            if resumed and job.version <= (last_id or 0):  # the client has this state
                sent.update(status=job.status, iteration=job.iteration)
                sent.update(preview=job.preview_iteration)
            resumed = False
            chunks = await run_in_threadpool(self._changes, job, base, sent)
            for chunk in chunks:
                yield chunk
            if chunks:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEP_ALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            if job.status in FINAL:
                return
            await asyncio.sleep(self.config.progress_interval)

    def _changes(self, job: Job, base: str, sent: dict[str, Any]) -> list[str]:
        """The events that tell a client what changed since `sent` (updated in place)."""
        out, vid = [], job.version
        status_changed = sent.get("status") != job.status
        if status_changed and job.status not in FINAL:
            out.append(sse("status", self.view(job, base).model_dump(mode="json"), vid))
        position = self.store.position(job)
        if job.status == QUEUED and sent.get("position") != position:
            eta = self.eta(job, position)
            out.append(sse("position", {"position": position, "eta_seconds": eta}, vid))
        if job.iteration != sent.get("iteration") and job.iteration:
            fraction = job.iteration / job.total if job.total else 0.0
            data: dict[str, Any] = {"iteration": job.iteration, "total": job.total}
            data["fraction"] = fraction
            data.update(loss=job.loss, eta_seconds=self.eta(job, position))
            out.append(sse("progress", data, vid))
        if job.preview_iteration and job.preview_iteration != sent.get("preview"):
            url = f"{job_links(base, job).preview}?i={job.preview_iteration}"  # busts caches
            out.append(sse("preview", {"iteration": job.preview_iteration, "url": url}, vid))
        if status_changed and job.status in FINAL:
            out.append(sse("status", self.view(job, base).model_dump(mode="json"), vid))
        sent.update(status=job.status, position=position, iteration=job.iteration)
        sent.update(preview=job.preview_iteration)
        return out

    # -- notifications -----------------------------------------------------------------------
    def notify(self, job_id: str) -> None:
        """Send the e-mail and the webhook of a finished job in the background."""
        job = self.store.get(job_id)
        if job is None or job.status not in FINAL:
            return
        base = (self.config.public_url or job.base_url).rstrip("/")
        if job.email and self.config.smtp_host and job.status in (SUCCEEDED, FAILED):
            self._email(job, job.email, base)
        if job.webhook_url:
            self._webhook(job, job.webhook_url, base)

    def _email(self, job: Job, to: str, base: str) -> None:
        self.store.set_fields(job.id, email_state="pending")
        config = self.config
        msg = build_email(
            self._notice(job, base), config.smtp_sender, to, config.email_max_attachment_bytes
        )
        self.notifier.submit("email", job.id, lambda: send_email(msg, config))

    def _webhook(self, job: Job, url: str, base: str) -> None:
        self.store.set_fields(job.id, webhook_state="pending")
        payload: dict[str, Any] = {"event": "job.finished", "sent_at": iso(time.time())}
        payload["job"] = self.view(job, base).model_dump(mode="json")
        req = webhook_request(url, payload, self.config.webhook_secret)
        timeout, allow = self.config.webhook_timeout, self.config.webhook_allow_private
        self.notifier.submit("webhook", job.id, lambda: post_webhook(req, timeout, allow))

    def _notice(self, job: Job, base: str) -> Notice:
        s = job.settings
        size = "x".join(str(v) for v in s.get("size") or [])
        summary = f"{s.get('style')}, {s.get('quality')}, {s.get('aspect')}, seed {s.get('seed')}"
        links = job_links(base, job)
        named: dict[str, str | None] = {"job": links.self, "image": links.image}
        named["video"] = links.video
        files = {ext: output_path(self.config.output_dir, job.id, ext) for ext in ("png", "mp4")}
        return Notice(
            job_id=job.id,
            status=job.status,
            prompt=job.prompt,
            summary=f"{summary}, {size}, {s.get('iterations')} iterations",
            links={k: v for k, v in named.items() if v},
            error=job.error,
            files={ext: p for ext, p in files.items() if ext in (job.outputs or [])},
        )

    def _delivered(self, kind: str, job_id: str, state: str) -> None:
        self.store.set_fields(job_id, **{f"{kind}_state": state})


def get_jobs(request: Request) -> JobService:
    """The process's job service."""
    jobs: JobService = request.app.state.jobs
    return jobs


JobsDep = Annotated[JobService, Depends(get_jobs)]
