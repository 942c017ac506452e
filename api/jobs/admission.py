"""Admission of a new submission: the queue's bound, the client's rate and its share of the
queue, decided in the one transaction that also records the submission (and its job).

    admit(store, config, client_id, job)    # QueueFull, RateLimited, ClientBusy or recorded

The transaction first writes the `admission` row of `t2a_meta`. On PostgreSQL that row's lock
serialises admissions across threads and API nodes, and under READ COMMITTED every statement
after it sees what the previous holder committed; on SQLite the write takes the database's
write lock (the busy timeout waits for it). So the counts read next are exact when the
admission row and the job are inserted: no interleaving gets past a limit. `check` is the same
decision without the lock or a record, made before a request's uploads are stored, so a refused
request costs no storage; only `admit` decides.

Every admitted submission is a row of `t2a_admissions` (`POST /jobs` and `POST /generate` in
every mode); the rate limit counts those rows, so deleting a job gives no quota back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.config import JobsConfig
from api.jobs.errors import ClientBusy, QueueFull, RateLimited
from api.jobs.identity import META
from api.jobs.store import QUEUED, RUNNING, Admission, Job, JobStore

LOCK_KEY = "admission"
LOCK_TRIES = 3  # the first admissions of a new database may race to insert the lock row


@dataclass(frozen=True)
class Rules:
    """The limits one admission is decided by (from `JobsConfig`)."""

    max_queued: int
    queue_retry_after: int
    rate_limit: int  # 0: off
    window: int
    max_per_client: int  # running + queued jobs of one client; 0: off

    @classmethod
    def of(cls, config: JobsConfig) -> Rules:
        return cls(config.max_queued, config.queue_retry_after, config.rate_limit,
                   config.rate_limit_window, config.max_jobs_per_client)  # fmt: skip


def check(store: JobStore, config: JobsConfig, client_id: str) -> None:
    """Raise the refusal `admit` would raise now (nothing is locked or recorded)."""
    with store.session() as s:
        _decide(s, Rules.of(config), client_id, time.time())


def admit(store: JobStore, config: JobsConfig, client_id: str, job: Job | None = None) -> None:
    """Decide and record one submission atomically: raise `QueueFull`, `RateLimited` or
    `ClientBusy`, else insert its admission row and `job` (when given) in one transaction."""
    rules = Rules.of(config)
    for attempt in range(LOCK_TRIES):
        try:
            with store.session() as s:
                now = time.time()
                _lock(s, now)
                _decide(s, rules, client_id, now)
                s.execute(delete(Admission).where(Admission.at < now - rules.window))
                s.add(Admission(client_id=client_id, at=now, job_id=job.id if job else None))
                if job is not None:
                    s.add(job)
            return
        except IntegrityError:  # another process inserted the lock row first: take it now
            if attempt == LOCK_TRIES - 1:
                raise


def forget(store: JobStore, job_id: str) -> None:
    """Remove the admission of a job that was never queued (the queue refused it)."""
    with store.session() as s:
        s.execute(delete(Admission).where(Admission.job_id == job_id))


def _lock(s: Session, now: float) -> None:
    """Hold the admission lock until the transaction ends (see the module's docstring)."""
    touched = s.execute(update(META).where(META.c.key == LOCK_KEY).values(updated_at=now))
    if not getattr(touched, "rowcount", 0):
        s.execute(insert(META).values(key=LOCK_KEY, value="lock", updated_at=now))


def _decide(s: Session, rules: Rules, client_id: str, now: float) -> None:
    """Raise the first limit one more submission of `client_id` would pass."""
    queued = int(s.scalar(select(func.count()).where(Job.status == QUEUED)) or 0)
    if queued >= rules.max_queued:
        raise QueueFull(queued, rules.queue_retry_after)
    if rules.max_per_client:
        mine = select(func.count()).where(
            Job.client_id == client_id, Job.status.in_((QUEUED, RUNNING))
        )
        held = int(s.scalar(mine) or 0)
        if held >= rules.max_per_client:
            raise ClientBusy(rules.max_per_client)
    if not rules.rate_limit:
        return
    since = select(Admission.at).where(
        Admission.client_id == client_id, Admission.at >= now - rules.window
    )
    times = sorted(s.scalars(since))
    if len(times) >= rules.rate_limit:
        # Once this one leaves the window, the client is under the limit again.
        oldest = times[len(times) - rules.rate_limit]
        retry = max(1, math.ceil(oldest + rules.window - now))
        raise RateLimited(rules.rate_limit, rules.window, retry)
