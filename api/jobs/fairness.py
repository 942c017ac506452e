"""Fair queues: which queued job a worker takes next, round-robin across clients.

The queue (huey) is first in, first out, so one client's ten queued jobs delayed another's
first by ten runs. A queue entry is therefore only a wake-up: the worker that takes one claims
the fairest queued job, which is often not the entry's own. The fairest is the oldest queued
job of the client served least recently (whose latest start is oldest; a client never served
comes first), so clients take turns, and each client's jobs keep their order:

    A1 A2 ... A10 queued, then B1  ->  runs A1, B1, A2, A3, ...

Every entry still wakes a worker for one queued job, so entries and queued jobs stay as many;
the reconciler (`api.jobs.upkeep.reconcile`) counts an entry whose job is no longer queued as
the entry of a queued job that has none. A client's share is also capped when it submits
(T2A_MAX_JOBS_PER_CLIENT, `api.jobs.admission`).
"""

from __future__ import annotations

from sqlalchemy import func, select

from api.jobs.store import QUEUED, Job, JobStore

TRIES = 5  # other workers may claim the same pick first: take the next one


def fairest(store: JobStore) -> str | None:
    """The id of the queued job to run next (see the module's docstring), or None."""
    last = (
        select(Job.client_id, func.max(Job.started_at).label("last"))
        .where(Job.started_at.is_not(None))
        .group_by(Job.client_id)
        .subquery()
    )
    query = (
        select(Job.id)
        .outerjoin(last, last.c.client_id == Job.client_id)
        .where(Job.status == QUEUED)
        .order_by(func.coalesce(last.c.last, 0.0), Job.seq)
        .limit(1)
    )
    with store.session() as s:
        return s.scalar(query)


def claim_fair(store: JobStore, dequeued: str, worker_id: str) -> Job | None:
    """Claim the fairest queued job for `worker_id` (the entry's own, `dequeued`, when no other
    is fairer); None when nothing is queued."""
    for _ in range(TRIES):
        pick = fairest(store)
        if pick is None:
            return None
        job = store.claim(pick, worker_id)
        if job is not None:
            return job
    return store.claim(dequeued, worker_id)  # under contention: at least the entry's own
