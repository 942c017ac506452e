"""The service's configuration, read from `T2A_*` environment variables (pydantic-settings).

`ServiceConfig` is the one configuration object of a process (`text2art serve`, `text2art
worker`): its entry point builds it once, `ServiceConfig()` (the environment; the commands go
through `api.cli_common.load_config`) or `ServiceConfig(clip_models=["tiny-random"], ...)`
(tests), and hands it to `create_app` or `build_services`; nothing reads the environment again.
Its fields come in two groups, `ApiConfig` (the HTTP service) and `JobsConfig` (the queue, its
limits, e-mail and webhooks); each module takes the group it reads. Nothing is read at import
time.

Every field is documented in the README ("HTTP service" and "Jobs" sections).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine import Limits


def _limit(name: str) -> Any:
    """The `engine.Limits` field (default, bounds, description), so the two never disagree."""
    info: FieldInfo = copy.deepcopy(Limits.model_fields[name])
    return info


def _split_commas(value: Any) -> Any:
    """'a, b' -> ['a', 'b'] (environment variables hold comma-separated lists)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A list read from one comma-separated variable instead of pydantic-settings' JSON.
CommaList = Annotated[list[str], NoDecode]


class ApiConfig(BaseSettings):
    """The HTTP service's fields of `ServiceConfig`; each is read from `T2A_<FIELD NAME>`."""

    model_config = SettingsConfigDict(env_prefix="T2A_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address `text2art serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `text2art serve` listens on.")
    device: str | None = Field(
        None, description="torch device for every run, e.g. 'cuda:0' (default: cuda if any)."
    )
    output_dir: Path = Field(
        Path("outputs"), description="Where every result (PNG, MP4, SVG) and upload is kept."
    )
    storage_url: str | None = Field(
        None,
        description="Where results, previews and uploads are kept: a directory, or "
        "'s3://BUCKET/PREFIX' for S3-compatible storage (default: OUTPUT_DIR; with a bucket, "
        "OUTPUT_DIR only stages files).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO, R2, GCS... (default: AWS S3)."
    )
    s3_region: str | None = Field(
        None, description="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION)."
    )
    s3_presign: bool = Field(
        False, description="Serve outputs by a 302 to a presigned URL instead of streaming them."
    )
    s3_presign_expiry: int = Field(
        3600, ge=1, le=7 * 24 * 3600, description="Seconds a presigned output URL is valid."
    )
    cors_origins: CommaList = Field(
        default_factory=lambda: ["*"],
        description="Origins allowed by CORS, comma-separated; '*' is any origin "
        "(credentials are never allowed).",
    )
    max_waiting: int = Field(
        8, ge=0, description="Requests that may wait for the GPU; one more gets 503."
    )
    retry_after: int = Field(
        30, ge=1, description="Seconds sent in Retry-After with a 503 when the GPU is busy."
    )
    api_keys: CommaList = Field(
        default_factory=list,
        repr=False,  # secrets stay out of logs
        description="Comma-separated API keys; when set, generation needs "
        "'Authorization: Bearer <key>'.",
    )
    clip_models: CommaList | None = Field(
        None,
        description="CLIP models for every request, comma-separated (e.g. 'tiny-random'); "
        "overrides the quality presets.",
    )
    vqgan_model: str | None = Field(
        None, description="VQGAN checkpoint for every request (e.g. 'tiny-random')."
    )
    cutouts: int | None = Field(
        None, ge=1, description="Cutouts per step for every request (default: the engine's)."
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest uploaded image, in bytes."
    )
    max_upload_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Largest uploaded image in pixels (guards against decompression bombs).",
    )
    preload: bool = Field(
        True, description="Load the default quality's models and warm up at start-up."
    )
    max_request_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1,
        description="Largest request body, in bytes (all uploads and fields together); a larger "
        "one gets 413 before it is read.",
    )
    read_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client may take to send a request's headers, and to send each "
        "part of its body (a slower body gets 408); the connection is closed after.",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle kept-alive connection stays open."
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Connections and requests `text2art serve` holds at once; one more request "
        "gets 503.",
    )
    trusted_proxies: CommaList = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For/-Proto are believed, "
        "comma-separated (e.g. '127.0.0.1' behind a local nginx or ngrok; default: none).",
    )
    max_cost: float | None = Field(
        None,
        gt=0,
        description="Ceiling of a request's estimated run time in seconds (api.cost); a "
        "costlier one gets 422 with the estimate and the fields to lower (default: 14400 on "
        "a CPU, 3600 on a GPU).",
    )
    # Limits of every request (engine.Limits), e.g. T2A_MAX_PIXELS.
    max_pixels: int = _limit("max_pixels")
    max_iterations: int = _limit("max_iterations")
    max_cutouts: int = _limit("max_cutouts")
    max_prompt_chars: int = _limit("max_prompt_chars")
    max_prompts: int = _limit("max_prompts")
    max_strokes: int = _limit("max_strokes")
    max_scale: float = _limit("max_scale")
    max_variations: int = _limit("max_variations")
    max_frames: int = _limit("max_frames")

    _split = field_validator(
        "cors_origins", "api_keys", "clip_models", "trusted_proxies", mode="before"
    )(_split_commas)

    def proxy_options(self, local_proxy: bool = False) -> dict[str, Any]:
        """uvicorn's options for forwarded headers: believed only from the trusted proxies
        (with `local_proxy`, an ngrok agent on this host, 127.0.0.1 when none is configured)."""
        trusted = self.trusted_proxies or (["127.0.0.1"] if local_proxy else [])
        if not trusted:
            return {"proxy_headers": False}
        return {"proxy_headers": True, "forwarded_allow_ips": ",".join(trusted)}

    def limits(self) -> Limits:
        """The engine limits every request is checked against."""
        return Limits(**{name: getattr(self, name) for name in Limits.model_fields})


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
    max_jobs_per_client: int = Field(
        10,
        ge=0,
        description="Jobs one client (API key or address) may have queued or running at once; "
        "one more gets 429 (0: no cap).",
    )
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
    checkpoint_seconds: float = Field(
        60.0,
        ge=0,
        description="A worker saves the state of the job it runs to the artifact store this "
        "often (and when it stops), so a job whose worker dies continues from there on any "
        "worker (0: never; such a job starts again from iteration 0).",
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
    db_deadline_seconds: float = Field(
        90.0,
        ge=0,
        description="A PostgreSQL call still waiting for its reply after this many seconds has "
        "its connection cut (a reply lost on the way would hang its worker); 0: no deadline.",
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="`text2art worker` serves /healthz, /readyz and /metrics on this port "
        "(none: no health server).",
    )
    final_scrape_seconds: float = Field(
        60.0,
        ge=0,
        description="A stopping worker whose /metrics is scraped waits, after handing its jobs "
        "back, for one more scrape (at most this long, and at most 1.5 scrape intervals), so "
        "the counts of its last moments (requeued for a shutdown) reach Prometheus (0: no wait).",
    )
    health_host: str = Field(
        "127.0.0.1",
        description="Address of the worker's health server and of `serve`'s metrics port "
        "(0.0.0.0: every one).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="`text2art serve` answers /metrics only on this port (bound to HEALTH_HOST), "
        "not on the public one (none: on the public port, behind the API key when keys are on).",
    )
    # -- links ---------------------------------------------------------------------------
    public_url: str | None = Field(
        None,
        description="The service's public URL, e.g. 'https://art.example.org': the base of "
        "every absolute link (Location, job links, e-mails, webhooks); e-mail needs it "
        "(default: none, links are relative, never taken from a request's Host header).",
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

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError("expected an http:// or https:// URL with a host and no user:pass@")
        return value.rstrip("/")

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


class ServiceConfig(JobsConfig, ApiConfig):
    """The configuration of a process that serves (`text2art serve`) or runs (`text2art worker`)
    jobs: the HTTP service's fields and the jobs'."""

    model_config = SettingsConfigDict(env_prefix="T2A_", extra="ignore")
