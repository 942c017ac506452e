"""The jobs API: submit (`POST /jobs`), follow (`GET /jobs/{id}`, `/events`, `/preview.png`),
cancel and delete. A job runs in the background; its result can be e-mailed and posted to a
webhook, and public results appear in the gallery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Form, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import JobsDep, RequireApiKey, base_url, peer, submitter
from api.errors import BODY_ERRORS
from api.forms import GenerateForm, GenerateFormDep
from api.jobs.errors import TooManyListeners
from api.jobs.schemas import JobCreated, JobPublic, job_links
from api.jobs.service import JobService
from api.jobs.store import FINAL, RUNNING, Job, token_matches
from api.jobs.submission import Delivery, submit_form

router = APIRouter(tags=["jobs"])

CANCEL_WAIT_SECONDS = 5.0  # POST /cancel waits this long for a running job to stop
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
    """The generation form plus e-mail, public and webhook_url (checked when submitted)."""
    return JobForm(base, email, public, webhook_url)


JobFormDep = Annotated[JobForm, Depends(job_form)]


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
    email, webhook_url = jobs.notices.accept(form.email, form.webhook_url)
    delivery = Delivery(email, form.public, webhook_url)
    job, token = await submit_form(jobs, form.base, submitter(request, jobs.config), delivery)
    links = job_links(base_url(request), job)
    response.headers["Location"] = links.self
    position = await run_in_threadpool(jobs.position, job)
    return JobCreated(
        id=job.id, status=job.status, position=position, links=links, delete_token=token
    )


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
    client = peer(request)  # every spelling of one address is one client
    if jobs.feeds.listening(client) >= jobs.config.max_listeners_per_client:
        raise TooManyListeners(jobs.config.max_listeners_per_client)
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
    job = await _stopped(jobs, job)
    if job.status not in FINAL:
        response.status_code = 202
    return await run_in_threadpool(jobs.view, job, base_url(request))


async def _stopped(jobs: JobService, job: Job) -> Job:
    """The job once its worker stopped it, or as it is after CANCEL_WAIT_SECONDS (polled from
    the event loop: no thread is held while the worker finishes its iteration)."""
    deadline = anyio.current_time() + CANCEL_WAIT_SECONDS
    while job.status == RUNNING and anyio.current_time() < deadline:
        await anyio.sleep(0.05)
        now = await run_in_threadpool(jobs.get, job.id)
        if now is None:  # deleted meanwhile
            break
        job = now
    return job


@router.delete("/jobs/{job_id}", status_code=204, responses={**_NOT_FOUND, **_TOKEN})
async def delete_job(job: OwnedJobDep, jobs: JobsDep) -> Response:
    """Delete a job and its files (a running job is stopped first)."""
    await run_in_threadpool(jobs.delete, job)
    return Response(status_code=204)
