"""`POST /generate`: the card's synchronous endpoint; the PNG comes back in the response."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.config import ApiConfig
from api.deps import ConfigDep, GpuDep, ModelsDep, RequireApiKey
from api.errors import engine_error
from api.forms import GenerateFormDep, build_settings
from api.gpu import GpuBusy, GpuLock
from api.routes.outputs import (
    MEDIA_TYPES,
    new_job_id,
    output_path,
    output_urls,
    public_settings,
    save_result,
    upload_dir,
)
from engine import Cancelled, ModelCache, Result, Settings, SettingsError, generate

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
        401: {"description": "API keys are on and none (or a wrong one) was sent."},
        422: {"description": "A field is invalid; `detail[0].loc` names it."},
        499: {"description": "The client went away; the run was cancelled."},
        500: {"description": "The engine failed (e.g. GPU out of memory); JSON `error`."},
        503: {"description": "Too many requests wait for the GPU; see Retry-After."},
    },
)
async def generate_image(
    request: Request, form: GenerateFormDep, config: ConfigDep, gpu: GpuDep, models: ModelsDep
) -> FileResponse:
    """Generate an image from a prompt and return it as a PNG."""
    if gpu.full():
        raise GpuBusy(gpu.waiting, gpu.max_waiting)
    job_id = new_job_id()
    uploads = upload_dir(config.output_dir, job_id)
    settings = await build_settings(form, config, uploads)
    video = output_path(config.output_dir, job_id, "mp4") if settings.make_video else None

    def work(cancel: threading.Event) -> Result:
        return run_generation(settings, gpu, models, config, cancel, video)

    try:
        result = await run_until_disconnect(request, work)
    except BaseException:
        shutil.rmtree(uploads, ignore_errors=True)  # nothing was made: keep nothing
        raise
    files = await run_in_threadpool(save_result, result, config.output_dir, job_id)
    log.info("job %s: %s in %.1f s", job_id, settings.style, result.elapsed)
    headers = result_headers(request, job_id, result.settings, config.output_dir, list(files))
    return FileResponse(files["png"], media_type="image/png", headers=headers)


def run_generation(
    settings: Settings,
    gpu: GpuLock,
    models: ModelCache,
    config: ApiConfig,
    cancel: threading.Event,
    video_path: Path | None = None,
) -> Result:
    """Run the engine under the GPU lock (in a worker thread); engine failures become 5xx."""
    with gpu.slot(cancel):
        try:
            return generate(
                settings,
                should_stop=cancel.is_set,
                models=models,
                limits=config.limits(),
                video_path=video_path,
            )
        except (Cancelled, SettingsError):
            raise
        except Exception as exc:
            log.exception("generation failed")
            raise engine_error(exc) from exc


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
    request: Request, job_id: str, settings: Settings, output_dir: Path, exts: list[str]
) -> dict[str, str]:
    """X-Job-Id, X-Seed, X-Settings (JSON) and the output links (Link and X-*-Url)."""
    urls = output_urls(request, job_id, exts)
    shown = public_settings(settings, output_dir).to_json_dict()
    headers = {
        "X-Job-Id": job_id,
        "X-Seed": str(settings.seed),
        "X-Settings": json.dumps(shown, sort_keys=True, ensure_ascii=True),
        "Link": ", ".join(
            f'<{url}>; rel="alternate"; type="{MEDIA_TYPES[e]}"' for e, url in urls.items()
        ),
    }
    headers.update({URL_HEADERS[ext]: url for ext, url in urls.items()})
    return headers
