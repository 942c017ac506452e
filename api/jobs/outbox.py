"""The outbox sender: delivers the notices of finished jobs (`t2a_outbox` rows) from any process.

Every process that starts a `JobService` runs one `OutboxSender`: a thread that drains the due
rows at once when `wake()` is called (a job ended here) and otherwise every `poll` seconds
(retries, rows that another process made, rows a dead process left), with a few delivery
threads.

A row is taken by a conditional UPDATE that leases it (`lease_owner` = this process,
`lease_until` = now + `lease`, `attempts` + 1) only while it is pending, due and not leased;
on PostgreSQL two senders' UPDATEs of one row serialise on its lock and the second finds the
lease taken, so exactly one wins. The outcome (sent; tried again `notify_backoff * 2 **
(tries - 1)` seconds later; failed after `notify_attempts` tries or at once on a
`PermanentError`) is recorded with the job's `email_state` / `webhook_state` in one
transaction, and only while this sender still holds the lease (same owner, same `attempts`).
A sender that dies mid-delivery loses its lease when it runs out; another one sends the notice.

The row is made once and recorded sent once; the sending itself is at least once: a sender that
dies (or loses the database) after the receiver took the notice and before "sent" is recorded
leaves it to be sent again. The webhook's `X-Text2Art-Delivery: <job id>.webhook` header and
the e-mail's `Message-ID: <job id>.email@text2art` are the same on every try, so a receiver
can drop that one duplicate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update

from api.config import JobsConfig
from api.jobs.notify import PermanentError
from api.jobs.outage import REASON_CHARS, Outages, retry
from api.jobs.outbox_table import FAILED, KINDS, PENDING, SENT, OutboxRow
from api.jobs.store import Job, JobStore
from engine.errors import one_line

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a sender looks for due rows when nothing wakes it
LEASE_MARGIN = 60.0  # seconds a lease outlasts the webhook and SMTP timeouts
STOP_WAIT = 10.0  # seconds `stop()` waits for the deliveries under way
KEEP_SECONDS = 7 * 86400  # sent and failed rows are deleted after a week
PURGE_EVERY = 3600.0  # seconds between two deletions of old rows
STATE_CHARS = 200  # the length of `Job.email_state` / `Job.webhook_state`

# The delivery of one notice of a job: `compose(job, kind)()` sends it or raises.
Compose = Callable[[Job, str], Callable[[], None]]


@dataclass(frozen=True)
class Lease:
    """A row this sender took: `attempts` (tries begun, this one included) is its token."""

    id: int
    job_id: str
    kind: str
    attempts: int


def lease_seconds(config: JobsConfig) -> float:
    """How long a sender holds a row: longer than one delivery of either kind."""
    return config.webhook_timeout + config.smtp_timeout + LEASE_MARGIN


def claim_due(
    store: JobStore, owner: str, kinds: Sequence[str], lease: float, limit: int
) -> list[Lease]:
    """Lease up to `limit` due rows of `kinds` to `owner` for `lease` seconds, oldest due
    first; a row another sender takes meanwhile is skipped (each UPDATE is conditional)."""
    now = time.time()
    due = (
        OutboxRow.state == PENDING,
        OutboxRow.next_try_at <= now,
        OutboxRow.kind.in_(list(kinds)),
        or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
    )
    with store.session() as s:
        query = select(OutboxRow.id).where(*due).order_by(OutboxRow.next_try_at).limit(limit)
        ids = list(s.scalars(query))
    leases = []
    for row_id in ids:
        values = {"lease_owner": owner, "lease_until": now + lease}
        with store.session() as s:
            taken = s.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id, *due)
                .values(attempts=OutboxRow.attempts + 1, **values)
            )
            if getattr(taken, "rowcount", 0):
                row = s.get_one(OutboxRow, row_id)
                leases.append(Lease(row.id, row.job_id, row.kind, row.attempts))
    return leases


def settle(store: JobStore, lease: Lease, owner: str, values: dict[str, Any] | None,
           job_state: str | None) -> bool:  # fmt: skip
    """Record a delivery's outcome while `owner` still holds `lease`: the row's new `values`
    (None: delete it) and the job's state of that kind (None: unchanged). False when the lease
    was lost (another sender took the row after it ran out) or the row is gone."""
    mine = (
        OutboxRow.id == lease.id,
        OutboxRow.lease_owner == owner,
        OutboxRow.attempts == lease.attempts,
        OutboxRow.state == PENDING,
    )
    with store.session() as s:
        if values is None:
            result = s.execute(delete(OutboxRow).where(*mine))
        else:
            result = s.execute(update(OutboxRow).where(*mine).values(**values))
        if not getattr(result, "rowcount", 0):
            return False
        if job_state is not None:
            state = {f"{lease.kind}_state": job_state[:STATE_CHARS]}
            s.execute(update(Job).where(Job.id == lease.job_id).values(**state))
        return True


def purge(store: JobStore, before: float) -> int:
    """Delete the sent and failed rows settled before `before`; returns how many."""
    old = (OutboxRow.state.in_([SENT, FAILED]), OutboxRow.done_at < before)
    with store.session() as s:
        return int(getattr(s.execute(delete(OutboxRow).where(*old)), "rowcount", 0) or 0)


class OutboxSender:
    """This process's sender of due notices (see the module's docstring)."""

    def __init__(
        self,
        store: JobStore,
        config: JobsConfig,
        compose: Compose,
        outages: Outages,
        owner: str,
        *,
        kinds: Sequence[str] = KINDS,
        poll: float = POLL_SECONDS,
        lease: float | None = None,
        threads: int = 4,
    ):
        self.store, self.compose, self.outages, self.owner = store, compose, outages, owner
        self.kinds, self.poll, self.threads = tuple(kinds), poll, threads
        self.lease = lease_seconds(config) if lease is None else lease
        self.attempts, self.backoff = config.notify_attempts, config.notify_backoff
        self._wake, self._stop = threading.Event(), threading.Event()
        self._busy: set[Future[None]] = set()
        self._guard = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._next_retry = math.inf  # when a retry this sender scheduled is due
        self._down = False  # the database failed the last pass (one warning an outage)
        self._purged_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread and its delivery threads; the first pass runs at once."""
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="t2a-outbox")
        self._thread = threading.Thread(target=self._loop, name="t2a-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due rows now (a job ended in this process); never raises."""
        self._wake.set()

    def stop(self, wait: float = STOP_WAIT) -> None:
        """End the thread; deliveries under way may finish for `wait` seconds (one still
        running then keeps its lease until it runs out, and is sent again by someone)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:  # a pass stuck on the database ends at its deadline
            self._thread.join(wait)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        with self._guard:
            busy = set(self._busy)
        left = wait_for_futures(busy, wait).not_done if busy else set()
        if left:
            log.warning("outbox: %d deliveries still under way at stop", len(left))

    # -- one pass ----------------------------------------------------------------------------
    def drain(self) -> int:
        """Lease the due rows and deliver them in this thread; returns how many it took."""
        leases = self._claim(self.threads)
        for lease in leases:
            self.deliver(lease)
        return len(leases)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._wake.wait(self._pass())

    def _pass(self) -> float:
        """Hand due rows to free delivery threads; returns the seconds to the next pass."""
        with self._guard:
            free = self.threads - len(self._busy)
        if free > 0 and self._pool is not None:
            self._purge_when_due()
            if self._next_retry <= time.time():
                self._next_retry = math.inf  # taken in this pass
            for lease in self._claim(free):
                future = self._pool.submit(self.deliver, lease)
                with self._guard:
                    self._busy.add(future)
                future.add_done_callback(self._done)
        return max(0.0, min(self.poll, self._next_retry - time.time()))

    def _done(self, future: Future[None]) -> None:
        with self._guard:
            self._busy.discard(future)
        self._wake.set()  # a free thread: more rows may be due

    def _claim(self, limit: int) -> list[Lease]:
        try:
            leases = claim_due(self.store, self.owner, self.kinds, self.lease, limit)
        except Exception as exc:
            self._trouble(exc, "read the due notices")
            return []
        if self._down:
            log.info("outbox: the database answers again; the notices due go out")
            self._down = False
        return leases

    def _purge_when_due(self) -> None:
        if time.monotonic() - self._purged_at < PURGE_EVERY:
            return
        try:
            gone = purge(self.store, time.time() - KEEP_SECONDS)
        except Exception as exc:
            self._trouble(exc, "delete old rows")
            return
        self._purged_at = time.monotonic()
        if gone:
            log.info(
                "outbox: deleted %d rows settled over %d days ago", gone, KEEP_SECONDS // 86400
            )

    def _trouble(self, exc: Exception, what: str) -> None:
        """An outage is logged once until the database answers again; anything else is a bug."""
        service = self.outages.note(exc)
        if service is None:
            log.exception("outbox: cannot %s", what)
        elif not self._down:
            self._down = True
            log.warning("outbox: cannot %s: the %s is unavailable (%s); the notices wait",
                        what, service, one_line(exc, REASON_CHARS))  # fmt: skip

    # -- one delivery ------------------------------------------------------------------------
    def deliver(self, lease: Lease) -> None:
        """Send one leased notice and record its outcome; never raises."""
        try:
            job = self.store.get(lease.job_id)
        except Exception as exc:  # the lease runs out and the row is tried again
            self._trouble(exc, f"read job {lease.job_id}")
            return
        if job is None:  # deleted: nothing to say about it any more
            self._record(lease, None, None)
            return
        if lease.attempts > self.attempts:  # every try died with its sender: never sent again
            why = f"{self.attempts} tries began and none finished (their senders stopped)"
            self._record(lease, self._given_up(RuntimeError(why)), f"failed: {why}")
            return
        try:
            self.compose(job, lease.kind)()
        except PermanentError as exc:
            self._record(lease, self._given_up(exc), f"failed: {exc}")
        except Exception as exc:
            self._failed_try(lease, exc)
        else:
            values = {"state": SENT, "done_at": time.time(), "last_error": None}
            self._record(lease, {**values, "lease_owner": None, "lease_until": None}, "sent")

    def _failed_try(self, lease: Lease, exc: Exception) -> None:
        """Schedule the next try with exponential backoff, or give up after the last one."""
        tries = lease.attempts
        log.warning("job %s: %s attempt %d failed: %s", lease.job_id, lease.kind, tries, exc)
        if tries >= self.attempts:
            self._record(lease, self._given_up(exc), f"failed after {tries} tries: {exc}")
            return
        at = time.time() + self.backoff * 2 ** (tries - 1)
        values = {"next_try_at": at, "lease_owner": None, "lease_until": None}
        if self._record(lease, {**values, "last_error": str(exc)}, None):
            self._next_retry = min(self._next_retry, at)
            self._wake.set()  # the loop's next pause ends by then

    @staticmethod
    def _given_up(exc: Exception) -> dict[str, Any]:
        values = {"state": FAILED, "done_at": time.time(), "last_error": str(exc)}
        return {**values, "lease_owner": None, "lease_until": None}

    def _record(self, lease: Lease, values: dict[str, Any] | None, state: str | None) -> bool:
        """`settle`, retried through a database outage while the lease lasts."""
        what = f"job {lease.job_id}: record its {lease.kind}"
        settled = lambda: settle(self.store, lease, self.owner, values, state)  # noqa: E731
        try:
            done = retry(settled, what, self.outages, self.lease, self._stop)
        except Exception:
            log.exception("%s (the lease runs out and it is tried again)", what)
            return False
        if not done:
            log.warning("%s: the row was taken over or deleted meanwhile", what)
        elif state is not None:
            level = logging.INFO if state == "sent" else logging.WARNING
            log.log(level, "job %s: %s %s", lease.job_id, lease.kind, state)
        return done
