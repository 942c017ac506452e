"""Who runs a job, and the dead-worker policy.

Dead-worker policy: a running job whose worker is gone (its heartbeat is older than
`stale_after_seconds`, or its worker was a process of this host that no longer exists) is queued
again if it has been tried at most `max_requeues` times (default once), else marked failed with a
message (cancelled instead, if its cancel was requested). Every claim adds one to `attempts` and
nothing lowers it except a hand-back (a clean shutdown, or an outage of the database or queue
that stopped the run or silenced its worker), so a job that keeps killing its worker cannot
loop, and infrastructure does not spend a job's retry budget. A worker never judges its own
jobs, and while the database or queue has failed it lately (`Outages.settled`) it judges nobody
by a stale heartbeat: the outage silenced every worker alike.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from api.config import ServiceConfig
from api.jobs.store import CANCELLED, FAILED, Job, JobStore
from api.metrics import Metrics

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


def is_dead(
    job: Job,
    me: WorkerIdentity,
    stale_after: float,
    now: float,
    settled: bool = True,
) -> bool:
    """Whether a running job has lost its worker (stale heartbeat or a vanished process).

    Never a job of this process; a stale heartbeat counts only when `settled` (no outage of the
    database or queue lately, which would have silenced live workers too).
    """
    if job.worker_id == str(me):  # running here, or a claim whose reply was lost, which
        return False  # this process takes up again (`JobRunner.hand_back_lost`)
    stale = job.heartbeat_at is None or job.heartbeat_at < now - stale_after
    return (stale and settled) or worker_gone(job.worker_id, me)


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
    settled: bool = True,
    metrics: Metrics | None = None,
    outage_during: Callable[[float, float], bool] = lambda start, end: False,
) -> list[str]:
    """Apply the dead-worker policy to every running job; returns the ids it changed.

    A job that went silent while this process also met an outage (`outage_during` its last
    heartbeat and now) is queued again without spending a try, as `outage`: the silence may be
    the outage's (a worker stopped or cut off while the database was away), not the job's.

    A job put back in the database whose enqueue fails stays queued there: the reconciler
    (`api.jobs.upkeep`) enqueues it once the queue answers again.
    """
    changed, now = [], time.time()

    def silenced(job: Job, now: float) -> bool:
        since = job.heartbeat_at or job.started_at
        return since is not None and outage_during(since, now)

    for job in store.running():
        if not is_dead(job, me, config.stale_after_seconds, now, settled):
            continue
        if job.cancel_requested:  # its owner wanted it stopped anyway
            if store.end_dead(job, CANCELLED):
                ended(metrics, CANCELLED)
                on_ended(job.id)
                changed.append(job.id)
        elif silenced(job, now):  # its worker may have lived: the outage silenced it
            if store.requeue_dead(job, spend=False):
                log.warning("job %s: its worker %s went silent in an outage; queued again",
                            job.id, job.worker_id)  # fmt: skip
                if metrics is not None:
                    metrics.requeued("outage")
                changed.append(job.id)
                enqueue(job.id)
        elif job.attempts <= config.max_requeues:
            if store.requeue_dead(job):  # False: another reaper or the worker came first
                log.warning("job %s: its worker %s died; queued again", job.id, job.worker_id)
                if metrics is not None:
                    metrics.requeued("dead_worker")
                changed.append(job.id)
                enqueue(job.id)
        elif store.end_dead(job, FAILED, dead_message(job.attempts)):
            log.warning("job %s: its worker died %d times; failed", job.id, job.attempts)
            ended(metrics, FAILED)
            on_ended(job.id)
            changed.append(job.id)
    return changed


def ended(metrics: Metrics | None, status: str, run_seconds: float | None = None) -> None:
    """Count a job that reached a final state (when there are metrics)."""
    if metrics is not None:
        metrics.finished(status, run_seconds)
