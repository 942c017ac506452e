"""A worker's background upkeep: its own heartbeat, the dead-worker check and the reconciler.

The database is the source of truth and the queue only carries job ids, so the queue can lose
an id (a broker restarted without persistence, a process that died between recording a job and
enqueuing it) while the job stays `queued` forever. `reconcile` finds queued jobs whose id is not
in the queue (beyond the entries of jobs no longer queued, see `api.jobs.fairness`) and that
were last enqueued over a grace period ago, stamps each with a conditional
update (exactly one reconciler wins it) and enqueues it again. Every live worker runs it every
`reconcile_seconds`, so a lost job runs again within about twice that.

`Upkeep` is the thread that runs the three chores; none of them ever ends it: an outage of the
database or queue is recorded in `Outages` (the dead-worker check waits until things settle)
and tried again at the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from api.jobs.outage import REASON_CHARS, Outages
from api.jobs.queue import JobQueue
from api.jobs.store import QUEUED, JobStore, Worker
from engine.errors import one_line

log = logging.getLogger(__name__)


def reconcile(
    store: JobStore, queue: JobQueue, grace: float, now: float | None = None
) -> list[str]:
    """Enqueue again the queued jobs that the queue lost; returns their ids.

    The queue is read before the database, so a job enqueued in between is newer than the
    grace period and left alone. A duplicate entry (a job taken off the queue but not yet
    claimed) is harmless: the claim is conditional, and the second copy is skipped.
    """
    now = time.time() if now is None else now
    pending = queue.pending_ids()
    # An entry whose job is not queued any more wakes a worker for another queued job (fair
    # queues, `api.jobs.fairness`): it stands for one queued job that has no entry of its own.
    spare = len(pending - set(store.ids(QUEUED)))
    lost = []
    for job in store.queued_before(now - grace):
        if job.id in pending:
            continue
        if spare:
            spare -= 1
            continue
        if store.mark_enqueued(job, now):
            queue.requeue(job.id)
            lost.append(job.id)
    if lost:
        log.warning("%d queued job(s) were missing from the queue; enqueued again", len(lost))
    return lost


@dataclass
class Chore:
    """One periodic task of the upkeep thread."""

    name: str
    every: float
    run: Callable[[], object]
    due: float = 0.0  # monotonic time of the next run
    down: str | None = None  # the service its last run could not reach (one warning an outage)


class Upkeep:
    """A daemon thread running each chore when it is due; `stop()` ends it."""

    def __init__(self, chores: list[Chore], outages: Outages):
        self.chores, self.outages = chores, outages
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="t2a-upkeep", daemon=True)

    def start(self) -> None:
        """Start the thread (each chore first runs one period from now)."""
        now = time.monotonic()
        for chore in self.chores:
            chore.due = now + chore.every
        self._thread.start()

    def stop(self) -> None:
        """End the thread after its current chore."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        tick = min(chore.every for chore in self.chores)
        while not self._stop.wait(min(tick, 1.0)):
            for chore in self.chores:
                if time.monotonic() >= chore.due:
                    self._run(chore)
                    chore.due = time.monotonic() + chore.every

    def _run(self, chore: Chore) -> None:
        """Run the chore; an outage is logged when it starts and when it ends, not each time."""
        try:
            chore.run()
        except Exception as exc:  # never ends the thread
            service = self.outages.note(exc)
            if service is None:
                log.exception("%s failed", chore.name)
                return
            log.log(
                logging.DEBUG if chore.down else logging.WARNING,
                "%s: the %s is unavailable (%s); tried again every %g s",
                chore.name, service, one_line(exc, REASON_CHARS), chore.every,
            )  # fmt: skip
            chore.down = service
        else:
            if chore.down:
                log.info("%s: the %s answers again", chore.name, chore.down)
                chore.down = None


def worker_row(identity: str, host: str, pid: int, device: str, started_at: float) -> Worker:
    """A fresh heartbeat row of this worker (`running` is set by the caller)."""
    now = time.time()
    return Worker(
        id=identity, host=host, pid=pid, device=device, started_at=started_at, heartbeat_at=now
    )
