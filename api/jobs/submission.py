"""Submitting a job: the one sequence `POST /jobs` and an API-only node's `POST /generate` share.

    the form's fields checked (a bad field is a 422 before anything else; no upload read yet)
    -> a first look at admission (the queue's bound, the client's rate and share; an API-only
       /generate also needs a live worker), so a refused request stores nothing
    -> the form's uploads stored and its settings resolved (once: the job keeps them resolved)
    -> admitted and recorded in one transaction (`api.jobs.admission`), then enqueued
    -> on any failure on the way, what was stored for it is removed.

Refusals are raised as the `api.jobs.errors` kinds, which the app answers with their status and
Retry-After; bad fields as `engine.SettingsError` (422).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from starlette.concurrency import run_in_threadpool

from api.forms import GenerateForm, form_settings, with_uploads
from api.jobs.errors import NoWorker
from api.jobs.service import JobService
from api.jobs.store import Job
from api.storage import new_job_id


@dataclass(frozen=True)
class Delivery:
    """Where the result goes besides its links: checked addresses (`JobNotices.accept`)."""

    email: str | None = None
    public: bool = False
    webhook_url: str | None = None


@dataclass(frozen=True)
class Submitter:
    """Who submits and where they reached the service (rate limits and links)."""

    client_id: str
    base_url: str


async def submit_form(
    jobs: JobService,
    form: GenerateForm,
    who: Submitter,
    delivery: Delivery = Delivery(),
    *,
    needs_worker: bool = False,
) -> tuple[Job, str]:
    """Check, admit, store the uploads, resolve, record and enqueue; returns the job and its
    delete token. `needs_worker`: the caller waits for the result, so refuse when no worker is
    alive."""
    settings = form_settings(form, jobs.config)
    # A refusal now stores nothing; `jobs.submit` decides again, atomically, as it records.
    await run_in_threadpool(jobs.check_admission, who.client_id)
    if needs_worker and not jobs.probe.check().live_workers:
        raise NoWorker()
    job_id = new_job_id()
    submit = partial(jobs.submit, client_id=who.client_id, base_url=who.base_url,
                     email=delivery.email, public=delivery.public,
                     webhook_url=delivery.webhook_url)  # fmt: skip
    try:
        upload_dir = jobs.artifacts.upload_dir(job_id)
        resolved = await with_uploads(settings, form, jobs.config, upload_dir)
        return await run_in_threadpool(submit, job_id, resolved, form.given)
    except BaseException:
        await run_in_threadpool(jobs.artifacts.delete, job_id)  # its uploads, if any
        raise
