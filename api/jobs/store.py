"""Job records in a SQL database through SQLAlchemy 2.x (a SQLite file or any SQLAlchemy URL).

The database is the source of truth: the queue only carries job ids. Every change of state is a
conditional UPDATE (`... WHERE status = 'queued'`), so two workers, a worker and a cancel, or two
reapers never both win; `version` grows with every change and is the SSE event id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from api.jobs.engine import make_engine
from api.jobs.migrate import ensure_schema
from api.jobs.outbox_table import EMAIL, PENDING, WEBHOOK, add_notices, drop_notices
from api.jobs.tables import Base

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})


class Job(Base):
    """One generation request and everything known about its run (times are epoch seconds)."""

    __tablename__ = "t2a_jobs"
    __table_args__ = (
        Index("ix_t2a_jobs_status_seq", "status", "seq"),
        Index("ix_t2a_jobs_gallery", "public", "status", "seq"),
        Index("ix_t2a_jobs_client", "client_id", "created_at"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # FIFO order
    id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the form values as sent
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)  # resolved engine.Settings
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    base_url: Mapped[str] = mapped_column(Text, default="")  # where it was submitted (links)
    delete_token_hash: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, default=None)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker claimed it
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, default=None)
    run_seconds: Mapped[float | None] = mapped_column(Float, default=None)  # engine time so far
    preview_iteration: Mapped[int | None] = mapped_column(Integer, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # kept output keys: png, mp4, svg, and 1.png, 1.svg, ... for the pictures of a batch
    outputs: Mapped[list[str]] = mapped_column(JSON, default=list)
    email_state: Mapped[str | None] = mapped_column(String(200), default=None)
    webhook_state: Mapped[str | None] = mapped_column(String(200), default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    enqueued_at: Mapped[float | None] = mapped_column(Float, default=None)  # last put on the queue
    # the iteration this attempt continued at from a saved run state (0: a fresh start)
    resumed_from: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    warning: Mapped[str | None] = mapped_column(Text, default=None)  # did not fail the job
    estimate_seconds: Mapped[float | None] = mapped_column(Float, default=None)  # api.cost

    @property
    def prompt(self) -> str:
        """The text prompts of the job."""
        return str(self.settings.get("prompts", ""))


class Worker(Base):
    """One worker process, alive while its heartbeat is fresh (times are epoch seconds)."""

    __tablename__ = "t2a_workers"
    __table_args__ = (Index("ix_t2a_workers_heartbeat", "heartbeat_at"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:token
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    running: Mapped[int] = mapped_column(Integer, default=0)  # jobs it runs now


class Admission(Base):
    """One admitted submission (`POST /jobs` or `/generate`): what the rate limit counts."""

    __tablename__ = "t2a_admissions"
    __table_args__ = (
        Index("ix_t2a_admissions_client", "client_id", "at"),
        Index("ix_t2a_admissions_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)


def hash_token(token: str) -> str:
    """SHA-256 of a delete token (only the hash is stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh secret delete token."""
    return secrets.token_urlsafe(32)


def token_matches(token: str, job: Job) -> bool:
    """Whether `token` is the job's delete token (constant-time comparison)."""
    return hmac.compare_digest(hash_token(token), job.delete_token_hash)


def _back_in_queue() -> dict[str, Any]:
    """The fields of a running job put back on the queue: no worker, no progress, stamped now."""
    return {
        "status": QUEUED, "worker_id": None, "heartbeat_at": None, "iteration": 0,
        "preview_iteration": None, "started_at": None, "enqueued_at": time.time(),
    }  # fmt: skip


class JobStore:
    """All reads and writes of job records; returns detached `Job` rows.

    Building one touches nothing, not even the database driver (its import fails without the
    `postgres` extra): the SQLAlchemy engine is made on first use, and connects when it is used.
    `open()` brings the schema to the newest revision (or refuses, see `api.jobs.migrate`)
    before any job is read.
    """

    def __init__(self, url: str, auto_migrate: bool = True, deadline: float | None = None):
        self.url, self.auto_migrate, self.deadline = url, auto_migrate, deadline
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._making = threading.Lock()  # threads that ask first share one engine

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (made on first use)."""
        return self._made()[0]

    def _made(self) -> tuple[Engine, sessionmaker[Session]]:
        """The engine and its session factory, made on first use."""
        with self._making:
            if self._engine is None or self._sessions is None:
                self._engine = make_engine(self.url, self.deadline)
                self._sessions = sessionmaker(self._engine, expire_on_commit=False)
            return self._engine, self._sessions

    def open(self) -> JobStore:
        """Check the schema (the Alembic revisions, never create_all) and upgrade it if allowed;
        returns the store. A SQLite file's folder is made first."""
        database = self.engine.url.database
        if self.engine.url.get_backend_name() == "sqlite" and database not in (None, ":memory:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        ensure_schema(self.engine, self.auto_migrate)
        return self

    def close(self) -> None:
        """Close every pooled connection (if any was made)."""
        if self._engine is not None:
            self._engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed at the end of the block (rolled back on error)."""
        with self._made()[1].begin() as session:
            yield session

    # -- create and read -----------------------------------------------------------------
    def add(self, job: Job) -> Job:
        """Insert a new job."""
        with self.session() as s:
            s.add(job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        with self.session() as s:
            return s.scalar(select(Job).where(Job.id == job_id))

    def position(self, job: Job) -> int | None:
        """Queued jobs ahead of this one (0: it starts next); None unless it is queued."""
        if job.status != QUEUED:
            return None
        with self.session() as s:
            ahead = select(func.count()).where(Job.status == QUEUED, Job.seq < job.seq)
            return int(s.scalar(ahead) or 0)

    def count(self, status: str) -> int:
        """How many jobs have this status."""
        with self.session() as s:
            return int(s.scalar(select(func.count()).where(Job.status == status)) or 0)

    def ids(self, status: str) -> list[str]:
        """Ids of the jobs with this status, in submission order."""
        with self.session() as s:
            return list(s.scalars(select(Job.id).where(Job.status == status).order_by(Job.seq)))

    def gallery(self, page: int, per_page: int) -> tuple[list[Job], int]:
        """Public succeeded jobs, newest first, one page; and how many there are."""
        where = (Job.public.is_(True), Job.status == SUCCEEDED)
        with self.session() as s:
            total = int(s.scalar(select(func.count()).where(*where)) or 0)
            query = select(Job).where(*where).order_by(Job.seq.desc())
            rows = s.scalars(query.offset((page - 1) * per_page).limit(per_page))
            return list(rows), total

    def recent_durations(self, limit: int = 20) -> list[float]:
        """Engine seconds of the latest succeeded jobs (for queue ETAs)."""
        with self.session() as s:
            query = (
                select(Job.run_seconds)
                .where(Job.status == SUCCEEDED, Job.run_seconds.is_not(None))
                .order_by(Job.seq.desc())
                .limit(limit)
            )
            return [float(v) for v in s.scalars(query) if v is not None]

    # -- state changes (conditional: each returns whether it applied) ----------------------
    def _update(self, job_id: str, where: Sequence[Any], **values: Any) -> bool:
        values.setdefault("version", Job.version + 1)
        with self.session() as s:
            result = s.execute(update(Job).where(Job.id == job_id, *where).values(**values))
            return bool(getattr(result, "rowcount", 0))

    def claim(self, job_id: str, worker_id: str) -> Job | None:
        """queued -> running for this worker; None if the job is gone, cancelled or taken."""
        now = time.time()
        values: dict[str, Any] = {"status": RUNNING, "worker_id": worker_id, "started_at": now}
        values.update(heartbeat_at=now, attempts=Job.attempts + 1, iteration=0, loss=None)
        values.update(resumed_from=0)
        if not self._update(job_id, [Job.status == QUEUED], **values):
            return None
        return self.get(job_id)

    def progress(self, job_id: str, worker_id: str, **values: Any) -> bool:
        """Record progress of a running job (iteration, total, loss, preview_iteration, ...)."""
        values["heartbeat_at"] = time.time()
        return self._update(job_id, self._owned(worker_id), **values)

    def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """The worker is alive (not a visible change: the version stays)."""
        where = self._owned(worker_id)
        return self._update(job_id, where, heartbeat_at=time.time(), version=Job.version)

    def finish(self, job_id: str, worker_id: str, status: str, **values: Any) -> bool:
        """running -> a final status, by the worker that runs it (with its notices)."""
        assert status in FINAL
        values.update(status=status, finished_at=time.time(), heartbeat_at=None)
        return self._end(job_id, self._owned(worker_id), **values)

    def _end(self, job_id: str, where: Sequence[Any], **values: Any) -> bool:
        """A conditional move into a final state and, in the same transaction and only when it
        applied, the job's outbox rows (`api.jobs.outbox_table`) with their states pending."""
        values.setdefault("version", Job.version + 1)
        with self.session() as s:
            result = s.execute(update(Job).where(Job.id == job_id, *where).values(**values))
            if not getattr(result, "rowcount", 0):
                return False
            job = s.execute(select(Job.status, Job.email, Job.webhook_url).where(Job.id == job_id))
            status, email, webhook_url = job.one()
            kinds = [EMAIL] if email and status in (SUCCEEDED, FAILED) else []
            added = add_notices(s, job_id, kinds + ([WEBHOOK] if webhook_url else []))
            if added:
                states = {f"{kind}_state": PENDING for kind in added}
                s.execute(update(Job).where(Job.id == job_id).values(**states))
            return True

    def release(self, job_id: str, worker_id: str) -> bool:
        """running -> queued after a clean worker shutdown; the attempt does not count."""
        where, values = self._owned(worker_id), _back_in_queue()
        return self._update(job_id, where, attempts=Job.attempts - 1, **values)

    def cancel_queued(self, job_id: str) -> bool:
        """queued -> cancelled (it never starts)."""
        values = {"status": CANCELLED, "finished_at": time.time()}
        return self._end(job_id, [Job.status == QUEUED], **values)

    def request_cancel(self, job_id: str) -> bool:
        """Ask the worker of a running job to stop (it ends as cancelled)."""
        return self._update(job_id, [Job.status == RUNNING], cancel_requested=True)

    def requeue_dead(self, job: Job, spend: bool = True) -> bool:
        """running (dead worker) -> queued, if nobody changed it since `job` was read; without
        `spend`, its last claim does not count (an outage, not the job, stopped it)."""
        values = _back_in_queue() if spend else {**_back_in_queue(), "attempts": Job.attempts - 1}
        return self._update(job.id, self._unchanged(job), **values)

    def queued_before(self, before: float) -> list[Job]:
        """Queued jobs last put on the queue before `before` (candidates the queue lost)."""
        stamp = Job.enqueued_at
        with self.session() as s:
            query = select(Job).where(Job.status == QUEUED, (stamp < before) | stamp.is_(None))
            return list(s.scalars(query.order_by(Job.seq)))

    def mark_enqueued(self, job: Job, now: float) -> bool:
        """Stamp a queued job as put on the queue again, if nobody did since `job` was read."""
        stamp = Job.enqueued_at
        same = stamp.is_(None) if job.enqueued_at is None else stamp == job.enqueued_at
        where = [Job.status == QUEUED, same]
        return self._update(job.id, where, enqueued_at=now, version=Job.version)

    # -- workers and reachability ----------------------------------------------------------
    def ping(self) -> None:
        """Raise if the database cannot be reached (a cheap `SELECT 1`)."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def worker_beat(self, worker: Worker) -> None:
        """Insert or refresh a worker's row (its heartbeat and running count)."""
        with self.session() as s:
            s.merge(worker)

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        with self.session() as s:
            s.execute(delete(Worker).where(Worker.id == worker_id))

    def live_workers(self, since: float) -> list[Worker]:
        """Workers whose heartbeat is newer than `since`; rows silent for a day are removed."""
        with self.session() as s:
            s.execute(delete(Worker).where(Worker.heartbeat_at < since - 86400))
            return list(s.scalars(select(Worker).where(Worker.heartbeat_at >= since)))

    def end_dead(self, job: Job, status: str, error: str | None = None) -> bool:
        """running (dead worker) -> failed or cancelled, if unchanged since `job` was read."""
        assert status in FINAL
        values = {"status": status, "error": error, "finished_at": time.time()}
        return self._end(job.id, self._unchanged(job), heartbeat_at=None, **values)

    def set_fields(self, job_id: str, **values: Any) -> bool:
        """Set plain fields (notification states) without a visible change."""
        return self._update(job_id, [], version=Job.version, **values)

    def delete(self, job_id: str) -> bool:
        """Remove the record and its notices still to send."""
        with self.session() as s:
            drop_notices(s, job_id)
            result = s.execute(delete(Job).where(Job.id == job_id))
            return bool(getattr(result, "rowcount", 0))

    def owned(self, worker_id: str) -> list[Job]:
        """The running jobs recorded as this worker's."""
        with self.session() as s:
            return list(s.scalars(select(Job).where(*self._owned(worker_id)).order_by(Job.seq)))

    def running(self) -> list[Job]:
        """Every running job (for the dead-worker check)."""
        with self.session() as s:
            return list(s.scalars(select(Job).where(Job.status == RUNNING)))

    @staticmethod
    def _owned(worker_id: str) -> list[Any]:
        return [Job.status == RUNNING, Job.worker_id == worker_id]

    @staticmethod
    def _unchanged(job: Job) -> list[Any]:
        beat = Job.heartbeat_at
        same_beat = beat.is_(None) if job.heartbeat_at is None else beat == job.heartbeat_at
        return [Job.status == RUNNING, Job.version == job.version, same_beat]
