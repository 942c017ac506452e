"""Running one job, and the dead-worker policy.

`JobRunner.run(job_id)` is what the queue calls: it claims the job (queued -> running), holds
the process-wide GPU lock (the same `GpuLock` as `POST /generate`), runs `engine.generate` with
throttled progress writes, a preview PNG every few iterations and a cancel flag (through
`api.runner.run_engine`), saves the outputs in the `ArtifactStore` and records the final state.

Dead-worker policy: a running job whose worker is gone (its heartbeat is older than
`stale_after_seconds`, or its worker was a process of this host that no longer exists) is queued
again if it has been tried at most `max_requeues` times (default once), else marked failed with a
message (cancelled instead, if its cancel was requested). Every claim adds one to `attempts` and
nothing lowers it except a clean shutdown that hands the job back, so a job that keeps killing
its worker cannot loop.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.errors import RunFailed
from api.gpu import GpuLock
from api.jobs.config import ServiceConfig
from api.jobs.store import CANCELLED, FAILED, SUCCEEDED, Job, JobStore
from api.runner import failure_message, run_engine
from api.storage import ArtifactStore
from engine import ModelCache, Settings, Step
from engine.errors import Cancelled, SettingsError

log = logging.getLogger(__name__)


# -- who runs a job ----------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerIdentity:
    """host:pid:token of one worker process (the token tells a restarted pid 1 from the last)."""

    host: str
    pid: int
    token: str

    @classmethod
    def current(cls) -> WorkerIdentity:
        """This process, with a fresh token."""
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(4))

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    @classmethod
    def parse(cls, text: str) -> WorkerIdentity | None:
        """The identity in a job's `worker_id`, or None if malformed."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        host, pid, token = parts
        return cls(host, int(pid), token)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def worker_gone(worker_id: str | None, me: WorkerIdentity) -> bool:
    """Whether the worker is known dead: a process of this host that is not running any more."""
    other = WorkerIdentity.parse(worker_id or "")
    if other is None or other.host != me.host or other == me:
        return False
    if other.pid == me.pid:  # same pid, other token: we replaced it (a restarted container)
        return True
    return not pid_alive(other.pid)


def is_dead(job: Job, me: WorkerIdentity, stale_after: float, now: float) -> bool:
    """Whether a running job has lost its worker (stale heartbeat or a vanished process)."""
    stale = job.heartbeat_at is None or job.heartbeat_at < now - stale_after
    return stale or worker_gone(job.worker_id, me)


def dead_message(attempts: int) -> str:
    """The error of a job whose worker died on every try."""
    return (
        f"the worker running this job stopped before it finished, {attempts} times (a crash, a "
        "kill or running out of memory), so it is not tried again; submit it again, perhaps "
        "with a smaller size or fewer iterations"
    )


def reap_dead(
    store: JobStore,
    me: WorkerIdentity,
    config: ServiceConfig,
    enqueue: Callable[[str], None],
    on_ended: Callable[[str], None],
) -> list[str]:
    """Apply the dead-worker policy to every running job; returns the ids it changed."""
    changed, now = [], time.time()
    for job in store.running():
        if not is_dead(job, me, config.stale_after_seconds, now):
            continue
        if job.cancel_requested:  # its owner wanted it stopped anyway
            if store.end_dead(job, CANCELLED):
                on_ended(job.id)
                changed.append(job.id)
        elif job.attempts <= config.max_requeues:
            if store.requeue_dead(job):  # False: another reaper or the worker came first
                log.warning("job %s: its worker %s died; queued again", job.id, job.worker_id)
                enqueue(job.id)
                changed.append(job.id)
        elif store.end_dead(job, FAILED, dead_message(job.attempts)):
            log.warning("job %s: its worker died %d times; failed", job.id, job.attempts)
            on_ended(job.id)
            changed.append(job.id)
    return changed


# -- running a job -------------------------------------------------------------------------
class _Progress:
    """`on_step`: throttled progress writes and a preview every `preview_every` iterations."""

    def __init__(self, runner: JobRunner, job_id: str, cancel: threading.Event):
        self.runner, self.job_id, self.cancel = runner, job_id, cancel
        self._last = 0.0

    def __call__(self, step: Step) -> None:
        config = self.runner.config
        values: dict[str, Any] = {}
        if step.iteration % config.preview_every == 0 and step.iteration < step.total:
            self.runner.artifacts.save_preview(self.job_id, step.image())
            values["preview_iteration"] = step.iteration
        now = time.monotonic()
        if not values and now - self._last < config.progress_interval:
            return
        self._last = now
        values.update(iteration=step.iteration, total=step.total, loss=step.loss)
        store, me = self.runner.store, str(self.runner.identity)
        if not store.progress(self.job_id, me, run_seconds=step.elapsed, **values):
            self.cancel.set()  # deleted, or no longer ours: stop working for nobody


