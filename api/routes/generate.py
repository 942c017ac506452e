"""`POST /generate`: the card's synchronous endpoint; the PNG comes back in the response.

A node that runs jobs (`text2art serve`, the default) runs it in-process under the GPU lock. An
API-only node (T2A_RUN_WORKER_IN_PROCESS=false) loads no models: it submits a job to the queue,
waits for a worker to end it (`api.jobs.waiting`) and answers the same way, PNG and headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.cost import estimate, max_cost, speeds_of, to_lower
from api.deps import (
    ArtifactsDep,
    ConfigDep,
    GpuDep,
    ModelsDep,
    RequireApiKey,
    base_url,
    submitter,
)
from api.errors import BODY_ERRORS, RunFailed
from api.forms import GenerateForm, GenerateFormDep, build_settings, form_settings, resolve_settings
from api.gpu import GpuBusy
from api.jobs.service import JobService
from api.jobs.store import CANCELLED, SUCCEEDED
from api.jobs.submission import submit_form
from api.jobs.waiting import ClientGone, wait_for_end
from api.runner import run_engine
from api.storage import MEDIA_TYPES, STEP_KEY, new_job_id, output_url, variation_keys
from engine import Result, Settings, picture_seed
from engine.errors import Cancelled

log = logging.getLogger(__name__)
T = TypeVar("T")

DISCONNECT_POLL_SECONDS = 0.2
URL_HEADERS = {"png": "X-Image-Url", "mp4": "X-Video-Url", "svg": "X-Svg-Url"}
VARIATION_HEADERS = ["X-Variation-Urls", "X-Variation-Seeds"]
EXPOSED_HEADERS = [
    "X-Job-Id", "X-Seed", "X-Settings", "Link", *URL_HEADERS.values(), *VARIATION_HEADERS,
]  # fmt: skip

router = APIRouter(tags=["generate"])


@router.post(
    "/generate",
    response_class=FileResponse,
    dependencies=[RequireApiKey],
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "The PNG, with its links in headers; with `variations` > 1 the "
            "contact sheet of every picture, each linked in X-Variation-Urls.",
        },
        **BODY_ERRORS,
        401: {"description": "API keys are on and none (or a wrong one) was sent."},
        422: {"description": "A field is invalid; `detail[0].loc` names it."},
        429: {"description": "Too many submissions from this client; see Retry-After."},
        499: {"description": "The client went away; the run was cancelled."},
        500: {"description": "The engine failed (e.g. GPU out of memory); JSON `error`."},
        503: {
            "description": "Too many requests wait for the GPU (or the queue is full, or the "
            "database or queue is down); see Retry-After. Or the server lacks the models' "
            "weights: JSON `error` weights_missing, its `detail` says the fix."
        },
    },
)
async def generate_image(
    request: Request,
    form: GenerateFormDep,
    config: ConfigDep,
    gpu: GpuDep,
    models: ModelsDep,
    artifacts: ArtifactsDep,
) -> Response:
    """Generate an image from a prompt and return it as a PNG.

    With `variations=N` the PNG is the contact sheet of N pictures from the seeds seed, seed+1,
    ...; `X-Variation-Urls` and `X-Variation-Seeds` list each picture and its seed (in order),
    and `Link` names each with `rel="item"`.
    """
    jobs: JobService | None = getattr(request.app.state, "jobs", None)
    if jobs is not None and not jobs.worker_running:  # an API-only node: a worker makes it
        return await generate_by_queue(request, form, jobs)
    if gpu.full():
        raise GpuBusy(gpu.waiting, gpu.max_waiting)
    if jobs is not None:  # the limits of a job, decided and recorded atomically
        await run_in_threadpool(jobs.admit, submitter(request, config).client_id)
    job_id = new_job_id()
    settings = await build_settings(form, config, artifacts.upload_dir(job_id))
    video = artifacts.video_path(job_id) if settings.wants_video else None
    limits = config.limits()

    def work(cancel: threading.Event) -> Result:
        return run_engine(
            settings, gpu=gpu, models=models, limits=limits, cancel=cancel, abort=cancel,
            video_path=video,
            on_save=lambda i, picture: artifacts.save_step(job_id, i, picture),  # save_every's
        )  # fmt: skip

    try:
        result = await run_until_disconnect(request, work)
    except BaseException:
        artifacts.delete(job_id)  # nothing was made: keep nothing
        raise
    keys = await run_in_threadpool(artifacts.save_result, result, job_id)
    keys += await run_in_threadpool(artifacts.steps, job_id)
    log.info("job %s: %s in %.1f s", job_id, settings.style, result.elapsed)
    headers = result_headers(request, job_id, artifacts.public_settings(result.settings), keys)
    png = artifacts.path(job_id, "png")
    assert png is not None, "save_result always keeps a PNG"
    return FileResponse(png, media_type="image/png", headers=headers)


class Estimate(BaseModel):
    """What a request would cost on this server (`api.cost`)."""

    estimate_seconds: float = Field(description="Estimated run time on this server, seconds.")
    max_cost: float = Field(description="The ceiling (T2A_MAX_COST), seconds.")
    allowed: bool = Field(description="Whether the estimate is within the ceiling.")
    lower: list[str] = Field(description="The fields that would lower it, costliest first.")


@router.post(
    "/estimate",
    responses={
        **BODY_ERRORS,
        422: {"description": "A field is invalid; `detail[0].loc` names it."},
    },
)
async def estimate_request(form: GenerateFormDep, config: ConfigDep) -> Estimate:
    """Estimate the run time of a `/generate` or `/jobs` form on this server before sending
    it (nothing runs; uploads are not read). Over `max_cost`, those routes answer 422."""
    settings = resolve_settings(form_settings(form, config), config, priced=False)
    speeds, _ = speeds_of(config.device)
    seconds, ceiling = estimate(settings, config.device), max_cost(config.max_cost, config.device)
    lower = to_lower(settings, speeds)
    return Estimate(estimate_seconds=seconds, max_cost=ceiling, allowed=seconds <= ceiling,
                    lower=lower)  # fmt: skip


async def run_until_disconnect(request: Request, work: Callable[[threading.Event], T]) -> T:
    """Run `work(cancel)` in the threadpool; set `cancel` if the client disconnects meanwhile."""
    cancel = threading.Event()
    task = asyncio.ensure_future(run_in_threadpool(work, cancel))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("client disconnected: cancelling its run")
                cancel.set()
    finally:
        cancel.set()  # also on server shutdown: the thread must not run on for nobody


def result_headers(
    request: Request, job_id: str, settings: Settings, keys: list[str]
) -> dict[str, str]:
    """X-Job-Id, X-Seed, X-Settings (JSON, without server paths) and the output links; with
    variations, X-Variation-Urls and X-Variation-Seeds (each picture's PNG and seed)."""
    base = base_url(request)

    def url(key: str) -> str:
        return output_url(base, job_id, key)

    main = {ext: url(ext) for ext in URL_HEADERS if ext in keys}
    links = [f'<{u}>; rel="alternate"; type="{MEDIA_TYPES[e]}"' for e, u in main.items()]
    headers = {
        "X-Job-Id": job_id,
        "X-Seed": str(settings.seed),
        "X-Settings": json.dumps(
            settings.to_json_dict(), sort_keys=True, ensure_ascii=True, allow_nan=False
        ),
    }
    headers.update({URL_HEADERS[ext]: u for ext, u in main.items()})
    pictures = variation_keys(keys)
    if pictures and settings.seed is not None:
        seeds = [picture_seed(settings.seed, i) for i in pictures]
        urls = [url(key) for key in pictures.values()]
        headers["X-Variation-Urls"] = ", ".join(urls)
        headers["X-Variation-Seeds"] = ", ".join(map(str, seeds))
        links += [
            f'<{u}>; rel="item"; type="image/png"; title="seed {seed}"'
            for u, seed in zip(urls, seeds, strict=True)
        ]
    steps = [url(key) for key in keys if STEP_KEY.fullmatch(key)]
    if steps:  # save_every: the picture every few iterations, in order
        headers["X-Step-Urls"] = ", ".join(steps)
    headers["Link"] = ", ".join(links)
    return headers


async def generate_by_queue(request: Request, form: GenerateForm, jobs: JobService) -> Response:
    """Submit the request as a job, wait for a worker to end it, answer with its PNG."""
    job, _ = await submit_form(jobs, form, submitter(request, jobs.config), needs_worker=True)
    try:
        ended = await wait_for_end(
            lambda: jobs.get(job.id),
            lambda: jobs.cancel_by_id(job.id),
            request.is_disconnected,
        )
    except ClientGone as exc:
        raise Cancelled(str(exc)) from None
    if ended is None or ended.status == CANCELLED:
        raise Cancelled(f"job {job.id} was cancelled or deleted before it ended")
    if ended.status != SUCCEEDED:
        raise RunFailed("job_failed", ended.error or "the job failed", 500)
    png = await run_in_threadpool(jobs.artifacts.read, job.id, "png")
    if png is None:
        raise RunFailed("missing_output", f"job {job.id} succeeded but its PNG is missing", 500)
    public = jobs.artifacts.public_settings(Settings.model_validate(ended.settings))
    headers = result_headers(request, job.id, public, list(ended.outputs))
    return Response(png, media_type="image/png", headers=headers)
