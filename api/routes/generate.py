"""`POST /generate`: the card's synchronous endpoint; the PNG comes back in the response."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ArtifactsDep, ConfigDep, GpuDep, ModelsDep, RequireApiKey
from api.errors import BODY_ERRORS
from api.forms import GenerateFormDep, build_settings
from api.gpu import GpuBusy
from api.runner import run_engine
from api.storage import MEDIA_TYPES, new_job_id
from engine import Result, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

DISCONNECT_POLL_SECONDS = 0.2
URL_HEADERS = {"png": "X-Image-Url", "mp4": "X-Video-Url", "svg": "X-Svg-Url"}
EXPOSED_HEADERS = ["X-Job-Id", "X-Seed", "X-Settings", "Link", *URL_HEADERS.values()]

router = APIRouter(tags=["generate"])


@router.post(
    "/generate",
    response_class=FileResponse,
    dependencies=[RequireApiKey],
    responses={
        200: {"content": {"image/png": {}}, "description": "The PNG, with its links in headers."},
        **BODY_ERRORS,
        401: {"description": "API keys are on and none (or a wrong one) was sent."},
        422: {"description": "A field is invalid; `detail[0].loc` names it."},
        499: {"description": "The client went away; the run was cancelled."},
        500: {"description": "The engine failed (e.g. GPU out of memory); JSON `error`."},
        503: {"description": "Too many requests wait for the GPU; see Retry-After."},
    },
)
async def generate_image(
    request: Request,
    form: GenerateFormDep,
    config: ConfigDep,
    gpu: GpuDep,
    models: ModelsDep,
    artifacts: ArtifactsDep,
) -> FileResponse:
    """Generate an image from a prompt and return it as a PNG."""
    if gpu.full():
        raise GpuBusy(gpu.waiting, gpu.max_waiting)
    job_id = new_job_id()
    settings = await build_settings(form, config, artifacts.upload_dir(job_id))
    video = artifacts.video_path(job_id) if settings.make_video else None
    limits = config.limits()

    def work(cancel: threading.Event) -> Result:
        return run_engine(
            settings, gpu=gpu, models=models, limits=limits, cancel=cancel, video_path=video
        )

    try:
        result = await run_until_disconnect(request, work)
    except BaseException:
        artifacts.delete(job_id)  # nothing was made: keep nothing
        raise
    exts = await run_in_threadpool(artifacts.save_result, result, job_id)
    log.info("job %s: %s in %.1f s", job_id, settings.style, result.elapsed)
    headers = result_headers(request, job_id, artifacts.public_settings(result.settings), exts)
    png = artifacts.path(job_id, "png")
    assert png is not None, "save_result always keeps a PNG"
    return FileResponse(png, media_type="image/png", headers=headers)


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
    request: Request, job_id: str, settings: Settings, exts: list[str]
) -> dict[str, str]:
    """X-Job-Id, X-Seed, X-Settings (JSON, without server paths) and the output links."""
    urls = {ext: str(request.url_for("output", job_id=job_id, ext=ext)) for ext in exts}
    headers = {
        "X-Job-Id": job_id,
        "X-Seed": str(settings.seed),
        "X-Settings": json.dumps(
            settings.to_json_dict(), sort_keys=True, ensure_ascii=True, allow_nan=False
        ),
        "Link": ", ".join(
            f'<{url}>; rel="alternate"; type="{MEDIA_TYPES[e]}"' for e, url in urls.items()
        ),
    }
    headers.update({URL_HEADERS[ext]: url for ext, url in urls.items()})
    return headers
