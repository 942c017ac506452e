"""What a finished job sends: the e-mail (with the result attached) and the webhook payload.

`JobNotices` composes both from the job's record when the outbox sender (`api.jobs.outbox`)
delivers a row of `t2a_outbox`; the sender records each delivery's state in the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from api.config import ServiceConfig
from api.jobs.notify import (
    Notice,
    PermanentError,
    build_email,
    check_email,
    check_webhook_url,
    post_webhook,
    send_email,
    webhook_request,
)
from api.jobs.outbox_table import EMAIL, KINDS, WEBHOOK
from api.jobs.schemas import JobPublic, iso, job_links
from api.jobs.store import Job
from api.storage import ArtifactStore, variation_keys
from engine.errors import SettingsError


def attached_keys(outputs: list[str]) -> list[str]:
    """The kept outputs an e-mail attaches (each when small enough): the PNG, or each picture
    of a batch of variations instead of their contact sheet; then the video."""
    pictures = list(variation_keys(outputs).values())
    images = pictures or (["png"] if "png" in outputs else [])
    return images + (["mp4"] if "mp4" in outputs else [])


def email_enabled(config: ServiceConfig) -> bool:
    """Whether jobs may ask for an e-mail: an SMTP server, and T2A_PUBLIC_URL for its links
    (without it a link could only come from a client's Host header: anyone could make the
    operator's mail server send their links to any address)."""
    return bool(config.smtp_host and config.public_url)


def email_off(config: ServiceConfig) -> str:
    """Why e-mail is off (for a 422 and the start-up warning)."""
    if not config.smtp_host:
        return "no SMTP server is configured"
    return "T2A_SMTP_HOST is set but T2A_PUBLIC_URL is not: set it to the service's public URL"


class JobNotices:
    """E-mail and webhook of finished jobs, composed for the outbox sender (`api.jobs.outbox`);
    `view` gives the job's public JSON for the webhook."""

    def __init__(
        self, config: ServiceConfig, artifacts: ArtifactStore, view: Callable[[Job, str], JobPublic]
    ):
        self.config, self.artifacts, self._view = config, artifacts, view

    def accept(self, email: str | None, webhook_url: str | None) -> tuple[str | None, str | None]:
        """The delivery addresses of a new job, checked: a 422 naming `email` (not an address,
        or this server has no SMTP server) or `webhook_url` (see `notify.check_webhook_url`)."""
        email = check_email(email)
        if email and not email_enabled(self.config):
            raise SettingsError("email", f"this server sends no e-mail ({email_off(self.config)})")
        return email, check_webhook_url(webhook_url, self.config.webhook_allow_private)

    def kinds(self) -> tuple[str, ...]:
        """The notices this process can send: webhooks, and e-mail when it is configured (an
        e-mail row waits for a process that has SMTP)."""
        return KINDS if email_enabled(self.config) else (WEBHOOK,)

    def compose(self, job: Job, kind: str) -> Callable[[], None]:
        """The delivery of one notice of a finished job: calling it sends it once, or raises
        (`PermanentError`: no retry can help)."""
        base = (self.config.public_url or job.base_url).rstrip("/")
        if kind == EMAIL:
            return self._email(job, base)
        assert kind == WEBHOOK, kind
        return self._webhook(job, base)

    def _email(self, job: Job, base: str) -> Callable[[], None]:
        if not job.email:
            raise PermanentError("the job has no e-mail address")
        config = self.config
        msg = build_email(
            self.notice(job, base), config.smtp_sender, job.email, config.email_max_attachment_bytes
        )
        return lambda: send_email(msg, config)

    def _webhook(self, job: Job, base: str) -> Callable[[], None]:
        if not job.webhook_url:
            raise PermanentError("the job has no webhook URL")
        payload: dict[str, Any] = {"event": "job.finished", "sent_at": iso(time.time())}
        payload["job"] = self._view(job, base).model_dump(mode="json")
        delivery = f"{job.id}.{WEBHOOK}"  # the same on every try: a receiver's dedupe key
        req = webhook_request(job.webhook_url, payload, self.config.webhook_secret, delivery)
        timeout, allow = self.config.webhook_timeout, self.config.webhook_allow_private
        return lambda: post_webhook(req, timeout, allow)

    def notice(self, job: Job, base: str) -> Notice:
        """What the notification says: prompt, settings, links and the files to attach."""
        s = job.settings
        size = "x".join(str(v) for v in s.get("size") or [])
        summary = f"{s.get('style')}, {s.get('quality')}, {s.get('aspect')}, seed {s.get('seed')}"
        links = job_links(base, job)
        named: dict[str, str | None] = {"job": links.self}
        named["image"] = links.image  # check_rules: not-a-style (the link to the picture)
        named["video"] = links.video
        for picture in links.variations:
            named[f"picture {picture.index} (seed {picture.seed})"] = picture.image
        kept = attached_keys(job.outputs or [])
        return Notice(
            job_id=job.id,
            status=job.status,
            prompt=job.prompt,
            summary=f"{summary}, {size}, {s.get('iterations')} iterations",
            links={k: v for k, v in named.items() if v},
            error=job.error,
            files=self.artifacts.local_files(job.id, kept),
        )
