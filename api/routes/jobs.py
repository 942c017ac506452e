"""The jobs API: submit (`POST /jobs`), follow (`GET /jobs/{id}`, `/events`, `/preview.png`),
cancel and delete. A job runs in the background; its result can be e-mailed and posted to a
webhook, and public results appear in the gallery.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Depends, Form, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import JobsDep, RequireApiKey, matched_key
from api.errors import BODY_ERRORS
from api.forms import GenerateForm, GenerateFormDep, build_settings
from api.jobs.errors import QueueFull, RateLimited, TooManyListeners
from api.jobs.notify import public_ip
from api.jobs.schemas import JobCreated, JobPublic, job_links
from api.jobs.service import JobService
from api.jobs.store import FINAL, Job, token_matches
from api.storage import new_job_id
from engine import Settings
from engine.errors import SettingsError

router = APIRouter(tags=["jobs"])

MAX_URL_CHARS = 2000
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job (or it was deleted)."}
}
_TOKEN: dict[int | str, dict[str, Any]] = {
    401: {"description": "No delete_token was sent."},
    403: {"description": "The delete_token is wrong."},
}


@dataclass
class JobForm:
    """The card's form plus how to deliver the result."""

    base: GenerateForm
    email: str | None
    public: bool
    webhook_url: str | None


def check_email(value: str | None) -> str | None:
    """The normalised address, None when empty; 422 naming `email` when invalid."""
    if value is None or not value.strip():
        return None
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SettingsError("email", f"not a valid e-mail address: {exc}") from None
    # An internationalised domain goes out in its ASCII form (any server takes it); only a
    # non-ASCII local part needs a server that offers SMTPUTF8.
    return checked.ascii_email or checked.normalized


def check_webhook_url(value: str | None, allow_private: bool = True) -> str | None:
    """An http(s) URL with a host, None when empty; 422 naming `webhook_url` otherwise."""
    if value is None or not value.strip():
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
        scheme, host, _ = parts.scheme, parts.hostname, parts.port  # ValueError when malformed
    except ValueError:
        scheme, host = "", None
    if len(url) > MAX_URL_CHARS or scheme not in ("http", "https") or not host:
        raise SettingsError(
            "webhook_url", f"expected an http:// or https:// URL of at most {MAX_URL_CHARS} chars"
        )
    if not allow_private and not public_host(host):
        raise SettingsError(
            "webhook_url", "webhooks to loopback, private or local addresses are not allowed"
        )
    return url


