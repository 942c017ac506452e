"""Jobs: a durable queue (SQL records + huey), a worker, live progress, e-mail and webhooks.

Wiring into `api.app`: include `api.routes.jobs.router` and `api.routes.gallery.router`, and in
the lifespan (after `app.state.gpu` and `app.state.models` exist):

    app.state.jobs = await start_jobs(app)
    yield
    await stop_jobs(app)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from fastapi import FastAPI

    from api.jobs.service import JobService


async def start_jobs(app: FastAPI) -> JobService:
    """A started `JobService` sharing the app's GPU lock and model cache."""
    from api.jobs.config import service_config
    from api.jobs.service import JobService

    config = service_config(app.state.config)
    service = JobService(config, gpu=app.state.gpu, models=app.state.models)
    await run_in_threadpool(service.start)
    return service


async def stop_jobs(app: FastAPI) -> None:
    """Stop the app's job service (running jobs go back to the queue)."""
    service = getattr(app.state, "jobs", None)
    if service is not None:
        await run_in_threadpool(service.stop)
