"""The SQLAlchemy engine of the job database: PostgreSQL with deadlines on every connection,
SQLite with WAL and a busy timeout."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from api.jobs.watchdog import Watchdog

# Deadlines of a PostgreSQL connection (libpq's parameters): a connect gives up after 10 s; TCP
# keepalives find a dead peer in about 30 s and unacknowledged writes give up after 30 s, so a
# vanished server or path ends in an error (an outage, retried) instead of a hung worker; the
# server ends a statement after 60 s and a session idle inside a transaction (holding the
# admission lock) after 60 s.
POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
    "keepalives_count": 4, "tcp_user_timeout": 30_000,
    "options": "-c statement_timeout=60000 -c idle_in_transaction_session_timeout=60000",
}  # fmt: skip


def make_engine(url: str, deadline: float | None = None) -> Engine:
    """A SQLAlchemy engine; SQLite gets WAL and a busy timeout so threads and processes share it.
    With a `deadline` (seconds), a PostgreSQL call still waiting for its reply then has its
    connection cut (`api.jobs.watchdog`)."""
    if url.startswith("postgres"):  # a dropped packet must not hang a worker for minutes
        engine = create_engine(url, pool_pre_ping=True, connect_args=POSTGRES_CONNECT_ARGS)
        if deadline:
            Watchdog(deadline).attach(engine)
        return engine
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine
