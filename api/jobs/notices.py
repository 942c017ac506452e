"""What a finished job sends: the e-mail (with the result attached) and the webhook payload.

`JobNotices` composes both from the job's record and hands them to a `Notifier`, which delivers
them in the background and reports each delivery's state back into the record.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from api.config import ServiceConfig
from api.jobs.notify import (
    Notice,
    Notifier,
    build_email,
    check_email,
    check_webhook_url,
    post_webhook,
    send_email,
    webhook_request,
)
from api.jobs.schemas import JobPublic, iso, job_links
from api.jobs.store import FAILED, FINAL, SUCCEEDED, Job, JobStore
from api.storage import ArtifactStore, variation_keys
from engine.errors import SettingsError

HANDED_KEPT = 10_000  # notices remembered as sent (a retry comes within minutes)


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
    """E-mail and webhook of finished jobs; `view` gives the job's public JSON for the webhook."""

    def __init__(
        self,
        store: JobStore,
        config: ServiceConfig,
        artifacts: ArtifactStore,
        view: Callable[[Job, str], JobPublic],
    ):
        self.store, self.config, self.artifacts, self._view = store, config, artifacts, view
        self.notifier = Notifier(config.notify_attempts, config.notify_backoff, self._delivered)
        # (kind, job id) of the notices handed to the notifier, the newest HANDED_KEPT.
        self._handed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._guard = threading.Lock()

    def accept(self, email: str | None, webhook_url: str | None) -> tuple[str | None, str | None]:
        """The delivery addresses of a new job, checked: a 422 naming `email` (not an address,
        or this server has no SMTP server) or `webhook_url` (see `notify.check_webhook_url`)."""
        email = check_email(email)
        if email and not email_enabled(self.config):
            raise SettingsError("email", f"this server sends no e-mail ({email_off(self.config)})")
        return email, check_webhook_url(webhook_url, self.config.webhook_allow_private)

    def notify(self, job_id: str) -> None:
        """Send the e-mail and the webhook of a finished job in the background."""
        job = self.store.get(job_id)
        if job is None or job.status not in FINAL:
            return
        base = (self.config.public_url or job.base_url).rstrip("/")
        # A notice this process handed to the notifier is not sent again: a call retried after
        # a database blip sends each notice once.
        wants_email = email_enabled(self.config) and job.status in (SUCCEEDED, FAILED)
        if job.email and wants_email and self._first("email", job.id):
            self._email(job, job.email, base)
        if job.webhook_url and self._first("webhook", job.id):
            self._webhook(job, job.webhook_url, base)

    def _first(self, kind: str, job_id: str) -> bool:
        """Whether this notice of the job has not been handed to the notifier yet."""
        with self._guard:
            return (kind, job_id) not in self._handed

    def stop(self) -> None:
        """Abandon waiting retries (deliveries under way finish)."""
        self.notifier.stop()

    def _email(self, job: Job, to: str, base: str) -> None:
        self.store.set_fields(job.id, email_state="pending")
        config = self.config
        msg = build_email(
            self.notice(job, base), config.smtp_sender, to, config.email_max_attachment_bytes
        )
        self.notifier.submit("email", job.id, lambda: send_email(msg, config))
        self._handed_over("email", job.id)

    def _webhook(self, job: Job, url: str, base: str) -> None:
        self.store.set_fields(job.id, webhook_state="pending")
        payload: dict[str, Any] = {"event": "job.finished", "sent_at": iso(time.time())}
        payload["job"] = self._view(job, base).model_dump(mode="json")
        req = webhook_request(url, payload, self.config.webhook_secret)
        timeout, allow = self.config.webhook_timeout, self.config.webhook_allow_private
        self.notifier.submit("webhook", job.id, lambda: post_webhook(req, timeout, allow))
        self._handed_over("webhook", job.id)

    def _handed_over(self, kind: str, job_id: str) -> None:
        with self._guard:
            self._handed[(kind, job_id)] = None
            while len(self._handed) > HANDED_KEPT:
                self._handed.popitem(last=False)

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

    def _delivered(self, kind: str, job_id: str, state: str) -> None:
        self.store.set_fields(job_id, **{f"{kind}_state": state})
