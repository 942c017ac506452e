"""`JobService`: the jobs facade the app keeps on `app.state.jobs` (submit, get, cancel, delete,
events, gallery).

One service per process, built by `api.services.build_services` from the parts it is given (the
database, the queue, the artifact store, the model cache, the GPU lock, the metrics); building
it does no I/O. `start()` opens the database (schema check or upgrade) and the queue, checks
that this process sees the site's artifact store, then recovers the queue (dead workers, lost
queue entries), starts the worker threads when this process runs jobs, and the upkeep thread
(`api.jobs.upkeep`): the worker's own heartbeat and the dead-worker policy every
`heartbeat_seconds`, the reconciler every `reconcile_seconds`; and in every process, API-only
ones too, the outbox sender of the finished jobs' e-mails and webhooks (`api.jobs.outbox`).
`stop()` hands running jobs back to the queue. `probe` tells whether the database and queue
answer (for `/readyz`), `metrics` counts what happens (`/metrics`).
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

from api.config import ServiceConfig
from api.cost import estimate
from api.gpu import GpuLock
from api.jobs import admission
from api.jobs.errors import QueueUnavailable
from api.jobs.events import JobFeeds, job_events
from api.jobs.gallery import gallery_page
from api.jobs.identity import check_storage_identity
from api.jobs.notices import JobNotices, email_enabled, email_off
from api.jobs.outage import Outages
from api.jobs.outbox import OutboxSender
from api.jobs.policy import reap_dead
from api.jobs.probe import Probe
from api.jobs.queue import JobQueue
from api.jobs.schemas import GalleryPage, JobPublic, Progress, iso, job_links
from api.jobs.store import QUEUED, RUNNING, SUCCEEDED, Job, JobStore, hash_token, new_token
from api.jobs.upkeep import Chore, Upkeep, reconcile, worker_row
from api.jobs.worker import JobRunner
from api.metrics import Metrics
from api.storage import ArtifactStore
from engine import ModelCache, ResolvedSettings, Settings, frame_progress

log = logging.getLogger(__name__)


class JobService:
    """Jobs of one process: the store, the queue, the worker (optional) and notifications."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        store: JobStore,
        queue: JobQueue,
        artifacts: ArtifactStore,
        models: ModelCache,
        gpu: GpuLock,
        metrics: Metrics,
        outages: Outages,
    ):
        self.config, self.store, self.queue, self.artifacts = config, store, queue, artifacts
        self.gpu, self.metrics, self.outages = gpu, metrics, outages
        self.probe = Probe(store, queue, config.stale_after_seconds, outages, artifacts=artifacts)
        self.notices = JobNotices(config, artifacts, self.view)
        self.runner = JobRunner(
            store, config, gpu, models, artifacts, queue.requeue, self.notify,
            outages=outages, metrics=metrics,
        )  # fmt: skip
        self.outbox = OutboxSender(
            store, config, self.notices.compose, outages, str(self.runner.identity),
            kinds=self.notices.kinds(),
        )  # fmt: skip
        # One poll per watched job; it sees a job of this process waiting for the GPU.
        self.feeds = JobFeeds(store, config.progress_interval, self.runner.gpu_position)
        self._upkeep: Upkeep | None = None
        self._started_at = time.time()
        self.worker_running = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, run_worker: bool | None = None) -> None:
        """Open the database and the queue, check the artifact store; then recover the queue
        and run jobs here when `run_worker` (default: run_worker_in_process)."""
        run_worker = self.config.run_worker_in_process if run_worker is None else run_worker
        if self.config.smtp_host and not email_enabled(self.config):
            log.warning("e-mail is off: %s", email_off(self.config))
        self.store.open()  # SchemaOutdated: refuse
        self.queue.open()
        self.artifacts.prepare()
        check_storage_identity(self.store.engine, self.artifacts)  # StorageMismatch: refuse
        self.outbox.start()  # every process sends notices: a job cancelled here has a webhook
        if not run_worker:
            return
        self.beat()
        self.reap()
        self.recover_queue()
        self.queue.start_consumer(self.runner.run, self.config.worker_threads)
        self.worker_running = True
        beat_every = self.config.heartbeat_seconds
        chores = [
            Chore("worker heartbeat", beat_every, self.beat),
            Chore("dead-worker check", beat_every, self.reap),
            Chore("queue reconcile", self.config.reconcile_seconds, self.reconcile),
        ]
        self._upkeep = Upkeep(chores, self.outages)
        self._upkeep.start()

    def stop(self) -> None:
        """Hand running jobs back to the queue, stop the threads, close the connections."""
        self.runner.shutdown()
        self.queue.stop_consumer(self.config.shutdown_timeout)
        if self._upkeep is not None:
            self._upkeep.stop()
            try:
                self.store.remove_worker(str(self.runner.identity))
            except Exception:  # the database is down: the row goes stale by itself
                log.warning("cannot remove this worker's heartbeat row", exc_info=True)
        self.outbox.stop()
        self.queue.close()
        self.store.close()
        self.worker_running = False

    def beat(self) -> None:
        """Write this worker's heartbeat row (it counts as live while it is fresh)."""
        identity = self.runner.identity
        row = worker_row(str(identity), socket.gethostname(), os.getpid(), self.device_name(),
                         self._started_at)  # fmt: skip
        row.running = self.runner.running()
        self.store.worker_beat(row)

    def device_name(self) -> str:
        """The device this worker runs jobs on, as configured."""
        return str(self.config.device or "auto")

    def reap(self) -> list[str]:
        """Apply the dead-worker policy now; returns the ids it requeued or failed."""
        lost = self.runner.hand_back_lost()  # its own claims whose reply was lost
        settled = self.outages.settled(self.config.stale_after_seconds)
        identity, config = self.runner.identity, self.config
        return lost + reap_dead(
            self.store,
            identity,
            config,
            self.queue.requeue,
            self._ended_dead,
            settled=settled,
            metrics=self.metrics,
            outage_during=self.outages.during,
        )

    def _ended_dead(self, job_id: str) -> None:
        """A job whose worker died ended (failed or cancelled): its saved state is spent."""
        self.drop_state(job_id)
        self.notify(job_id)

    def drop_state(self, job_id: str) -> None:
        """Remove the job's saved run state (best effort: the store may be what failed)."""
        try:
            self.artifacts.remove_state(job_id)
        except Exception:
            log.warning("job %s: cannot remove its saved run state", job_id, exc_info=True)

    def recover_queue(self) -> list[str]:
        """At start: enqueue every queued job the queue lost, whatever its age."""
        return self.reconcile(grace=0.0)

    def reconcile(self, grace: float | None = None) -> list[str]:
        """Enqueue queued jobs that the queue lost (see `api.jobs.upkeep.reconcile`)."""
        grace = self.config.reconcile_seconds if grace is None else grace
        lost = reconcile(self.store, self.queue, grace)
        for _ in lost:
            self.metrics.requeued("reconcile")
        return lost

    # -- submission --------------------------------------------------------------------------
    def check_admission(self, client_id: str) -> None:
        """Raise the refusal (`QueueFull`, `RateLimited`, `ClientBusy`) one more submission
        would get now; records nothing (`submit` decides, atomically)."""
        admission.check(self.store, self.config, client_id)

    def admit(self, client_id: str) -> None:
        """Admit and record a submission that runs here without a job (`POST /generate`),
        under the same limits as a job, atomically; raises the refusal otherwise."""
        admission.admit(self.store, self.config, client_id)

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
        """Admit (atomically: see `api.jobs.admission`), record and enqueue a job; returns it
        with its secret delete token."""
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
            total=settings.total_iterations,
            iteration=0,
            attempts=0,
            outputs=[],
            cancel_requested=False,
            version=1,
            enqueued_at=time.time(),
            estimate_seconds=self.estimate(settings),
        )
        admission.admit(self.store, self.config, client_id, job)  # or a Refusal
        try:
            self.queue.enqueue(job_id)
        except QueueUnavailable:
            log.warning("cannot enqueue job %s: the queue is down; not recorded", job_id)
            self.store.delete(job_id)
            admission.forget(self.store, job_id)
            self.artifacts.delete(job_id)  # its uploads
            self.outages.failed("queue")
            raise
        self.metrics.submitted()
        return job, token

    def estimate(self, settings: Settings) -> float | None:
        """The cost model's run time of resolved settings on this server (`api.cost`)."""
        if not isinstance(settings, ResolvedSettings):
            return None
        return estimate(settings, self.config.device)

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
        frame, frames = frame_progress(job.settings, job.iteration)
        silent = self.silent_worker(job)
        return JobPublic(
            id=job.id,
            status=job.status,
            position=position,
            gpu_position=self.runner.gpu_position(job.id) if job.status == RUNNING else None,
            progress=Progress(
                iteration=job.iteration,
                total=job.total,
                fraction=fraction,
                frame=frame,
                frames=frames,
            ),  # fmt: skip
            eta_seconds=None if silent else self.eta(job, position),
            estimate_seconds=job.estimate_seconds,
            created_at=iso(job.created_at) or "",
            started_at=iso(job.started_at),
            finished_at=iso(job.finished_at),
            error=job.error,
            settings=self.public_settings(job),
            public=job.public,
            attempts=job.attempts,
            resumed_from=job.resumed_from or 0,
            warning=job.warning or silent,
            cancel_requested=job.cancel_requested,
            notifications={"email": job.email_state, "webhook": job.webhook_state},
            links=job_links(base, job),
        )

    def public_settings(self, job: Job) -> dict[str, Any]:
        """The resolved settings without server paths."""
        settings = Settings.model_validate(job.settings)
        return self.artifacts.public_settings(settings).to_json_dict()

    def silent_worker(self, job: Job) -> str | None:
        """A running job whose worker has not been heard from for `stale_after_seconds`: what
        becomes of it (its ETA would be a guess from a run that may have stopped)."""
        if job.status != RUNNING or job.heartbeat_at is None:
            return None
        quiet = time.time() - job.heartbeat_at
        if quiet < self.config.stale_after_seconds:
            return None
        then = (
            "no worker is alive now: it continues when one starts"
            if self.probe.check().live_workers == 0
            else "another worker takes it over when it finds the first dead"
        )
        return f"its worker has not been heard from for {quiet:.0f} s; {then}"

    def eta(self, job: Job, position: int | None) -> float | None:
        """Running: from its speed so far; queued: recent jobs' mean time x jobs ahead."""
        if job.status == RUNNING:
            if not job.iteration or job.run_seconds is None:
                return None
            return round(job.run_seconds / job.iteration * (job.total - job.iteration), 1)
        if job.status != QUEUED or position is None or not self.probe.check().live_workers:
            return None  # nobody runs jobs now: no confident guess
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
        """Queued: cancelled now. Running: asked to stop (its worker stops within an
        iteration; `api.routes.jobs` waits for that without holding a thread)."""
        if self.store.cancel_queued(job.id):
            self.metrics.finished("cancelled")  # it ended here, before any worker took it
            self.drop_state(job.id)  # a handed-back job may have saved one
            self.notify(job.id)
        elif self.store.request_cancel(job.id):
            self.runner.cancel(job.id)
        return self.store.get(job.id) or job

    def cancel_by_id(self, job_id: str) -> None:
        """Cancel the job if it exists and has not ended (a `/generate` client went away)."""
        job = self.store.get(job_id)
        if job is not None and job.status in (QUEUED, RUNNING):
            self.cancel(job)

    def delete(self, job: Job) -> None:
        """Remove the job and its files (a running one is stopped first)."""
        if self.store.request_cancel(job.id):
            self.runner.cancel(job.id)
        self.store.delete(job.id)
        self.artifacts.delete(job.id)

    # -- notifications -----------------------------------------------------------------------
    def notify(self, job_id: str) -> None:
        """A job ended: its e-mail and webhook (outbox rows made with its end) go out now, in
        the background (`api.jobs.outbox`); never raises."""
        self.outbox.wake()
