"""Running one job, and the dead-worker policy.

`JobRunner.run(job_id)` is what the queue calls: it claims the job (queued -> running), holds
the process-wide GPU lock (the same `GpuLock` as `POST /generate`), runs `engine.generate` with
throttled progress writes, a preview PNG every few iterations and a cancel flag (through
`api.runner.run_engine`), saves the outputs in the `ArtifactStore` and records the final state.

The dead-worker policy (`api.jobs.policy`) decides what becomes of a job whose worker died.

Resume: every `checkpoint_seconds` (and when a shutdown stops it) the worker saves the run's
state in the artifact store (`states/{id}.safetensors`); whichever worker claims the job next
continues from it (`resumed_from` in the record says where), so a kill -9 costs at most
`checkpoint_seconds` of work. A state that cannot be read or does not fit the run is a warning in
the job's record and a fresh start, never a failure. The state is removed when the job ends.

Outages: progress and heartbeat writes that fail are skipped (the run goes on); the claim, the
final state and a hand-back are retried with backoff (`api.jobs.outage.retry`) for up to
`db_retry_seconds`, so a job that finished during a database restart records its end once the
database is back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.config import ServiceConfig
from api.errors import RunFailed, StorageError
from api.gpu import GpuLock
from api.jobs.fairness import claim_fair
from api.jobs.outage import REASON_CHARS, Outages, retry, unavailable_service
from api.jobs.policy import WorkerIdentity, ended
from api.jobs.progress import Progress
from api.jobs.resume import Checkpoints, save_state
from api.jobs.store import CANCELLED, FAILED, SUCCEEDED, Job, JobStore
from api.jobs.watch import PAUSE_POLL, Lease, Watch
from api.metrics import Metrics
from api.runner import RunStop, failure_message, run_engine
from api.storage import ArtifactStore
from engine import (
    ModelCache,
    ResolvedSettings,
    Result,
    RunState,
    decode_state,
)
from engine.errors import Cancelled, SettingsError, StateError, one_line

log = logging.getLogger(__name__)

WARNING_CHARS = 500  # a job record's warning is cut here


class JobRunner:
    """Runs claimed jobs under the GPU lock; `cancel()` and `shutdown()` stop them."""

    def __init__(
        self,
        store: JobStore,
        config: ServiceConfig,
        gpu: GpuLock,
        models: ModelCache,
        artifacts: ArtifactStore,
        enqueue: Callable[[str], None],
        on_finished: Callable[[str], None],
        outages: Outages | None = None,
        metrics: Metrics | None = None,
    ):
        self.store, self.config, self.gpu, self.models = store, config, gpu, models
        self.artifacts = artifacts
        self.outages = outages or Outages()
        self.metrics = metrics
        self.identity = WorkerIdentity.current()
        self._enqueue, self._on_finished = enqueue, on_finished
        self._leases: dict[str, Lease] = {}  # of the jobs this process runs now
        self._guard = threading.Lock()
        self._claiming = threading.Lock()
        self._stopping = threading.Event()

    def cancel(self, job_id: str) -> bool:
        """Stop the job at once (within a block of a model) if this process runs it."""
        with self._guard:
            lease = self._leases.get(job_id)
        if lease is not None:
            lease.stop.abort()
        return lease is not None

    def shutdown(self) -> None:
        """Stop every running job at its next iteration; it goes back to the queue (`_stopped`)."""
        self._stopping.set()
        with self._guard:
            for lease in self._leases.values():
                lease.stop.set()

    @property
    def stopping(self) -> bool:
        """Whether `shutdown()` was called (the jobs go back to the queue)."""
        return self._stopping.is_set()

    def running(self) -> int:
        """How many jobs this process runs now."""
        with self._guard:
            return len(self._leases)

    @property
    def worker_id(self) -> str:
        """This process's id in the jobs it runs."""
        return str(self.identity)

    def stalled(self) -> str | None:
        """Why this worker cannot make progress now (None: it can): a job whose heartbeat has not
        reached the database for half of `stale_after_seconds` is paused (`api.jobs.watch`);
        meanwhile the worker claims nothing and reports not-ready."""
        with self._guard:
            lapsed = [lease for lease in self._leases.values() if lease.lapsed()]
        if not lapsed:
            return None
        quiet = max(lease.quiet_seconds() for lease in lapsed)
        return (
            f"no heartbeat has reached the database for {quiet:.0f} s; "
            f"{len(lapsed)} running job(s) paused until one does"
        )

    def runs(self, job_id: str) -> bool:
        """Whether this process runs the job now."""
        with self._guard:
            return job_id in self._leases

    def gpu_position(self, job_id: str) -> int | None:
        """While a job this process runs waits for the GPU (behind a `POST /generate` or another
        job): the runs ahead of it (0: next); None when it runs, or runs elsewhere."""
        with self._guard:
            lease = self._leases.get(job_id)
        return None if lease is None else self.gpu.position(lease.stop)

    # -- run states ------------------------------------------------------------------------
    def note_resumed(self, job_id: str, iteration: int) -> None:
        """The job's run continued at `iteration` (0: it started afresh)."""
        if iteration > 0:
            log.info("job %s: resumed at iteration %d", job_id, iteration)
            if self.metrics is not None:
                self.metrics.resumed(iteration)

    def _saved_state(self, job_id: str) -> RunState | None:
        """The state a stopped run of the job saved, or None (a warning when unusable)."""
        try:
            data = self.artifacts.read_state(job_id)
            return decode_state(data, "the saved state") if data is not None else None
        except (StateError, StorageError) as exc:
            self._warn(job_id, f"{exc}; the run started afresh")
            return None

    def _warn(self, job_id: str, text: str) -> None:
        """A warning in the job's record (it did not fail the job)."""
        log.warning("job %s: %s", job_id, text)
        try:
            self.store.progress(job_id, str(self.identity), warning=text[:WARNING_CHARS])
        except Exception as exc:
            if self.outages.note(exc) is None:
                raise

    def _drop_state(self, job_id: str) -> None:
        """The job ended: its saved state is spent (best effort; the store may be down)."""
        try:
            self.artifacts.remove_state(job_id)
        except Exception as exc:
            log.warning("job %s: cannot remove its run state: %s", job_id, one_line(exc))

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        """`call()`, retried while the database or queue is down (see `outage.retry`)."""
        return retry(call, what, self.outages, self.config.db_retry_seconds)

    def _hand_back(self, job_id: str) -> None:
        """Put a job id back on the queue; if the queue is down, the reconciler will."""
        try:
            self._enqueue(job_id)
        except Exception as exc:
            if self.outages.note(exc) is None:
                raise
            log.warning("job %s: the queue is down; the reconciler will enqueue it", job_id)

    def run(self, job_id: str) -> None:
        """The queue's task: claim the job and run it; never raises."""
        while self.stalled() is not None:  # claim nothing while a job here is paused
            if self._stopping.wait(PAUSE_POLL):
                break
        if self._stopping.is_set():  # dequeued while stopping: leave it for the next worker
            self._hand_back(job_id)
            return
        try:
            claimed = self._retry(lambda: self._claim(job_id), "claim")
        except Exception as exc:  # still queued in the database: the reconciler enqueues it again
            if unavailable_service(exc) is None:
                log.exception("job %s: cannot claim it", job_id)
            else:  # the outage outlasted the retries (the retry logged its start)
                log.warning("job %s: not claimed: %s; it stays queued", job_id,
                            one_line(exc, REASON_CHARS))  # fmt: skip
            return
        if claimed is None:
            log.info("job %s: not queued any more (cancelled, deleted or taken); skipped", job_id)
            return
        job, lease = claimed
        job_id = job.id  # the fairest queued job (api.jobs.fairness), not always the dequeued
        if self.metrics is not None and job.started_at is not None:
            self.metrics.started(max(0.0, job.started_at - job.created_at))
        config = self.config
        try:
            with Watch(self, job_id, lease, config.heartbeat_seconds, config.progress_interval):
                final = self._execute(job, lease)
        except Exception as exc:  # a bug here must not kill the consumer thread
            if self.outages.note(exc) is not None:  # stopping in an outage: the job stays
                log.warning("job %s: left running (%s)", job_id, one_line(exc, REASON_CHARS))
                final = False  # running, for the dead-worker policy once the service is back
            else:
                log.exception("job %s: worker error", job_id)
                final = self._fail_safely(job_id)
        finally:
            with self._guard:
                self._leases.pop(job_id, None)
        if final:  # its notices; a database blip right after the end must not lose them
            try:
                self._retry(lambda: self._on_finished(job_id), f"job {job_id}: send its notices")
            except Exception:
                log.exception("job %s: cannot send its notices", job_id)

    def _claim(self, dequeued: str) -> tuple[Job, Lease] | None:
        """One try at claiming a job (the fairest queued one), registered as run here.

        A job the database records as this process's that no thread here runs is a claim whose
        reply was lost (its COMMIT went through, the answer did not come back): it is taken up
        again first, so the lost reply costs neither the job nor an attempt.
        """
        me = str(self.identity)
        with self._claiming:  # one thread of this process claims at a time
            lost = [job for job in self.store.owned(me) if not self.runs(job.id)]
            job = lost[0] if lost else claim_fair(self.store, dequeued, me)
            if job is None:
                return None
            if lost:
                log.warning("job %s: its claim's reply was lost; taken up again", job.id)
            lease = Lease(job.id, self.config.stale_after_seconds / 2, RunStop())
            with self._guard:
                self._leases[job.id] = lease
            return job, lease

    def hand_back_lost(self) -> list[str]:
        """Jobs recorded as this process's that no thread here runs, silent for
        `stale_after_seconds` (claims whose reply was lost, not taken up by a claim since): back
        to the queue without spending a try. Returns their ids."""
        old, lost = time.time() - self.config.stale_after_seconds, []
        with self._claiming:  # not while a claim takes one up
            for job in self.store.owned(self.worker_id):
                if not self.runs(job.id) and (job.heartbeat_at or 0.0) < old:
                    self._give_back(job.id, "outage")
                    lost.append(job.id)
        return lost

    def _execute(self, job: Job, lease: Lease) -> bool:
        """Generate and save; returns whether the job reached a final state."""
        try:
            # Resolved when it was submitted: the run uses them as they are (checked against
            # this worker's limits), on this worker's device.
            values = {**job.settings, "device": self.config.device}
            settings = ResolvedSettings.create(**values)
            local = lambda: self.artifacts.localize(settings, job.id)  # noqa: E731
            settings = self._retry(local, f"job {job.id}: fetch its uploads")
            result = self._run(job.id, settings, lease)
            outputs = self._store(job.id, result)
        except Cancelled as exc:
            return self._stopped(job.id, exc)
        except Exception as exc:  # a failed run (run_engine logged it), or saving it failed
            if unavailable_service(exc) is not None:  # not the job's fault: run it again
                log.warning(
                    "job %s: stopped by an outage (%s); handed back",
                    job.id,
                    one_line(exc, REASON_CHARS),
                )
                return self._give_back(job.id, "outage")
            if not isinstance(exc, (SettingsError, RunFailed, StorageError)):
                log.exception("job %s: cannot save the result", job.id)
            return self._finish(job.id, FAILED, error=failure_message(exc))
        self._drop_preview(job.id)  # the final image replaces it
        values = {"outputs": outputs, "run_seconds": result.elapsed, "error": None}
        return self._finish(job.id, SUCCEEDED, iteration=len(result.losses), **values)

    def _store(self, job_id: str, result: Result) -> list[str]:
        """Save the result; a storage outage of any length is waited out (the result waits in
        memory, the job stays running with its heartbeat) unless this worker stops meanwhile."""
        save = lambda: self.artifacts.save_result(result, job_id) + self.artifacts.steps(job_id)  # noqa: E731
        return retry(
            save, f"job {job_id}: store the result", self.outages, math.inf, self._stopping
        )

    def _drop_preview(self, job_id: str) -> None:
        try:
            self.artifacts.remove_preview(job_id)
        except Exception as exc:  # left behind: the job's deletion removes it
            log.warning("job %s: cannot remove its preview: %s", job_id, one_line(exc))

    def _run(self, job_id: str, settings: ResolvedSettings, lease: Lease) -> Result:
        """The engine's run of the job, continued from its saved state when there is one that
        fits (else afresh, with a warning); it pauses while its lease has lapsed."""
        state, cancel = self._saved_state(job_id), lease.stop
        every = self.config.checkpoint_seconds
        while True:
            try:
                with (
                    Progress(self, job_id, cancel) as progress,
                    Checkpoints(self.artifacts, job_id, every) as checkpoints,
                ):
                    return run_engine(
                        settings,
                        gpu=self.gpu,
                        models=self.models,
                        limits=self.config.limits(),
                        cancel=cancel,
                        abort=lease,
                        bounded=False,  # the queue bounds the waiting
                        on_step=progress,
                        on_frame=progress.frame_done,
                        on_save=progress.step_done,
                        video_path=self._video(job_id, settings),
                        resume=state,
                        checkpoint=checkpoints if every > 0 else None,
                    )
            except StateError as exc:
                if state is None:
                    raise
                self._warn(job_id, f"the saved state does not fit: {exc}; the run started afresh")
                state = None

    def _video(self, job_id: str, settings: ResolvedSettings) -> Path | None:
        return self.artifacts.video_path(job_id) if settings.wants_video else None

    def _stopped(self, job_id: str, stop: Cancelled) -> bool:
        """After `Cancelled`: a cancel request ends it; a shutdown saves the run's state (when
        states are kept) and hands the job back to the queue."""
        job = self._retry(lambda: self.store.get(job_id), "read the job")
        if job is not None and not job.cancel_requested and self._stopping.is_set():
            if stop.state is not None and self.config.checkpoint_seconds > 0:
                save_state(self.artifacts, job_id, stop.state())
            return self._give_back(job_id, "shutdown")
        return self._finish(job_id, CANCELLED)

    def _give_back(self, job_id: str, reason: str) -> bool:
        """running -> queued without spending an attempt (a shutdown or an outage stopped it)."""
        me = str(self.identity)
        if self._retry(lambda: self.store.release(job_id, me), "hand the job back"):
            self._discard(job_id)  # its preview; the next run continues from the saved state
            log.info("job %s: interrupted by %s; queued again", job_id, reason)
            if self.metrics is not None:
                self.metrics.requeued(reason)
            self._hand_back(job_id)
        return False

    def _finish(self, job_id: str, status: str, **values: Any) -> bool:
        """Record the final state; clean up after a job deleted meanwhile."""
        me, end = str(self.identity), lambda: self.store.finish(job_id, me, status, **values)
        # A result is recorded whenever the database returns, however long it is away (unless
        # this worker stops meanwhile: the job stays running for the dead-worker policy).
        wait = math.inf if status == SUCCEEDED else self.config.db_retry_seconds
        if retry(end, f"job {job_id}: record the end", self.outages, wait, self._stopping):
            self._drop_state(job_id)
            if status != SUCCEEDED:
                self._discard(job_id)  # a failed or cancelled run leaves nothing behind
            log.info("job %s: %s", job_id, status)
            ended(self.metrics, status, values.get("run_seconds"))
            return True
        job = self._retry(lambda: self.store.get(job_id), "read the job")
        if job is not None and job.worker_id == me and job.status == status:
            return True  # the end was recorded by a try whose reply was lost: it is ours, once
        if job is None:  # deleted while it ran: drop what it wrote
            self.artifacts.delete(job_id)
        else:  # the reaper took it back (heartbeat too old): the new owner decides
            log.warning("job %s: now %s by %s; result dropped", job_id, job.status, job.worker_id)
        return False

    def _fail_safely(self, job_id: str) -> bool:
        """Record an internal error as the job's end; if even that fails, the reaper will."""
        try:
            return self._finish(job_id, FAILED, error="internal error in the worker")
        except Exception:
            log.exception("job %s: cannot record its failure", job_id)
            return False

    def _discard(self, job_id: str) -> None:
        """Remove what a run that did not succeed wrote (the store may be what failed)."""
        try:
            self.artifacts.discard(job_id)
        except Exception:
            log.exception("job %s: cannot remove the outputs of the failed run", job_id)
