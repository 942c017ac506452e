"""A worker's start-up check: can it reach the queue, the database, the bucket and its device?

A worker that joins a site from far away (a Colab notebook, a rented GPU) fails most often on
configuration: a secret not set, a URL mistyped, a port a firewall drops, no GPU in the runtime.
`preflight` tries each part once, with short timeouts, through the very objects the worker will
run with (its `JobService`'s queue, database and artifact store: nothing is opened twice), and
says what is wrong in one line per part (`Problem.line`), so `text2art worker` and
`scripts/run_colab.py --worker` print that instead of a traceback from deep inside a driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.jobs.outage import REASON_CHARS
from engine.errors import one_line

if TYPE_CHECKING:
    from api.jobs.service import JobService

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


def preflight(jobs: JobService, device_error: Callable[[str | None], str | None]) -> list[Problem]:
    """Every part the worker cannot use now (empty: all answer)."""
    problems = []
    config = jobs.config
    for part, target, check in (
        ("queue", jobs.queue.url, lambda: jobs.queue.open().ping()),
        ("database", config.resolved_database_url(config.output_dir), jobs.store.ping),
        ("bucket", config.storage_url or str(config.output_dir), lambda: _check(jobs)),
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


def _check(jobs: JobService) -> None:
    """The artifact store takes a write, gives it back and removes it (a sentinel)."""
    jobs.artifacts.prepare()
    jobs.artifacts.check()
