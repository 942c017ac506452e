"""The job queue: huey, carrying job ids from the API to the workers.

`SqliteHuey` (a file beside the outputs) by default; `PriorityRedisHuey` or `PostgresHuey` when
`T2A_QUEUE_URL` names one, so the same code runs embedded in `text2art serve` or with many
`text2art worker` processes, one per GPU. Every backend keeps priorities: a job handed back by a
stopping or dead worker goes ahead of newer ones (huey's plain Redis storage has none, hence its
sorted-set flavour). A worker runs huey's `Consumer` in threads; it is started and stopped by
its owner (the app's lifespan or the worker command), never at import.

Whatever the broker raises from `enqueue`, `requeue`, `pending_ids` or `ping` comes out as
`QueueUnavailable`: the callers tell an outage from a bug by that type alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from huey import MemoryHuey, PostgresHuey, PriorityRedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer

from api.jobs.engine import POSTGRES_CONNECT_ARGS
from api.jobs.errors import QueueUnavailable
from api.jobs.outage import OUTAGE_GAP
from engine.errors import one_line

T = TypeVar("T")
CONNECT_TIMEOUT = 5  # seconds before a connection to the broker counts as refused

log = logging.getLogger(__name__)

QUEUE_SCHEMES = ("sqlite", "redis", "rediss", "postgresql", "postgres", "memory")


def make_huey(url: str, name: str) -> Huey:
    """A huey instance for the queue URL (sqlite:///file, redis://..., postgresql://...)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]  # 'postgresql+psycopg' -> 'postgresql'
    if scheme == "sqlite":
        path = Path(url.split("://", 1)[1].removeprefix("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=str(path), results=False)
    if scheme in ("redis", "rediss"):
        from redis import ConnectionPool

        pool = ConnectionPool.from_url(  # read timeout above huey's 1 s blocking pop
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=10, socket_keepalive=True
        )
        return PriorityRedisHuey(name, connection_pool=pool, results=False)
    if scheme in ("postgresql", "postgres"):
        dsn = parts._replace(scheme="postgresql").geturl()  # psycopg wants a plain scheme
        return _postgres_huey(name, dsn)
    if scheme == "memory":  # one process only: for tests
        return MemoryHuey(name, results=False)
    raise ValueError(
        f"unknown queue URL {url!r}; use one of the schemes {', '.join(QUEUE_SCHEMES)}"
    )


# What PostgreSQL raises when two processes create huey's tables at the same moment: the
# loser's `CREATE TABLE IF NOT EXISTS` collides in the catalogue (e.g. two workers starting).
_DDL_RACE = ("UniqueViolation", "DuplicateTable", "DuplicateObject")


# The job database's deadlines (`api.jobs.engine`: TCP keepalives, unacknowledged writes, a
# statement timeout) on the queue's own connections too, with the queue's quicker connect.
QUEUE_CONNECT_ARGS = {**POSTGRES_CONNECT_ARGS, "connect_timeout": CONNECT_TIMEOUT}


def _postgres_huey(name: str, dsn: str, tries: int = 3) -> Huey:
    """`PostgresHuey`, which creates its tables at start; a lost creation race is tried again
    (the tables exist by then, and `IF NOT EXISTS` passes)."""
    for attempt in range(1, tries + 1):
        try:
            return PostgresHuey(name, dsn=dsn, results=False, **QUEUE_CONNECT_ARGS)
        except Exception as exc:
            if attempt == tries or type(exc).__name__ not in _DDL_RACE:
                raise
            log.info("queue tables created by another process meanwhile; trying again")
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


# What a broker's client raises when its server cannot be reached (psycopg, psycopg2, redis).
_BROKER_DOWN = ("OperationalError", "InterfaceError", "ConnectionError", "TimeoutError")
_CONSUMER_LOGGERS = ("huey.consumer.Worker", "huey.consumer.Scheduler")


class _OutageOnce(logging.Filter):
    """huey's consumer logs a traceback each time it cannot read the queue, about once a second
    per thread during an outage: this keeps one warning an outage, without the traceback (other
    errors pass untouched)."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -math.inf
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        down = isinstance(exc, (OSError, QueueUnavailable)) or type(exc).__name__ in _BROKER_DOWN
        if exc is None or not down:
            return True
        now = time.monotonic()
        with self._lock:
            new, self._last = now - self._last >= OUTAGE_GAP, now
        if new:
            record.msg = f"{record.getMessage()}: the queue is unavailable ({one_line(exc)})"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return new


def quiet_consumer_outages() -> None:
    """Install `_OutageOnce` on huey's consumer loggers (once per process)."""
    for name in _CONSUMER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OutageOnce) for f in logger.filters):
            logger.addFilter(_OutageOnce())


class _ThreadConsumer(Consumer):
    """huey's consumer without signal handlers: the process's owner (uvicorn, the CLI) has them."""

    def _set_signal_handlers(self) -> None:
        pass


def _broker_call(method: Callable[..., T]) -> Callable[..., T]:
    """Turn any error of the broker into `QueueUnavailable` (naming the original)."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except QueueUnavailable:
            raise
        except Exception as exc:
            error: Exception = exc
            if _drop_broken_connection(args[0]):  # a server restarted since: one new connection
                try:
                    return method(*args, **kwargs)
                except Exception as again:
                    error = again
            name = type(error).__name__
            raise QueueUnavailable(f"the job queue is unavailable ({name})") from error

    return call


def _drop_broken_connection(queue: Any) -> bool:
    """Close the SQL broker's shared connection if the server dropped it (PostgreSQL restarted:
    huey keeps using the dead one otherwise); whether it did."""
    storage = getattr(getattr(queue, "_huey", None), "storage", None)
    conn = getattr(storage, "_conn", None)
    if conn is None or not (getattr(conn, "broken", False) or getattr(conn, "closed", False)):
        return False
    log.info("the queue's connection was lost; connecting again")
    with contextlib.suppress(Exception):
        storage.close()  # type: ignore[union-attr]
    return True


class JobQueue:
    """Enqueue job ids; optionally consume them in threads, calling `handler(job_id)`.

    Building one touches no broker; `open()` connects (a SQLite file or PostgreSQL's tables are
    created there). Its owner opens it at start; any use opens it first if nobody did.
    """

    def __init__(self, url: str, name: str):
        self.url, self.name = url, name
        self._huey: Huey | None = None
        self._task: Any = None
        self._handler: Callable[[str], None] | None = None
        self._consumer: Consumer | None = None

    def open(self) -> JobQueue:
        """Connect to the broker (once; again is a no-op); returns the queue."""
        if self._huey is None:
            huey = make_huey(self.url, self.name)
            self._task = huey.task(name="run_job")(self._run)
            self._huey = huey
        return self

    @property
    def huey(self) -> Huey:
        """The huey instance (opened on first use)."""
        huey = self.open()._huey
        assert huey is not None
        return huey

    def _run(self, job_id: str) -> None:
        assert self._handler is not None, "a worker dequeued a job without a handler"
        self._handler(job_id)

    @_broker_call
    def enqueue(self, job_id: str) -> None:
        """Put a job id at the end of the queue."""
        self.open()._task(job_id)

    @_broker_call
    def requeue(self, job_id: str) -> None:
        """Put a job id back ahead of newer jobs (it was submitted before them)."""
        self.open()._task(job_id, priority=1)

    @_broker_call
    def pending_ids(self) -> set[str]:
        """Job ids waiting in the queue (read without removing them)."""
        return {str(task.args[0]) for task in self.huey.pending() if task.args}

    @_broker_call
    def ping(self) -> int:
        """How many entries wait in the queue; raises `QueueUnavailable` if it cannot tell."""
        return int(self.huey.storage.queue_size())

    def start_consumer(self, handler: Callable[[str], None], threads: int = 1) -> None:
        """Run `handler(job_id)` for each dequeued job in `threads` worker threads."""
        assert self._consumer is None, "consumer already started"
        self._handler = handler
        quiet_consumer_outages()
        # Poll an empty SQLite queue every 0.1 s, backing off to 1 s (Redis/Postgres block).
        self._consumer = _ThreadConsumer(
            self.huey, workers=threads, periodic=False, initial_delay=0.1, max_delay=1.0
        )
        self._consumer.start()
        log.info("job worker started (%d thread(s))", threads)

    def stop_consumer(self, timeout: float) -> None:
        """Stop taking jobs; wait up to `timeout` s for the running ones to return."""
        if self._consumer is None:
            return
        self._consumer.shutdown_timeout = timeout
        self._consumer.stop(graceful=True)
        self._consumer = None

    def close(self) -> None:
        """Close the queue's storage connection (if it was opened)."""
        if self._huey is not None:
            self._huey.storage.close()
