"""A worker's start-up check: can it reach the queue, the database, the bucket and its device?

A worker that joins a site from far away (a Colab notebook, a rented GPU) fails most often on
configuration: a secret not set, a URL mistyped, a port a firewall drops, no GPU in the runtime.
`preflight` tries each part once, with short timeouts, and says what is wrong in one line per
part (`Problem.line`), so `text2art worker` and `scripts/run_colab.py --worker` print that
instead of a traceback from deep inside a driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.errors import one_line
from api.jobs.config import ServiceConfig
from api.jobs.outage import REASON_CHARS

if TYPE_CHECKING:
    from api.storage import ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One part the worker cannot use, and why."""

    part: str  # queue | database | bucket | device
    target: str  # what was tried (a URL without its password, a device name)
    reason: str

    @property
    def line(self) -> str:
        """`queue redis://host:6379/0: ConnectionError: ...`."""
        return f"{self.part} {self.target}: {self.reason}"


def redact(url: str) -> str:
    """The URL without its password (user names and hosts stay: they help)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy-shaped URL: drop everything between :// and @
        head, sep, rest = url.partition("://")
        return head + sep + rest.rpartition("@")[2] if "@" in rest else url


def preflight(
    config: ServiceConfig,
    device_error: Callable[[str | None], str | None],
    artifacts: ArtifactStore | None = None,
) -> list[Problem]:
    """Every part the worker cannot use now (empty: all answer)."""
    problems = []
    database = config.resolved_database_url(config.output_dir)
    queue = config.resolved_queue_url(config.output_dir)
    for part, target, check in (
        ("queue", queue, lambda: _ping_queue(queue, config.queue_name)),
        ("database", database, lambda: _ping_database(database)),
        (
            "bucket",
            config.storage_url or str(config.output_dir),
            lambda: _check_store(config, artifacts),
        ),
    ):
        try:
            check()
        except Exception as exc:
            log.debug("preflight: %s failed", part, exc_info=True)
            problems.append(
                Problem(part, redact(target), one_line(exc.__cause__ or exc, REASON_CHARS))
            )
    reason = device_error(config.device)
    if reason is not None:
        problems.append(Problem("device", config.device or "auto", reason))
    return problems


def _ping_queue(url: str, name: str) -> None:
    from api.jobs.queue import JobQueue

    queue = JobQueue(url, name)
    try:
        queue.ping()
    finally:
        queue.close()


def _ping_database(url: str) -> None:
    from sqlalchemy import select

    from api.jobs.store import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(select(1))
    finally:
        engine.dispose()


def _check_store(config: ServiceConfig, artifacts: ArtifactStore | None) -> None:
    from api.artifacts import open_artifact_store

    store = artifacts or open_artifact_store(config)
    store.prepare()
    store.check()  # writes, reads and removes a sentinel