def public_host(host: str) -> bool:
    """False for every spelling of a non-public address (checked again when it is resolved)."""
    host = host.rstrip(".").lower()
    try:
        return public_ip(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost") or "." not in host:
        return False  # a single label resolves only on a local network (or is a number)
    try:  # the legacy forms getaddrinfo also reads: 127.1, 0x7f.0.0.1, 0177.0.0.1
        return public_ip(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        return True  # a name: checked again when it is resolved at delivery


async def job_form(
    base: GenerateFormDep,
    email: Annotated[
        str | None,
        Form(description="E-mail the result (PNG, and MP4 with make_video) to this address.",
             examples=["ada@example.org"]),
    ] = None,
    public: Annotated[
        bool, Form(description="Show the result in the public gallery.", examples=[False])
    ] = False,
    webhook_url: Annotated[
        str | None,
        Form(description="POST the finished job as JSON to this URL (signed when the server "
             "has a webhook secret).", examples=["https://example.org/hooks/text2art"]),
    ] = None,
) -> JobForm:  # fmt: skip
    """The generation form plus e-mail, public and webhook_url."""
    return JobForm(base, check_email(email), public, webhook_url)


JobFormDep = Annotated[JobForm, Depends(job_form)]


def client_id(request: Request, api_keys: list[str]) -> str:
    """Whom the rate limit counts: the API key that matched when keys are on, else the client's
    address (taken from X-Forwarded-For only when the peer is one of T2A_TRUSTED_PROXIES).
    Only a hash is stored.
    """
    key = matched_key(request.headers.get("authorization"), api_keys) if api_keys else None
    who = f"key:{key}" if key else f"ip:{request.client.host if request.client else ''}"
    return hashlib.sha256(who.encode()).hexdigest()[:32]


def base_url(request: Request) -> str:
    """The URL this service was reached at, without a trailing slash."""
    return str(request.base_url).rstrip("/")


async def find_job(jobs: JobsDep, job_id: str) -> Job:
    """The job, or 404."""
    job = await run_in_threadpool(jobs.get, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


JobDep = Annotated[Job, Depends(find_job)]


def require_token(
    job: JobDep,
    x_delete_token: Annotated[
        str | None, Header(description="The delete_token given when the job was submitted.")
    ] = None,
    delete_token: Annotated[
        str | None, Query(description="The delete_token (instead of the X-Delete-Token header).")
    ] = None,
) -> Job:
    """The job, if the request carries its delete_token (401 without one, 403 when wrong)."""
    token = x_delete_token or delete_token
    if not token:
        raise HTTPException(
            401, "this needs the job's delete_token: send the X-Delete-Token header or "
            "the delete_token query parameter",
        )  # fmt: skip
    if not token_matches(token, job):
        raise HTTPException(403, "wrong delete_token for this job")
    return job


OwnedJobDep = Annotated[Job, Depends(require_token)]


@router.post(
    "/jobs",
    status_code=202,
    dependencies=[RequireApiKey],
    responses={
        **BODY_ERRORS,
        401: {"description": "API keys are on and none (or a wrong one) was sent."},
        422: {"description": "A field is invalid; `detail[0].loc` names it."},
        429: {"description": "Too many submissions from this client; see Retry-After."},
        503: {
            "description": "The queue is full, or the database or queue is down (JSON "
            "`service`); see Retry-After."
        },
    },
)
async def submit_job(
    request: Request, response: Response, form: JobFormDep, jobs: JobsDep
) -> JobCreated:
    """Queue a generation; follow it at /jobs/{id} or /jobs/{id}/events."""
    config = jobs.config
    if form.email and not config.smtp_host:
        raise SettingsError("email", "this server sends no e-mail (no SMTP server is configured)")
    form.webhook_url = check_webhook_url(form.webhook_url, config.webhook_allow_private)
    client = client_id(request, config.api_keys)
    try:
        await run_in_threadpool(jobs.admit, client)
        job_id = new_job_id()
        settings = await build_settings(form.base, config, jobs.artifacts.upload_dir(job_id))
        job, token = await run_in_threadpool(_record, jobs, form, settings, job_id, client, request)
    except (QueueFull, RateLimited) as exc:
        raise retry_later(exc) from None
    links = job_links(base_url(request), job)
    response.headers["Location"] = links.self
    position = await run_in_threadpool(jobs.position, job)
    return JobCreated(
        id=job.id, status=job.status, position=position, links=links, delete_token=token
    )


def _record(
    jobs: JobService, form: JobForm, settings: Settings, job_id: str, client: str, request: Request
) -> tuple[Job, str]:
    """Store and enqueue the job (in a worker thread)."""
    return jobs.submit(
        job_id,
        settings,
        form.base.given,
        client_id=client,
        base_url=base_url(request),
        email=form.email,
        public=form.public,
        webhook_url=form.webhook_url,
    )


def retry_later(exc: QueueFull | RateLimited | TooManyListeners) -> HTTPException:
    """The refusal as HTTP with Retry-After: 503 for a full queue (the server's state), 429 for
    a client over its limits."""
    status = 503 if isinstance(exc, QueueFull) else 429
    return HTTPException(status, str(exc), headers={"Retry-After": str(exc.retry_after)})


@router.get("/jobs/{job_id}", responses=_NOT_FOUND)
async def get_job(request: Request, job: JobDep, jobs: JobsDep) -> JobPublic:
    """Status, queue position, progress, ETA, error, resolved settings and links of a job."""
    return await run_in_threadpool(jobs.view, job, base_url(request))


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."},
        204: {"description": "The job is over and the client has its final state."},
        429: {"description": "This client holds too many open event streams."},
        **_NOT_FOUND,
    },
)
async def job_events(
    request: Request,
    job: JobDep,
    jobs: JobsDep,
    last_event_id: Annotated[
        int | None,
        Header(description="Sent by EventSource on reconnection: resume after this event."),
    ] = None,
    after: Annotated[
        int | None, Query(description="Like Last-Event-ID, for clients that cannot set headers.")
    ] = None,
) -> Response:
    """Live events: `status`, `position`, `progress`, `preview`; ends after the final status."""
    last = last_event_id if last_event_id is not None else after
    if last is not None and job.status in FINAL and job.version <= last:
        return Response(status_code=204)  # EventSource stops reconnecting on 204
    client = request.client.host if request.client else ""
    if jobs.feeds.listening(client) >= jobs.config.max_listeners_per_client:
        raise retry_later(TooManyListeners(jobs.config.max_listeners_per_client))
    stream = jobs.events(job.id, base_url(request), last, client)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.get(
    "/jobs/{job_id}/preview.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_NOT_FOUND},
)
async def job_preview(job: JobDep, jobs: JobsDep) -> Response:
    """The latest intermediate image of a job (the final image once it succeeded)."""
    # Read whole: the worker replaces the preview while it runs and removes it at the end, so a
    # streamed file could change length under the response.
    data = await run_in_threadpool(jobs.preview, job)
    if data is None:
        raise HTTPException(404, f"job {job.id} has no preview yet")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post(
    "/jobs/{job_id}/cancel",
    responses={
        202: {"description": "The running job was asked to stop and has not stopped yet."},
        409: {"description": "The job is already over."},
        **_NOT_FOUND,
        **_TOKEN,
    },
)
async def cancel_job(
    request: Request, response: Response, job: OwnedJobDep, jobs: JobsDep
) -> JobPublic:
    """Cancel a job: a queued one never starts, a running one stops within an iteration."""
    if job.status in FINAL:
        raise HTTPException(409, f"job {job.id} is already {job.status}")
    job = await run_in_threadpool(jobs.cancel, job)
    if job.status not in FINAL:
        response.status_code = 202
    return await run_in_threadpool(jobs.view, job, base_url(request))


@router.delete("/jobs/{job_id}", status_code=204, responses={**_NOT_FOUND, **_TOKEN})
async def delete_job(job: OwnedJobDep, jobs: JobsDep) -> Response:
    """Delete a job and its files (a running job is stopped first)."""
    await run_in_threadpool(jobs.delete, job)
    return Response(status_code=204)
