"""`JobService`: the jobs facade the app keeps on `app.state.jobs` (submit, get, cancel, delete,
events, gallery).

One service per process. `start()` recovers the queue (dead workers, lost queue entries), starts
the worker threads when this process runs jobs, and a reaper that applies the dead-worker
policy every `heartbeat_seconds`; `stop()` hands running jobs back to the queue.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from api.artifacts import open_artifact_store
from api.gpu import GpuLock
from api.jobs.admission import admit
from api.jobs.config import ServiceConfig
from api.jobs.errors import QueueUnavailable
from api.jobs.events import JobFeeds, job_events
from api.jobs.gallery import gallery_page
from api.jobs.identity import check_storage_identity
from api.jobs.notices import JobNotices
from api.jobs.queue import JobQueue
from api.jobs.schemas import GalleryPage, JobPublic, Progress, iso, job_links
from api.jobs.store import QUEUED, RUNNING, SUCCEEDED, Job, JobStore, hash_token, new_token
from api.jobs.worker import JobRunner, reap_dead
from api.storage import ArtifactStore
from engine import ModelCache, Settings

log = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 5.0  # POST /cancel waits this long for a running job to stop


class JobService:
    """Jobs of one process: the store, the queue, the worker (optional) and notifications."""

    def __init__(
        self,
        config: ServiceConfig,
        gpu: GpuLock | None = None,
        models: ModelCache | None = None,
        artifacts: ArtifactStore | None = None,
    ):
        self.config = config
        self.gpu = gpu or GpuLock(config.max_waiting)
        self.artifacts = artifacts or open_artifact_store(config)
        self.artifacts.prepare()
        url = config.resolved_database_url(config.output_dir)
        self.store = JobStore(url, auto_migrate=config.auto_migrate)
        self.queue = JobQueue(config.resolved_queue_url(config.output_dir), config.queue_name)
        self.feeds = JobFeeds(self.store, config.progress_interval)  # one poll per watched job
        self.notices = JobNotices(self.store, config, self.artifacts, self.view)
        self.runner = JobRunner(
            self.store,
            config,
            self.gpu,
            models or ModelCache(),
            self.artifacts,
            self.queue.requeue,
            self.notify,
        )
        self._reaper_stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.worker_running = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, run_worker: bool | None = None) -> None:
        """Recover the queue; run jobs here when `run_worker` (default: run_worker_in_process)."""
        run_worker = self.config.run_worker_in_process if run_worker is None else run_worker
        check_storage_identity(self.store.engine, self.artifacts)  # StorageMismatch: refuse
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
        self.notices.stop()
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
        admit(self.store, self.config, client_id)

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
        self.artifacts.commit_uploads(job_id)  # a worker elsewhere reads them from the store
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
            self.artifacts.delete(job_id)  # its uploads
            raise QueueUnavailable(f"the job queue is unavailable ({type(exc).__name__})") from exc
        return job, token

    # -- reading -----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        return self.store.get(job_id)

    def position(self, job: Job) -> int | None:
        """Queued jobs ahead of this one (None unless it is queued)."""
        return self.store.position(job)

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
        return self.artifacts.public_settings(settings).to_json_dict()

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

    def preview(self, job: Job) -> bytes | None:
        """The final PNG of a succeeded job, else the latest preview, else None."""
        if job.status == SUCCEEDED:
            return self.artifacts.read(job.id, "png")
        return self.artifacts.read_preview(job.id)

    def gallery(self, page: int, per_page: int, base: str) -> GalleryPage:
        """Public succeeded jobs, newest first."""
        return gallery_page(self.store, page, per_page, base)

    def events(
        self, job_id: str, base: str, last_id: int | None, client: str = ""
    ) -> AsyncIterator[str]:
        """The job's live events (Server-Sent Events), resuming after `last_id`."""
        return job_events(self, job_id, base, last_id, client)

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
        self.artifacts.delete(job.id)

    # -- notifications -----------------------------------------------------------------------
    def notify(self, job_id: str) -> None:
        """Send the e-mail and the webhook of a finished job in the background."""
        self.notices.notify(job_id)