class _Watch:
    """A thread beside a running job: heartbeat, and the cancel flag of another process."""

    def __init__(self, runner: JobRunner, job_id: str, cancel: threading.Event):
        self.runner, self.job_id, self.cancel = runner, job_id, cancel
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"t2a-watch-{job_id[:8]}")
        self._thread.daemon = True

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        config = self.runner.config
        last_beat = time.monotonic()
        while not self._done.wait(config.progress_interval):
            try:
                if time.monotonic() - last_beat >= config.heartbeat_seconds:
                    self._beat()
                    last_beat = time.monotonic()
                else:
                    self._check()
            except Exception:  # a busy database must not silence the heartbeat for good
                log.exception("job %s: heartbeat failed", self.job_id)

    def _check(self) -> None:
        """Stop the run if the job was cancelled, deleted or taken over."""
        job = self.runner.store.get(self.job_id)
        if job is None or job.cancel_requested or job.worker_id != str(self.runner.identity):
            self.cancel.set()

    def _beat(self) -> None:
        if not self.runner.store.heartbeat(self.job_id, str(self.runner.identity)):
            self._check()


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
    ):
        self.store, self.config, self.gpu, self.models = store, config, gpu, models
        self.artifacts = artifacts
        self.identity = WorkerIdentity.current()
        self._enqueue, self._on_finished = enqueue, on_finished
        self._cancels: dict[str, threading.Event] = {}
        self._guard = threading.Lock()
        self._stopping = threading.Event()

    def cancel(self, job_id: str) -> bool:
        """Stop the job at its next iteration if this process runs it."""
        with self._guard:
            event = self._cancels.get(job_id)
        if event is not None:
            event.set()
        return event is not None

    def shutdown(self) -> None:
        """Stop every running job; they go back to the queue (see `run`)."""
        self._stopping.set()
        with self._guard:
            for event in self._cancels.values():
                event.set()

    def run(self, job_id: str) -> None:
        """The queue's task: claim the job and run it; never raises."""
        if self._stopping.is_set():  # dequeued while stopping: leave it for the next worker
            self._enqueue(job_id)
            return
        job = self.store.claim(job_id, str(self.identity))
        if job is None:
            log.info("job %s: not queued any more (cancelled, deleted or taken); skipped", job_id)
            return
        cancel = threading.Event()
        with self._guard:
            self._cancels[job_id] = cancel
        try:
            with _Watch(self, job_id, cancel):
                final = self._execute(job, cancel)
        except Exception:  # a bug here must not kill the consumer thread
            log.exception("job %s: worker error", job_id)
            final = self._finish(job_id, FAILED, error="internal error in the worker")
        finally:
            with self._guard:
                self._cancels.pop(job_id, None)
        if final:
            self._on_finished(job_id)

    def _execute(self, job: Job, cancel: threading.Event) -> bool:
        """Generate and save; returns whether the job reached a final state."""
        try:
            settings = Settings.create(**{**job.settings, "device": self.config.device})
            settings = self.artifacts.localize(settings, job.id)  # its uploads, on this node
            result = run_engine(
                settings,
                gpu=self.gpu,
                models=self.models,
                limits=self.config.limits(),
                cancel=cancel,
                bounded=False,  # the queue bounds the waiting
                on_step=_Progress(self, job.id, cancel),
                video_path=self.artifacts.video_path(job.id) if settings.make_video else None,
            )
            outputs = self.artifacts.save_result(result, job.id)
        except Cancelled:
            return self._stopped(job.id)
        except (SettingsError, RunFailed) as exc:  # run_engine logged a failed run
            return self._finish(job.id, FAILED, error=failure_message(exc))
        except Exception as exc:  # saving the result failed (a full disk, ...)
            log.exception("job %s: cannot save the result", job.id)
            return self._finish(job.id, FAILED, error=failure_message(exc))
        self.artifacts.remove_preview(job.id)  # the final image replaces it
        values = {"outputs": outputs, "run_seconds": result.elapsed, "error": None}
        return self._finish(job.id, SUCCEEDED, iteration=len(result.losses), **values)

    def _stopped(self, job_id: str) -> bool:
        """After `Cancelled`: a cancel request ends it; a shutdown hands it back to the queue."""
        job = self.store.get(job_id)
        if job is not None and not job.cancel_requested and self._stopping.is_set():
            if self.store.release(job_id, str(self.identity)):
                self._discard(job_id)  # its preview; the next run starts afresh
                log.info("job %s: interrupted by shutdown; queued again", job_id)
                self._enqueue(job_id)
            return False
        return self._finish(job_id, CANCELLED)

    def _finish(self, job_id: str, status: str, **values: Any) -> bool:
        """Record the final state; clean up after a job deleted meanwhile."""
        if self.store.finish(job_id, str(self.identity), status, **values):
            if status != SUCCEEDED:
                self._discard(job_id)  # a failed or cancelled run leaves nothing behind
            log.info("job %s: %s", job_id, status)
            return True
        job = self.store.get(job_id)
        if job is None:  # deleted while it ran: drop what it wrote
            self.artifacts.delete(job_id)
        else:  # the reaper took it back (heartbeat too old): the new owner decides
            log.warning("job %s: now %s by %s; result dropped", job_id, job.status, job.worker_id)
        return False

    def _discard(self, job_id: str) -> None:
        """Remove what a run that did not succeed wrote (the store may be what failed)."""
        try:
            self.artifacts.discard(job_id)
        except Exception:
            log.exception("job %s: cannot remove the outputs of the failed run", job_id)
