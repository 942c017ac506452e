"""The jobs' part of the service's configuration: the queue, its limits, e-mail and webhooks,
read from `T2A_*` environment variables.

`JobsConfig` is one of the two field groups of `api.config.ServiceConfig`, the one configuration
object a process loads (never built alone). Every field is documented in the README ("Jobs").
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobsConfig(BaseSettings):
    """Queue, limits, notifications; each field is read from `T2A_<FIELD NAME IN CAPITALS>`."""

    model_config = SettingsConfigDict(env_prefix="T2A_", extra="ignore")

    # -- storage and queue ---------------------------------------------------------------
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the job records, e.g. 'postgresql+psycopg://u:p@db/t2a' "
        "(default: sqlite file OUTPUT_DIR/jobs.db).",
    )
    queue_url: str | None = Field(
        None,
        description="The huey queue: 'redis://host:6379/0', 'postgresql://u:p@db/t2a' or "
        "'sqlite:///path/queue.db' (default: sqlite file OUTPUT_DIR/queue.db).",
    )
    auto_migrate: bool = Field(
        True,
        description="Upgrade the job database's schema at start (false: refuse to start until "
        "`text2art db upgrade` has run; for several nodes).",
    )
    queue_name: str = Field("text2art", description="Queue name, shared by API and workers.")
    run_worker_in_process: bool = Field(
        True, description="`text2art serve` also runs jobs (false: only `text2art worker` does)."
    )
    worker_threads: int = Field(
        1, ge=1, le=16, description="Jobs a worker process takes at once (they share one GPU)."
    )
    # -- limits -------------------------------------------------------------------------
    max_queued: int = Field(100, ge=1, description="Queued jobs; one more gets 503.")
    queue_retry_after: int = Field(
        60, ge=1, description="Seconds sent in Retry-After when the queue is full."
    )
    rate_limit: int = Field(
        10, ge=0, description="Submissions per client per RATE_LIMIT_WINDOW seconds (0: off)."
    )
    rate_limit_window: int = Field(60, ge=1, description="Window of the rate limit, in seconds.")
    # -- progress, cancel and the dead-worker policy -------------------------------------
    preview_every: int = Field(
        10, ge=1, description="Iterations between two preview images of a running job."
    )
    progress_interval: float = Field(
        0.25, gt=0, description="Seconds between two progress writes (and SSE events)."
    )
    max_listeners_per_client: int = Field(
        20, ge=1, description="Event streams (GET /jobs/{id}/events) one client may hold open."
    )
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="A running job's worker writes a heartbeat this often."
    )
    stale_after_seconds: float = Field(
        120.0,
        gt=0,
        description="A running job with no heartbeat for this long has a dead worker.",
    )
    max_requeues: int = Field(
        1, ge=0, le=10, description="Times a job whose worker died is queued again before failing."
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds a stopping worker waits for its running jobs to stop."
    )
    # -- scale-out: outages, reconciling, health --------------------------------------------
    reconcile_seconds: float = Field(
        15.0,
        gt=0,
        description="A job queued in the database but missing from the queue (lost by the "
        "broker) is enqueued again by a worker within about twice this many seconds.",
    )
    db_retry_seconds: float = Field(
        600.0,
        ge=0,
        description="How long a worker retries (with backoff) the claim, the end and the "
        "hand-back of a job while the database or queue is down.",
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="`text2art worker` serves /healthz, /readyz and /metrics on this port "
        "(none: no health server).",
    )
    health_host: str = Field(
        "127.0.0.1", description="Address of the worker's health server (0.0.0.0: every one)."
    )
    # -- links ---------------------------------------------------------------------------
    public_url: str | None = Field(
        None,
        description="Base URL of links in e-mails and webhooks, e.g. 'https://art.example.org' "
        "(default: the URL the job was submitted to).",
    )
    # -- e-mail --------------------------------------------------------------------------
    smtp_host: str | None = Field(None, description="SMTP server; e-mail is off without one.")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port (587 STARTTLS, 465 SSL).")
    smtp_security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="starttls, ssl (implicit TLS) or none (a local relay only)."
    )
    smtp_user: str | None = Field(None, description="SMTP login (none: no login).")
    smtp_password: str | None = Field(None, repr=False, description="SMTP password.")
    smtp_sender: str = Field(
        "text2art <text2art@localhost>", description="From: address of the e-mails."
    )
    smtp_timeout: float = Field(30.0, gt=0, description="Seconds before an SMTP call gives up.")
    email_max_attachment_bytes: int = Field(
        20 * 1024 * 1024,
        ge=0,
        description="Larger files (a long video) are linked, not attached.",
    )
    # -- delivery retries (e-mail and webhooks) -------------------------------------------
    notify_attempts: int = Field(5, ge=1, le=20, description="Tries per e-mail or webhook.")
    notify_backoff: float = Field(
        5.0, ge=0, description="Seconds before the second try; doubled after each failure."
    )
    # -- webhooks ------------------------------------------------------------------------
    webhook_secret: str | None = Field(
        None,
        repr=False,
        description="Signs webhooks: X-Text2Art-Signature: sha256=HMAC(secret, body).",
    )
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds before a webhook POST fails.")
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhooks to loopback/private addresses (off: no SSRF into your LAN).",
    )

    def resolved_database_url(self, output_dir: Path) -> str:
        """The job database's URL: the configured one or a SQLite file in `output_dir`.

        A plain `postgresql://` or `postgres://` URL, as providers hand them out, gets the
        psycopg driver that text2art installs (SQLAlchemy would look for psycopg2).
        """
        url = self.database_url or f"sqlite:///{(output_dir / 'jobs.db').resolve()}"
        scheme, sep, rest = url.partition("://")
        if scheme in ("postgresql", "postgres"):
            return f"postgresql+psycopg{sep}{rest}"
        return url

    def resolved_queue_url(self, output_dir: Path) -> str:
        """The huey queue's URL: the configured one or a SQLite file in `output_dir`."""
        return self.queue_url or f"sqlite:///{(output_dir / 'queue.db').resolve()}"
